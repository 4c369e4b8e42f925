"""A connection per task thread for the test apps' ledgers, outside pgqueue's own pools: a
ledger written through pgqueue could not check pgqueue."""

from __future__ import annotations

import threading

import psycopg

_local = threading.local()


def ledger_conn(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = psycopg.connect(dsn, autocommit=True)
        _local.conn = conn
    return conn


def forget() -> None:
    """Drop this thread's connection (it died with a server restart)."""
    _local.conn = None
