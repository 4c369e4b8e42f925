-- The leader's flow-control pass (flow_maintain in 012_flow_control.sql): expire jobs past
-- their expires_at, refresh the depth estimate of queues with max_depth, forget idle rate
-- logs and freed slots. Rows: the ids of the jobs it expired (NULL: none, but there is work
-- for these passes); no row: nothing needs them.
SELECT expired, busy FROM {schema}.flow_maintain()
