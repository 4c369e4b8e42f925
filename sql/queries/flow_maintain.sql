-- The leader's flow-control pass (flow_maintain in 007_flow_control.sql): expire jobs past
-- their expires_at, refresh the depth estimate of queues with max_depth, forget idle rate
-- logs and freed slots. Returns the ids of the jobs it expired.
SELECT expired FROM {schema}.flow_maintain()
