-- The database's clock: all times are the database's.
SELECT now()
