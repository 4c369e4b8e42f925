-- Whether this schema has its migrations table: asked of the catalog, so that inside a
-- caller's transaction a missing schema never aborts it with an undefined-table error.
SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables
                WHERE schemaname = %(schema)s AND tablename = 'migrations')
