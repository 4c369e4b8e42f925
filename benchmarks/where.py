"""Where the time goes, per job: what one drain costs the server and the worker, side by side.

Starts a throwaway PostgreSQL 15 cluster (initdb into a temporary folder, a free port, the
main benchmark server's settings plus pg_stat_statements), runs one drain of --jobs no-op
jobs at --concurrency for each chosen library through the harness's own drain code
(benchmarks/harness.py, exactly-once check included), and reads the server's counters just
before the first worker spawns and just after the last one exits. Everything is divided by
the number of jobs. See benchmarks/README.md ("Where the time goes") for every row.

Usage:
    python benchmarks/where.py [--only pgqueue,graphile-fast,pg-boss] [--jobs 20000]
                               [--concurrency 10] [--small-jobs 5000] [--top 8] [--profile]
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_pgqueue import Run, fetch_one, print_profile  # noqa: E402
from harness import (  # noqa: E402
    PEER_ALIASES,
    PEER_SPECS,
    DrainObserver,
    HarnessError,
    Library,
    Peer,
    PeerUnavailable,
    Pgqueue,
    Settings,
    Target,
    drain_run,
    ensure_node,
    ensure_venv,
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: The main benchmark server's settings (`SELECT name, setting FROM pg_settings WHERE source
#: <> 'default'` on it), so that the counters describe the same server the speeds come from.
SERVER_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "shared_buffers": "128MB",
    "autovacuum": "off",
    "max_connections": "100",
    "max_wal_size": "1GB",
    "min_wal_size": "80MB",
    "TimeZone": "Etc/UTC",
}
#: Only for this cluster: the statement counters, and no timed checkpoint in the middle of a
#: drain (each drain starts right after a CHECKPOINT instead, so every library pays the
#: full-page images of the pages it touches, and only those).
EXTRA_SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",  # what clients send, not what functions run inside
    "pg_stat_statements.max": "10000",
    "checkpoint_timeout": "1h",
    "listen_addresses": "127.0.0.1",
}
#: The role of where.py's own connection to the measured database, whose statements are left
#: out; the apps mark their drain-end probes with this comment for the same reason.
PROBE_ROLE = "where_probe"
PROBE_MARK = "/* bench-probe */"
START_TIMEOUT = 60.0
SETTLE_TIMEOUT = 30.0
LIBRARIES = ["pgqueue", *(p.name for p in PEER_SPECS if p.backend == "postgres")]
DEFAULT_LIBRARIES = ["pgqueue", "graphile-fast", "pg-boss"]
CLK_TCK = os.sysconf("SC_CLK_TCK")


class WhereError(Exception):
    """The throwaway cluster or a reading of it failed."""


# --- the throwaway cluster ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _as_postgres() -> dict[str, Any]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


@dataclass
class Cluster:
    data: Path
    port: int
    postmaster: subprocess.Popen[bytes]

    @property
    def admin_dsn(self) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")


@contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    root = Path(tempfile.mkdtemp(prefix="pgqueue-where-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    postmaster: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run(
            [
                *(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"),
                *("-E", "UTF8", "--no-sync"),
            ],
            check=True,
            capture_output=True,
            timeout=120,
            **_as_postgres(),
        )
        port = free_port()
        options = [f"{k}={v}" for k, v in {**SERVER_SETTINGS, **EXTRA_SETTINGS}.items()]
        log = (root / "postgres.log").open("wb")
        postmaster = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root)]
            + [arg for option in options for arg in ("-c", option)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **_as_postgres(),
        )
        log.close()
        cluster = Cluster(data, port, postmaster)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with psycopg.connect(cluster.admin_dsn, autocommit=True, connect_timeout=5) as c:
                    c.execute("CREATE EXTENSION pg_stat_statements")
                    c.execute(f"CREATE ROLE {PROBE_ROLE} LOGIN SUPERUSER")
                break
            except psycopg.OperationalError as exc:
                if postmaster.poll() is not None or time.monotonic() > deadline:
                    text = (root / "postgres.log").read_text(errors="replace")[-2000:]
                    raise WhereError(f"the throwaway cluster did not start: {exc}\n{text}") from exc
                time.sleep(0.1)
        yield cluster
    finally:
        if postmaster is not None and postmaster.poll() is None:
            postmaster.send_signal(signal.SIGINT)  # fast shutdown
            try:
                postmaster.wait(30)
            except subprocess.TimeoutExpired:
                postmaster.kill()
                postmaster.wait(10)
        shutil.rmtree(root, ignore_errors=True)


# --- the counters ------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with suppress(OSError), open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


def _ticks(pid: int, reaped: bool) -> int:
    """utime + stime of one process; with `reaped`, plus that of its children it has waited
    for (the postmaster reaps every backend, so that is where an exited backend's CPU is)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" fields start at 3 (state): utime is field 14, stime 15, cutime 16, cstime 17.
    own = int(fields[11]) + int(fields[12])
    return own + (int(fields[13]) + int(fields[14]) if reaped else 0)


def server_cpu_s(postmaster: int) -> tuple[float, set[int]]:
    """CPU seconds of the whole cluster so far (postmaster, its live children, and the children
    it has reaped), and the live children's pids."""
    children = set(_children(postmaster))
    ticks = _ticks(postmaster, reaped=True)
    for pid in children:
        with suppress(OSError):
            ticks += _ticks(pid, reaped=False)
    return ticks / CLK_TCK, children


TABLE_STATS = """
SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_upd), 0), coalesce(sum(n_tup_del), 0),
       coalesce(sum(n_tup_hot_upd), 0)
  FROM pg_stat_user_tables
"""


@dataclass
class Snapshot:
    commits: int
    rollbacks: int
    flush_lsn: str
    wal_records: int
    wal_fpi: int
    wal_bytes: int
    cpu_s: float
    children: set[int]
    tuples: tuple[int, int, int, int]  # inserted, updated, deleted, HOT-updated


@dataclass
class Reading:
    library: str
    version: str
    jobs: int
    run: Run | None = None
    before: Snapshot | None = None
    after: Snapshot | None = None
    statements: list[dict[str, Any]] = field(default_factory=list)
    wal_records: dict[str, int] = field(default_factory=dict)
    error: str | None = None
    #: Worker CPU seconds of a second, smaller drain (--small-jobs), for the per-job cost
    #: without start-up and exit; None when it was not run or failed.
    small_jobs: int = 0
    small_worker_cpu_s: float | None = None


class Observer:
    """Reads the cluster's counters around one drain (see harness.DrainObserver).

    Statements are read from pg_stat_statements for the measured database only, leaving out
    this observer's own role and the apps' marked probes; its admin queries run in another
    database. The counters that PostgreSQL 15 collects per backend and publishes when that
    backend next reports (commits, tuples) are read only once every worker backend has exited,
    which publishes them, and the postmaster has reaped it, which adds its CPU time to the
    postmaster's."""

    def __init__(self, cluster: Cluster, reading: Reading) -> None:
        self.cluster = cluster
        self.reading = reading
        self.admin: psycopg.Connection[Any] | None = None
        self.probe: psycopg.Connection[Any] | None = None

    def _snapshot(self, dbname: str) -> Snapshot:
        assert self.admin is not None and self.probe is not None
        cpu, children = server_cpu_s(self.cluster.postmaster.pid)
        commits, rollbacks = fetch_one(
            self.admin,
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = %s",
            (dbname,),
        )
        lsn, records, fpi, wal_bytes = fetch_one(
            self.admin,
            "SELECT pg_current_wal_flush_lsn()::text, wal_records, wal_fpi, wal_bytes"
            "  FROM pg_stat_wal",
        )
        tuples = fetch_one(self.probe, TABLE_STATS)
        return Snapshot(
            commits=int(commits),
            rollbacks=int(rollbacks),
            flush_lsn=str(lsn),
            wal_records=int(records),
            wal_fpi=int(fpi),
            wal_bytes=int(wal_bytes),
            cpu_s=cpu,
            children=children,
            tuples=(int(tuples[0]), int(tuples[1]), int(tuples[2]), int(tuples[3])),
        )

    def before(self, target: Target) -> None:
        assert target.dsn is not None
        dbname = psycopg.conninfo.conninfo_to_dict(target.dsn)["dbname"]
        self.dbname = str(dbname)
        self.admin = psycopg.connect(self.cluster.admin_dsn, autocommit=True)
        self.probe = psycopg.connect(
            make_conninfo(self.cluster.admin_dsn, dbname=self.dbname, user=PROBE_ROLE),
            autocommit=True,
        )
        # The bulk insert may still sit unpublished in an idle pooled backend of the harness
        # (PostgreSQL 15 publishes an idle backend's counters up to 10 s later, or when it
        # exits): end those backends, which publishes them, let the pool replace them, and
        # wait until the rows show, so that they do not land inside the measured window.
        if target.app is not None:
            self.admin.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> %s",
                (self.dbname, self.probe.info.backend_pid),
            )
            pool_log = logging.getLogger("psycopg.pool")
            level = pool_log.level
            pool_log.setLevel(logging.ERROR)  # it warns of each connection ended on purpose
            try:
                target.app.pool.check()
            finally:
                pool_log.setLevel(level)
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while fetch_one(self.probe, TABLE_STATS)[0] < self.reading.jobs:
            if time.monotonic() > deadline:
                raise WhereError("the enqueued jobs never showed in pg_stat_user_tables")
            time.sleep(0.2)
        # This probe's own polls above are commits of the measured database that PostgreSQL
        # would publish a second or so later, inside the window: publish them now.
        self.probe.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(0.1)
        self.admin.execute("CHECKPOINT")
        self.admin.execute("SELECT pg_stat_statements_reset()")
        self.reading.before = self._snapshot(self.dbname)

    def after(self, target: Target) -> None:
        assert self.admin is not None and self.probe is not None and self.reading.before
        assert target.dsn is not None
        # Wait for every worker backend to be gone and reaped (see the class docstring).
        probe_pid = self.probe.info.backend_pid
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            (others,) = fetch_one(
                self.admin,
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> %s"
                "   AND usename <> %s",
                (self.dbname, probe_pid, PROBE_ROLE),
            )
            listed = {int(row[0]) for row in self.admin.execute("SELECT pid FROM pg_stat_activity")}
            new = set(_children(self.cluster.postmaster.pid)) - self.reading.before.children
            # The harness's own pool (pgqueue enqueues from the harness) stays connected; a
            # child that is not listed any more has exited but is not reaped yet.
            if others <= self._harness_backends(target) and new <= listed:
                break
            if time.monotonic() > deadline:
                raise WhereError("worker backends still connected after the workers exited")
            time.sleep(0.05)
        rows = self.admin.execute(
            "SELECT s.query, s.calls, s.total_exec_time, s.rows"
            "  FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = %s AND s.userid <> (SELECT oid FROM pg_roles WHERE rolname = %s)"
            "   AND s.query NOT LIKE %s"
            " ORDER BY s.total_exec_time DESC",
            (self.dbname, PROBE_ROLE, f"%{PROBE_MARK}%"),
        ).fetchall()
        self.reading.statements = [
            {"query": q, "calls": int(c), "total_ms": float(t), "rows": int(r)}
            for q, c, t, r in rows
        ]
        self.reading.after = self._snapshot(self.dbname)
        self.reading.wal_records = wal_record_counts(
            self.cluster.data, self.reading.before.flush_lsn, self.reading.after.flush_lsn
        )
        self.probe.close()
        self.admin.close()

    def _harness_backends(self, target: Target) -> int:
        if target.app is None:
            return 0
        stats = target.app.pool.get_stats()
        return int(stats.get("pool_size", 0))


_WAL_LINE = re.compile(r"^(\w+/\w+)\s+(\d+)\s+\(")


def wal_record_counts(data: Path, start: str, end: str) -> dict[str, int]:
    """WAL records by type between two flushed LSNs, from pg_waldump --stats=record."""
    if start == end:
        return {}
    done = subprocess.run(
        [
            *(str(PG_BIN / "pg_waldump"), "--stats=record", "-p", str(data / "pg_wal")),
            *("-s", start, "-e", end),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    counts: dict[str, int] = {}
    for line in done.stdout.splitlines():
        found = _WAL_LINE.match(line.strip())
        if found:
            counts[found[1]] = int(found[2])
    if not counts:
        raise WhereError(f"pg_waldump read nothing:\n{done.stderr[-1000:]}")
    return counts


# --- the runs ----------------------------------------------------------------------------------


def library(name: str, settings: Settings) -> Library:
    if name == "pgqueue":
        return Pgqueue(settings)
    spec = next(p for p in PEER_SPECS if p.name == name)
    versions = ensure_node(spec) if spec.runtime == "node" else ensure_venv(spec)
    return Peer(settings, spec, versions)


def measure(cluster: Cluster, lib: Library, jobs: int, concurrency: int) -> Reading:
    reading = Reading(lib.name, lib.version, jobs)
    observer = Observer(cluster, reading)
    try:
        run = drain_run(lib, jobs, concurrency, 1, DrainObserver(observer.before, observer.after))
    except (HarnessError, WhereError, psycopg.Error) as exc:
        reading.error = f"{type(exc).__name__}: {exc}"
        return reading
    finally:
        for conn in (observer.probe, observer.admin):
            if conn is not None:
                conn.close()
    reading.run = run
    if run.error:
        reading.error = run.error
    return reading


def measure_small(lib: Library, reading: Reading, jobs: int, concurrency: int) -> None:
    """The worker CPU of a second drain of `jobs` (no counters read)."""
    if reading.error is not None or jobs < 1:
        return
    try:
        run = drain_run(lib, jobs, concurrency, 1)
    except (HarnessError, psycopg.Error) as exc:
        print(f"  the {jobs:,}-job drain FAILED: {type(exc).__name__}: {exc}", flush=True)
        return
    cpu = run.details.get("worker_cpu_s")
    if run.error or not cpu:
        print(f"  the {jobs:,}-job drain FAILED: {run.error or 'no worker CPU read'}", flush=True)
        return
    reading.small_jobs, reading.small_worker_cpu_s = jobs, float(sum(cpu))


ROWS = [
    ("jobs/s (this one drain)", "jobs_per_s", "{:,.0f}"),
    ("statements", "statements", "{:.2f}"),
    ("commits", "commits", "{:.2f}"),
    ("rollbacks", "rollbacks", "{:.3f}"),
    ("WAL bytes", "wal_bytes", "{:,.0f}"),
    ("WAL records", "wal_records", "{:.2f}"),
    ("  full-page images", "wal_fpi", "{:.3f}"),
    ("row versions written", "tuples_written", "{:.2f}"),
    ("  inserted", "tup_ins", "{:.2f}"),
    ("  updated", "tup_upd", "{:.2f}"),
    ("    of which HOT", "tup_hot", "{:.2f}"),
    ("  deleted", "tup_del", "{:.2f}"),
    ("heap row locks (WAL Heap/LOCK)", "heap_locks", "{:.2f}"),
    ("index entries written (WAL)", "index_entries", "{:.2f}"),
    ("worker CPU, µs", "worker_cpu_us", "{:,.0f}"),
    ("  beyond start-up and exit", "worker_marginal_us", "{:,.0f}"),
    ("  start-up and exit, ms (once)", "worker_fixed_ms", "{:,.0f}"),
    ("server CPU, µs", "server_cpu_us", "{:,.0f}"),
]


def per_job(reading: Reading) -> dict[str, float]:
    b, a, n = reading.before, reading.after, reading.jobs
    assert b is not None and a is not None and reading.run is not None
    ins, upd, dele, hot = (a.tuples[i] - b.tuples[i] for i in range(4))
    wal = reading.wal_records
    index = sum(v for k, v in wal.items() if k in ("Btree/INSERT_LEAF", "Btree/INSERT_POST"))
    worker_cpu = sum(reading.run.details.get("worker_cpu_s") or [0.0])
    # Two drains of different sizes: the difference of their worker CPU over the difference
    # of their jobs is what one more job costs; the rest is paid once per process.
    marginal = fixed = float("nan")
    if reading.small_worker_cpu_s is not None and n > reading.small_jobs:
        marginal = (worker_cpu - reading.small_worker_cpu_s) / (n - reading.small_jobs)
        fixed = worker_cpu - marginal * n
    return {
        "jobs_per_s": reading.run.metrics["jobs_per_s"],
        "statements": sum(s["calls"] for s in reading.statements) / n,
        "commits": (a.commits - b.commits) / n,
        "rollbacks": (a.rollbacks - b.rollbacks) / n,
        "wal_bytes": (a.wal_bytes - b.wal_bytes) / n,
        "wal_records": (a.wal_records - b.wal_records) / n,
        "wal_fpi": (a.wal_fpi - b.wal_fpi) / n,
        "tuples_written": (ins + upd + dele) / n,
        "tup_ins": ins / n,
        "tup_upd": upd / n,
        "tup_hot": hot / n,
        "tup_del": dele / n,
        "heap_locks": wal.get("Heap/LOCK", 0) / n,
        "index_entries": index / n,
        "worker_cpu_us": worker_cpu * 1e6 / n,
        "worker_marginal_us": marginal * 1e6,
        "worker_fixed_ms": fixed * 1e3,
        "server_cpu_us": (a.cpu_s - b.cpu_s) * 1e6 / n,
    }


def report(readings: list[Reading], top: int) -> str:
    good = [r for r in readings if r.error is None]
    width = 16
    lines = [
        f"per job, one drain of {readings[0].jobs:,} no-op jobs, one worker process"
        " (PostgreSQL 15 throwaway cluster; see benchmarks/README.md)",
        f"{'':<32}" + "".join(f"{r.library:>{width}}" for r in good),
        f"{'':<32}" + "".join(f"{r.version:>{width}}" for r in good),
    ]
    values = [per_job(r) for r in good]
    for label, key, form in ROWS:
        lines.append(f"{label:<32}" + "".join(f"{form.format(v[key]):>{width}}" for v in values))
    for r in readings:
        if r.error is not None:
            lines.append(f"{r.library}: FAILED: {r.error.strip().splitlines()[0]}")
    for r in good:
        total = sum(s["total_ms"] for s in r.statements)
        lines.append("")
        lines.append(
            f"{r.library}: top statements by total execution time"
            f" ({total:,.0f} ms in all, {len(r.statements)} distinct statements)"
        )
        lines.append(f"  {'total ms':>9} {'calls/job':>9} {'mean µs':>8} {'rows/call':>9}  query")
        for s in r.statements[:top]:
            query = " ".join(s["query"].split())
            lines.append(
                f"  {s['total_ms']:>9,.0f} {s['calls'] / r.jobs:>9.3f}"
                f" {s['total_ms'] * 1000 / max(1, s['calls']):>8,.0f}"
                f" {s['rows'] / max(1, s['calls']):>9.1f}  {query[:110]}"
            )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(DEFAULT_LIBRARIES),
        help=f"comma-separated libraries, of {','.join(LIBRARIES)} (default: %(default)s)",
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per drain")
    parser.add_argument("--concurrency", type=int, default=10, help="slots of the worker")
    parser.add_argument(
        "--small-jobs",
        type=int,
        default=5_000,
        help="jobs of a second drain per library, for the worker CPU per job beyond start-up"
        " (0: none)",
    )
    parser.add_argument("--top", type=int, default=8, help="statements listed per library")
    parser.add_argument("--timeout", type=float, default=900.0, help="bound on each child, s")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also drain once more under py-spy (pgqueue's worker) and print its top frames;"
        " that drain is not in the table (the profiler's own CPU would be)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.concurrency < 1 or args.top < 0 or args.small_jobs < 0:
        parser.error(
            "--jobs and --concurrency must be at least 1, --top and --small-jobs at least 0"
        )
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    args.libraries = list(dict.fromkeys(PEER_ALIASES.get(n, n) for n in names))
    unknown = set(args.libraries) - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries {sorted(unknown)}; choose from {LIBRARIES}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not (PG_BIN / "initdb").exists():
        print(f"where.py needs PostgreSQL 15's server binaries in {PG_BIN}")
        return 2
    readings: list[Reading] = []
    with throwaway_cluster() as cluster:
        print(f"throwaway PostgreSQL 15 cluster on port {cluster.port} ({cluster.data})")
        settings = Settings(admin_dsn=cluster.admin_dsn, redis_url="", timeout=args.timeout)
        for name in args.libraries:
            try:
                lib = library(name, settings)
            except PeerUnavailable as exc:
                print(f"{name}: SKIPPED: {exc}", flush=True)
                continue
            except HarnessError as exc:
                print(f"{name}: FAILED to install: {exc}", flush=True)
                continue
            print(f"{name} {lib.version}: draining {args.jobs:,} jobs ...", flush=True)
            reading = measure(cluster, lib, args.jobs, args.concurrency)
            state = f"FAILED: {reading.error}" if reading.error else "done"
            print(f"  {state}", flush=True)
            if args.small_jobs and args.small_jobs < args.jobs:
                print(f"  and {args.small_jobs:,} jobs, for the worker's CPU ...", flush=True)
                measure_small(lib, reading, args.small_jobs, args.concurrency)
            readings.append(reading)
        profile = None
        if args.profile and "pgqueue" in args.libraries:
            profile = Path(tempfile.gettempdir(), f"where-{secrets.token_hex(4)}.txt")
            lib = Pgqueue(settings)
            lib.profile = profile
            print(f"pgqueue: draining {args.jobs:,} jobs under py-spy ...", flush=True)
            run = drain_run(lib, args.jobs, args.concurrency, 1)
            if run.error:
                print(f"  profiled drain FAILED: {run.error}")
                profile = None
    if not readings:
        return 1
    print()
    print(report(readings, args.top))
    if profile is not None:
        print()
        print_profile(profile)
        profile.unlink(missing_ok=True)
    return 1 if any(r.error for r in readings) else 0


if __name__ == "__main__":
    sys.exit(main())
