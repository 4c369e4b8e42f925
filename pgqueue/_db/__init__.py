"""The driver seam: the only package that imports psycopg or SQLAlchemy.

Everything above it (the client, the runtime, the CLI) talks to PostgreSQL through what this
package exports: named queries, plan drivers, pools and connections, the claim statement,
migrations, and the database errors it re-exports under driver-neutral names.
"""
