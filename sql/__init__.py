"""pgqueue SQL: numbered migrations here, named queries in queries/ (data, not code)."""
