"""The pure core: decisions and plans with no I/O (no psycopg, no asyncio, no sockets).

Everything here is unit-tested without a database; the driver seam (`pgqueue._db`) runs the
plans, the runtime (`pgqueue._runtime`) acts on the decisions.
"""
