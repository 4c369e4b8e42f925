-- Whether the jobs table's planner statistics are stale enough to refresh by hand: never
-- analyzed, or changed by more than a tenth (and 1,000 rows) since. Autovacuum normally does
-- this; where it is off, or has not come round yet, a claim planned on no statistics sorts
-- the whole backlog on every call.
SELECT coalesce(s.last_analyze, s.last_autoanalyze) IS NULL
       OR s.n_mod_since_analyze > 1000 + 0.1 * greatest(c.reltuples, 0)
  FROM pg_stat_user_tables AS s
  JOIN pg_class AS c ON c.oid = s.relid
 WHERE s.relid = to_regclass(%(table)s)
