-- 002: leadership for maintenance (rescue of jobs whose worker died).
--
-- Leadership is a row with an expiry rather than an advisory lock: it survives connection
-- poolers in transaction mode (no session state), and a leader that dies without resigning
-- is replaced as soon as its lease expires.
CREATE TABLE leaders (
    name        text PRIMARY KEY,
    worker_id   uuid NOT NULL,
    elected_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Rescue looks workers up by heartbeat age.
CREATE INDEX workers_heartbeat_idx ON workers (heartbeat_at) WHERE stopped_at IS NULL;
