-- Wake the leader's scheduler: this worker just declared schedules (delivered at commit).
SELECT pg_notify({schema}.notify_channel(), '#schedules')
