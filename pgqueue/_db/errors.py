"""Database errors under driver-neutral names, so the runtime and the CLI can catch them
without importing the driver (the seam stays the only importer of psycopg)."""

from __future__ import annotations

import psycopg
import psycopg_pool

#: Anything the database or the connection raised.
DatabaseError = psycopg.Error
#: The connection failed or broke (server down, network cut, backend terminated).
ConnectionFailed = psycopg.OperationalError
#: The role may not do this (ANALYZE on a table it does not own).
PermissionDenied = psycopg.errors.InsufficientPrivilege
#: A pool could not hand out a connection in time.
PoolTimeout = psycopg_pool.PoolTimeout

__all__ = ["ConnectionFailed", "DatabaseError", "PermissionDenied", "PoolTimeout"]
