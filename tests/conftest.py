"""Fixtures: every integration test gets its own database, cloned from a migrated template.

The server is $PGQUEUE_TEST_DSN when set, else a throwaway cluster started for this run.
Cloning a template is much faster than migrating per test and isolates tests completely.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from psycopg import conninfo, sql

import pgqueue

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pgbouncer import PgBouncer, find_pgbouncer  # noqa: E402
from tests.pgcluster import start_cluster  # noqa: E402


def _with_db(dsn: str, dbname: str) -> str:
    """The same server, another database, as a URL (which SQLAlchemy accepts too)."""
    params = conninfo.conninfo_to_dict(dsn)
    user = quote(str(params.get("user") or "postgres"))
    password = f":{quote(str(params['password']))}" if params.get("password") else ""
    host = str(params.get("host") or "")
    port = f":{params['port']}" if params.get("port") else ""
    if host.startswith("/"):  # a socket directory goes in the query string
        sock_port = params.get("port") or 5432
        return f"postgresql://{user}{password}@/{dbname}?host={quote(host)}&port={sock_port}"
    return f"postgresql://{user}{password}@{host or 'localhost'}{port}/{dbname}"


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """A DSN to a database where we may CREATE DATABASE."""
    env = os.environ.get("PGQUEUE_TEST_DSN")
    if env:
        yield env
        return
    cluster = start_cluster()
    try:
        yield cluster.dsn
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def template_db(server_dsn: str) -> Iterator[str]:
    name = f"pgqueue_tpl_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    pgqueue.App(_with_db(server_dsn, name)).migrate()
    yield name
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _fresh_db(server_dsn: str, template: str | None) -> Iterator[str]:
    name = f"pgqueue_t_{uuid.uuid4().hex[:10]}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(template))
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(create)
    try:
        yield _with_db(server_dsn, name)
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A migrated database of this test's own."""
    yield from _fresh_db(server_dsn, template_db)


@pytest.fixture
def empty_dsn(server_dsn: str) -> Iterator[str]:
    """A database with no pgqueue schema at all."""
    yield from _fresh_db(server_dsn, None)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Undo what an in-process `pgqueue worker` (CliRunner) does to logging: it replaces the
    root's handlers with one writing to that invocation's stderr, which is closed when the
    invocation ends. Left in place, every later test's log line fails to print, and the
    failure's traceback lands in whatever stream a later CliRunner is capturing."""
    root, ours = logging.getLogger(), logging.getLogger("pgqueue")
    handlers, level, our_level = root.handlers[:], root.level, ours.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    ours.setLevel(our_level)


@pytest.fixture
def app(dsn: str) -> Iterator[pgqueue.App]:
    application = pgqueue.App(dsn)
    yield application
    application.close()


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection for assertions."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def pgbouncer(server_dsn: str) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode in front of the test server, for this run.

    `pgbouncer.dsn_for(dsn)` (or `.dsn(dbname)`) reaches a test's own database through it.
    Without a pgbouncer binary this fails in CI ($CI set: .ci/run installs it) and skips
    elsewhere.
    """
    if find_pgbouncer() is None:
        reason = (
            "pgbouncer is not installed (not in PATH nor /usr/sbin); "
            "install it with `apt-get install -y --no-install-recommends pgbouncer`"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (.ci/run should have installed it)", pytrace=False)
        pytest.skip(reason)
    bouncer = PgBouncer(server_dsn)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
