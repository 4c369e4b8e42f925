"""A real PgBouncer in transaction mode, in front of the test server, owned by the test run.

Transaction mode is what breaks session state: every transaction (every statement, in
autocommit) may run on another server connection, so a prepared statement, a LISTEN, a SET
or a session advisory lock made through it ends up on a server connection that other
clients get next. The bouncer runs from its own temporary directory (ini, auth file,
logfile, pidfile), listens on a free port of 127.0.0.1 only, trusts its clients, and
forwards every database name (`* = ...`) to the test server, so each test's own database is
reachable through it as it is directly.

PgBouncer refuses to run as root ("PgBouncer should not run as root"); as root it is
started with `-u USER` and its directory is handed to that user: the owner of the server's
socket directory for a server on a unix socket, else the `postgres` system user that the
server packages create (as tests/pgcluster.py does), else `nobody`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import conninfo

#: What the pool for each (database, user) pair may open on the server. The check of the
#: server connections' session state (`server_sessions`) relies on holding
#: this many transactions at once, so there is no reserve pool on top of it.
POOL_SIZE = 10


#: Parameters pgbouncer itself tracks per client and sets on the server connection it hands
#: out (with a SET, so they show as session settings): not leaks from an earlier client.
BOUNCER_MANAGED_SETTINGS = (
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "standard_conforming_strings",
    "IntervalStyle",
)


@dataclass
class ServerSession:
    """One server connection of the bouncer's pool, as the next client finds it."""

    pid: int
    prepared: list[tuple[str, str]]  # (name, statement) from pg_prepared_statements
    channels: list[str]  # pg_listening_channels()
    settings: dict[str, str]  # session-level settings pgbouncer does not manage


def find_pgbouncer() -> str | None:
    found = shutil.which("pgbouncer")
    if found:
        return found
    for candidate in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def pgbouncer_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out.stdout + out.stderr)
    if not match:
        raise RuntimeError(f"cannot read the version of {binary}: {out.stdout!r} {out.stderr!r}")
    return tuple(int(part) for part in match.groups(default="0"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _quote_ini(value: str) -> str:
    """A libpq-style value for a [databases] line: quoted, with ' and \\ escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _run_as_user(server_host: str) -> str | None:
    """The user pgbouncer switches to when we are root (it refuses to run as root).

    For a server on a unix socket, the owner of the socket's directory (the server's own
    user, who can reach it whatever the permissions of the directories around it), else
    `postgres`, else `nobody`.
    """
    if os.geteuid() != 0:
        return None
    if server_host.startswith("/"):
        with contextlib.suppress(OSError, KeyError):
            owner = os.stat(server_host).st_uid
            if owner != 0:
                return pwd.getpwuid(owner).pw_name
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a `postgres` nor a `nobody` user exists")


class PgBouncer:
    """One pgbouncer process in transaction mode; `dsn(dbname)` reaches a database through it.

    The target server is read from a live connection to `server_dsn` (libpq's resolved host,
    port, user and password), so a DSN with defaults, a unix socket directory or a TCP
    address all work.
    """

    def __init__(self, server_dsn: str, binary: str | None = None) -> None:
        found = binary or find_pgbouncer()
        if found is None:
            raise FileNotFoundError("pgbouncer is not installed (not in PATH nor /usr/sbin)")
        self.binary = found
        self.version = pgbouncer_version(self.binary)
        self.server_dsn = server_dsn
        with psycopg.connect(server_dsn, connect_timeout=10) as conn:
            info = conn.info
            self.server_host = info.host
            self.server_port = info.port
            self.user = info.user
            self.password = info.password or ""
            self.server_dbname = info.dbname
        self.base = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
        self.ini = self.base / "pgbouncer.ini"
        self.logfile = self.base / "pgbouncer.log"
        self.pidfile = self.base / "pgbouncer.pid"
        self.auth_file = self.base / "userlist.txt"
        self.run_as = _run_as_user(self.server_host)
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    # --- configuration --------------------------------------------------------------------

    def _write_config(self) -> None:
        target = f"host={_quote_ini(self.server_host)} port={self.server_port}"
        # Clients are trusted; the auth file lists the one user (trust still needs the name
        # there) with the server's password, which pgbouncer then uses to log in upstream.
        password = self.password.replace('"', '""')
        user = self.user.replace('"', '""')
        self.auth_file.write_text(f'"{user}" "{password}"\n')
        lines = [
            "[databases]",
            f"* = {target}",
            "",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {self.auth_file}",
            f"logfile = {self.logfile}",
            f"pidfile = {self.pidfile}",
            f"admin_users = {self.user}",
            f"stats_users = {self.user}",
            "pool_mode = transaction",
            f"default_pool_size = {POOL_SIZE}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            "max_client_conn = 1000",
            "max_db_connections = 0",
            # The default: transaction mode never resets a server connection between
            # clients, which is exactly what exposes session state. Said out loud here.
            "server_reset_query_always = 0",
            "ignore_startup_parameters = extra_float_digits",
            "log_connections = 0",
            "log_disconnections = 0",
        ]
        if self.version >= (1, 21):
            # Newer pgbouncers can track protocol-level prepared statements themselves;
            # 0 keeps the behaviour of most deployed poolers (and of 1.18, Debian 12's),
            # which is the case pgqueue must handle.
            lines.append("max_prepared_statements = 0")
        self.ini.write_text("\n".join(lines) + "\n")
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            for path in (self.base, self.ini, self.auth_file):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            self.base.chmod(0o700)
            self.auth_file.chmod(0o600)

    # --- lifetime -------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> PgBouncer:
        last_error = ""
        for _attempt in range(3):
            self.port = _free_port()
            self._write_config()
            cmd = [self.binary]
            if self.run_as is not None:
                cmd += ["-u", self.run_as]
            cmd.append(str(self.ini))
            # In the foreground (no -d): it is our child, so it dies with this run. Its
            # own log goes to the logfile; stdout/stderr (startup errors) to a file too.
            stderr_path = self.base / "stderr.txt"
            with open(stderr_path, "wb") as err:
                self.proc = subprocess.Popen(
                    cmd, stdout=err, stderr=subprocess.STDOUT, cwd=self.base
                )
            if self._wait_ready(timeout):
                return self
            last_error = self.describe()
            self._terminate()
        raise RuntimeError(f"pgbouncer did not start:\n{last_error}")

    def _wait_ready(self, timeout: float) -> bool:
        """Bounded: a query through the bouncer to the server, or the process's death."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with psycopg.connect(
                    self.dsn(self.server_dbname), connect_timeout=2, prepare_threshold=None
                ) as conn:
                    conn.execute("SELECT 1")
                    return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False

    def describe(self) -> str:
        """The command's exit status and the tail of its output and log, for a failure."""
        parts = []
        if self.proc is not None:
            parts.append(f"exit status: {self.proc.poll()}")
        for path in (self.base / "stderr.txt", self.logfile):
            with contextlib.suppress(OSError):
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # immediate shutdown
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def stop(self) -> None:
        self._terminate()
        shutil.rmtree(self.base, ignore_errors=True)

    # --- reaching databases through it ----------------------------------------------------

    def dsn(self, dbname: str) -> str:
        """A URL to `dbname` through the bouncer (clients are trusted: no password)."""
        return f"postgresql://{quote(self.user)}@127.0.0.1:{self.port}/{quote(dbname)}"

    def dsn_for(self, direct_dsn: str) -> str:
        """The bouncer's URL for the database that `direct_dsn` names."""
        dbname = conninfo.conninfo_to_dict(direct_dsn).get("dbname")
        if not dbname:
            raise ValueError(f"no database name in {direct_dsn!r}")
        return self.dsn(str(dbname))

    def server_sessions(self, dbname: str) -> list[ServerSession]:
        """What each server connection the bouncer holds for `dbname` carries from earlier
        clients: prepared statements, LISTEN channels, session-level settings.

        All three are per session (a direct connection sees only its own), and which server
        session a bouncer client gets is the bouncer's choice. Holding POOL_SIZE
        transactions open at once through it gives POOL_SIZE distinct server connections,
        which are all the pool can have, so every server connection is looked at once.
        Call it while nothing else uses the database through the bouncer.
        """
        conns: list[psycopg.Connection[Any]] = []
        sessions: list[ServerSession] = []
        try:
            for _ in range(POOL_SIZE):
                # Not autocommit: the first statement opens a transaction that keeps this
                # server connection ours until the rollback below.
                conn = psycopg.connect(self.dsn(dbname), prepare_threshold=None)
                conns.append(conn)
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
                assert row is not None
                prepared = conn.execute(
                    "SELECT name, statement FROM pg_prepared_statements ORDER BY name"
                ).fetchall()
                channels = conn.execute("SELECT pg_listening_channels()").fetchall()
                settings = conn.execute(
                    "SELECT name, setting FROM pg_settings"
                    " WHERE source = 'session' AND NOT (name = ANY(%s)) ORDER BY name",
                    [list(BOUNCER_MANAGED_SETTINGS)],
                ).fetchall()
                sessions.append(
                    ServerSession(
                        pid=int(row[0]),
                        prepared=[(str(n), str(q)) for n, q in prepared],
                        channels=[str(c) for (c,) in channels],
                        settings={str(n): str(v) for n, v in settings},
                    )
                )
            pids = {session.pid for session in sessions}
            assert len(pids) == POOL_SIZE, f"expected {POOL_SIZE} server sessions, got {pids}"
            return sessions
        finally:
            for conn in conns:
                with contextlib.suppress(Exception):
                    conn.rollback()
                conn.close()

    def admin(self, command: str) -> list[dict[str, Any]]:
        """A command on the admin console (`SHOW POOLS`, ...), as dicts."""
        with psycopg.connect(
            self.dsn("pgbouncer"), autocommit=True, prepare_threshold=None
        ) as conn:
            cur = conn.execute(command)  # no parameters: the simple query protocol
            names = [col.name for col in cur.description or []]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
