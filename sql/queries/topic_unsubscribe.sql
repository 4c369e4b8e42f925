-- Remove one subscription; jobs it already received stay.
DELETE FROM {schema}.topic_subscriptions
 WHERE pattern = %(pattern)s::text AND task = %(task)s::text
RETURNING pattern
