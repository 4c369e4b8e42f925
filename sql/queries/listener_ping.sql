-- A worker's self-ping on its own jobs channel: if its listener does not hear it by the next
-- check, the LISTEN connection is presumed half-open and rebuilt. '#' cannot start a queue
-- name, so no worker mistakes a ping for a wake-up.
SELECT pg_notify({schema}.notify_channel(), %(ping)s)
