-- Where the jobs a parent gathers stand (`ctx.gather`), as one row: how many have not ended,
-- the first one asked for that no longer exists, the first that ended without completing
-- ([id, state, last error]), and every result as one JSON array in the order asked for
-- (repeats included). One value for the driver to adapt instead of a row with two jsonb
-- columns per child: at 3,000 children, adapting those rows cost the resumed parent about
-- four times the query's own execution (benchmarks/README.md).
--
-- The children are read by primary key (`= ANY`, bounded by the array), materialized so the
-- planner cannot turn the ordinality join that restores the caller's order into a scan of
-- the table; the firsts are found by ordinality among the (usually no) rows they filter.
WITH found AS MATERIALIZED (
    SELECT j.id, j.state, j.result, j.errors
      FROM {schema}.jobs AS j
     WHERE j.id = ANY (%(ids)s::bigint[])
)
SELECT count(*) FILTER (WHERE f.state NOT IN ('completed', 'failed', 'cancelled')) AS pending,
       (array_agg(a.id ORDER BY a.ord) FILTER (WHERE f.id IS NULL))[1] AS missing,
       (array_agg(jsonb_build_array(f.id, f.state, f.errors -> -1) ORDER BY a.ord)
            FILTER (WHERE f.state IN ('failed', 'cancelled')))[1] AS failed,
       json_agg(f.result ORDER BY a.ord) AS results
  FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS a(id, ord)
  LEFT JOIN found AS f ON f.id = a.id
