"""Throughput of pgqueue on its own: a baseline to compare peers and later changes against.

Every run gets a scratch database (CREATE DATABASE bench_<random>, migrated, dropped at the
end), so no run inherits another's dead tuples, bloat or statistics. Each workload does one
warm-up run that is not reported, then `--repeats` timed runs summarised as median, min and max.
A drain run that loses or duplicates a job is reported as FAILED instead of being timed: a
fast queue that is wrong is not a result.

Usage:
    python benchmarks/bench_pgqueue.py [--dsn DSN] [--jobs N] [--repeats R]
                                       [--only drain|enqueue-single|enqueue-bulk]
                                       [--profile-drain FILE] [--worker-args ARGS]
                                       [--pause-queue NAME]

A drain's worker serves every queue unless --worker-args names some: `--worker-args '-q
default'` is a worker for the one queue that holds every job (the bench jobs' queue).
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import hashlib
import json
import os
import platform
import re
import resource
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgqueue
from pgqueue._core.spec import JobSpec

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "benchmarks" / "results" / "results.jsonl"
TASK_NAME = "bench.noop"
WORKER_APP = "benchmarks.bench_app:app"
#: Bound on every subprocess, so that a hung worker fails the run instead of the session.
SUBPROCESS_TIMEOUT = 300.0
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
WORKLOADS = ("drain", "enqueue-single", "enqueue-bulk", "fanout", "enqueue-breakdown")
#: Run only when asked for by name (`--only`): a diagnosis, not a result to compare peers on.
ON_REQUEST = ("enqueue-breakdown",)
SOURCE_DIRS = ("pgqueue", "sql", "cli")
#: Server settings that change the numbers by integer factors; recorded with every result.
SETTINGS = (
    "synchronous_commit",
    "shared_buffers",
    "fsync",
    "full_page_writes",
    "wal_level",
    "autovacuum",
    "max_wal_size",
    "jit",
)

# A table shaped like a job row (identity pk, jsonb args, defaulted text and integer columns,
# timestamps) without pgqueue's partial indexes, checks, SQL function and NOTIFY: the cost of
# a one-row transaction that nothing can go below.
RAW_TABLE = """
CREATE TABLE bench_raw (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task         text NOT NULL DEFAULT 'bench.noop',
    queue        text NOT NULL DEFAULT 'default',
    state        text NOT NULL DEFAULT 'available',
    priority     integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 3,
    args         jsonb NOT NULL,
    run_at       timestamptz NOT NULL DEFAULT now(),
    created_at   timestamptz NOT NULL DEFAULT now()
)
"""
RAW_INSERT = "INSERT INTO bench_raw (args) VALUES (%s::jsonb)"


def _noop(n: int) -> None:
    """Mirrors benchmarks.bench_app.noop.

    Importing that module would build its App from PGQUEUE_DSN at import time, and the
    enqueueing side needs an App bound to each scratch database instead.
    """
    return None


# --- scratch databases -------------------------------------------------------------------


@contextmanager
def scratch_database(admin_dsn: str) -> Iterator[str]:
    """A brand-new database for one run, dropped (even if the run fails) when it ends."""
    name = f"bench_{secrets.token_hex(6)}"
    ident = sql.Identifier(name)
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
            # FORCE: a worker killed by the timeout may leave a backend behind for a moment.
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def migrated_app(dsn: str) -> tuple[pgqueue.App, pgqueue.Task[[int], None]]:
    app = pgqueue.App(dsn)
    app.migrate()
    task: pgqueue.Task[[int], None] = app.task(name=TASK_NAME)(_noop)
    return app, task


def jobs_table(app: pgqueue.App) -> sql.Composed:
    return sql.SQL("{}.jobs").format(sql.Identifier(app.schema))


def fetch_one(
    conn: psycopg.Connection[Any], query: sql.Composed | str, params: Any = None
) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


def count_jobs(app: pgqueue.App) -> int:
    with app.pool.connection() as conn:
        return int(fetch_one(conn, sql.SQL("SELECT count(*) FROM {}").format(jobs_table(app)))[0])


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    """One run's measurements; `error` set means the run does not count."""

    metrics: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


VERIFY_DRAIN = """
SELECT count(*),
       count(*) FILTER (WHERE state = 'completed' AND attempt = 1),
       min(started_at),
       max(finished_at),
       count(DISTINCT started_at),
       count(DISTINCT finished_at),
       percentile_disc(0.5) WITHIN GROUP (ORDER BY finished_at)
  FROM {jobs}
"""

_STOPPED = re.compile(r"stopped: (\{[^}]*\})")


def analyze(dsn: str) -> None:
    """Fresh statistics before every timed drain, for every library alike.

    The server here runs with autovacuum off, so a freshly loaded queue table would otherwise
    be planned on no statistics, which punishes some designs far more than others.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")


def drain_run(
    admin_dsn: str,
    jobs: int,
    concurrency: int,
    profile: Path | None = None,
    worker_args: Sequence[str] = (),
    async_task: bool = False,
    paused: Sequence[str] = (),
) -> Run:
    """Pre-insert `jobs` no-op jobs, then time one burst worker process draining them
    (`worker_args`: more `pgqueue worker` options, e.g. `--prefetch 10` for an A/B; `paused`:
    queues paused first, which hold no jobs, so that the claim skips them in vain)."""
    with scratch_database(admin_dsn) as dsn:
        app, task = migrated_app(dsn)
        try:
            task.enqueue_many({"n": i} for i in range(jobs))
            for queue in paused:
                app.pause(queue)
        finally:
            app.close()
        analyze(dsn)
        command = [
            sys.executable,
            "-m",
            "pgqueue.cli",
            "worker",
            WORKER_APP,
            "-c",
            str(concurrency),
            "--burst",
            *worker_args,
        ]
        if profile is not None:
            command = [
                py_spy(),
                "record",
                "--format",
                "raw",
                "--function",
                "--gil",
                "--threads",
                "--rate",
                "200",
                "-o",
                str(profile),
                "--",
                *command,
            ]
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
        env["PGQUEUE_BENCH_ASYNC"] = "1" if async_task else "0"
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            spawned_at = fetch_one(conn, "SELECT clock_timestamp()")[0]
            cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            try:
                proc = subprocess.run(
                    command,
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=SUBPROCESS_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return Run(error=f"worker did not finish within {SUBPROCESS_TIMEOUT:.0f} s")
            wall = time.perf_counter() - start
            cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            (total, exactly_once, first_start, last_finish, claims, flushes, half_finish) = (
                fetch_one(conn, sql.SQL(VERIFY_DRAIN).format(jobs=jobs_table(app)))
            )
            states = conn.execute(
                sql.SQL(
                    "SELECT state, attempt, count(*) FROM {} GROUP BY 1, 2 ORDER BY 1, 2"
                ).format(jobs_table(app))
            ).fetchall()
    log_tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
    if proc.returncode != 0:
        return Run(error=f"worker exited with {proc.returncode}:\n{log_tail}")
    if total != jobs or exactly_once != jobs:
        return Run(
            error=f"not exactly-once: {jobs} enqueued, {total} rows, {exactly_once}"
            f" completed on attempt 1; (state, attempt, count): {states}"
        )
    span = (last_finish - first_start).total_seconds()
    found = _STOPPED.search(proc.stderr)
    stats = ast.literal_eval(found[1]) if found else {}
    # The worker counts its claim statements; distinct start times count them only where
    # every start is recorded at claim time (before jobs claimed into the buffer read
    # `claimed`, their starts recorded when they happen).
    claims = stats.get("claims", claims)
    worker_cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    return Run(
        metrics={
            "jobs_per_s_db_span": jobs / span,
            "jobs_per_s_wall": jobs / wall,
        },
        details={
            "db_span_s": span,
            "wall_s": wall,
            "spawn_to_last_completion_s": (last_finish - spawned_at).total_seconds(),
            "startup_s": (first_start - spawned_at).total_seconds(),
            "first_half_jobs_per_s": (jobs / 2) / (half_finish - first_start).total_seconds(),
            "second_half_jobs_per_s": (jobs / 2) / (last_finish - half_finish).total_seconds(),
            "claim_statements": claims,
            "jobs_per_claim": jobs / claims,
            "completion_flushes": flushes,
            "jobs_per_flush": jobs / flushes,
            "worker_cpu_s": worker_cpu,
            "worker_stats": stats or None,
        },
    )


def raw_insert_loop(dsn: str, jobs: int) -> tuple[float, int]:
    """The floor for single enqueues: seconds for `jobs` autocommit one-row INSERTs into a
    job-shaped table (created here), and the rows it then holds."""
    # One round trip and one commit per row, the least any enqueue can cost: an enqueue on
    # a pooled autocommit connection is one statement too, so the ratio isolates what the
    # queue adds to the row. (A BEGIN ... COMMIT loop costs two more round trips a row and
    # made the floor look lower than pgqueue's own path.)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(RAW_TABLE)
        start = time.perf_counter()
        for i in range(jobs):
            conn.execute(RAW_INSERT, (f'{{"n": {i}}}',))
        elapsed = time.perf_counter() - start
        rows = int(fetch_one(conn, "SELECT count(*) FROM bench_raw")[0])
    return elapsed, rows


def enqueue_single_run(admin_dsn: str, jobs: int) -> Run:
    """Enqueue one job per transaction, next to the same loop of bare INSERTs for scale."""
    with scratch_database(admin_dsn) as dsn:
        raw, raw_rows = raw_insert_loop(dsn, jobs)
        app, task = migrated_app(dsn)
        try:
            app.pool.wait(timeout=30)  # connecting is not what is being measured
            start = time.perf_counter()
            for i in range(jobs):
                task.enqueue(n=i)
            elapsed = time.perf_counter() - start
            rows = count_jobs(app)
        finally:
            app.close()
    if rows != jobs or raw_rows != jobs:
        return Run(error=f"expected {jobs} rows, found {rows} jobs and {raw_rows} raw rows")
    return Run(
        metrics={
            "jobs_per_s": jobs / elapsed,
            "raw_inserts_per_s": jobs / raw,
            "ratio_to_raw": raw / elapsed,
        },
        details={
            "elapsed_s": elapsed,
            "raw_elapsed_s": raw,
            "us_per_job": elapsed / jobs * 1e6,
            "raw_us_per_insert": raw / jobs * 1e6,
        },
    )


def enqueue_bulk_run(admin_dsn: str, jobs: int) -> Run:
    """One `enqueue_many` call; building the caller's list of arguments is not timed."""
    with scratch_database(admin_dsn) as dsn:
        app, task = migrated_app(dsn)
        try:
            app.pool.wait(timeout=30)
            items = [{"n": i} for i in range(jobs)]
            start = time.perf_counter()
            handles = task.enqueue_many(items)
            elapsed = time.perf_counter() - start
            rows = count_jobs(app)
        finally:
            app.close()
    if rows != jobs or len(handles) != jobs:
        return Run(error=f"expected {jobs} jobs, found {rows} rows and {len(handles)} handles")
    return Run(metrics={"jobs_per_s": jobs / elapsed}, details={"elapsed_s": elapsed})


#: One round trip that inserts a job-shaped row and sends the wake-up a due job sends.
RAW_INSERT_NOTIFY = (
    "WITH r AS (INSERT INTO bench_raw (args) VALUES (%s::jsonb) RETURNING id)"
    " SELECT r.id, pg_notify('bench_raw', 'default') FROM r"
)
#: The breakdown's variants, cheapest first: each adds one layer to the one before.
BREAKDOWN = (
    "insert",
    "insert_notify",
    "insert_jobs",
    "sql_enqueue",
    "sql_enqueue_job",
    "task_enqueue",
    "task_enqueue_async",
    "task_enqueue_conn",
)
BREAKDOWN_LABELS = {
    "insert": "autocommit INSERT (floor)",
    "insert_notify": "INSERT + pg_notify",
    "insert_jobs": "INSERT INTO jobs (bare)",
    "sql_enqueue": "SELECT enqueue() (psycopg)",
    "sql_enqueue_job": "job_enqueue.sql (psycopg)",
    "task_enqueue": "task.enqueue()",
    "task_enqueue_async": "await task.enqueue_async()",
    "task_enqueue_conn": "task.options(conn=).enqueue()",
}
#: Jobs per variant before the next one takes over: small, so that a slow moment on the
#: shared machine falls on every variant alike.
BREAKDOWN_BLOCK = 100


def enqueue_breakdown_run(admin_dsn: str, jobs: int) -> Run:
    """Where a single enqueue's time goes: `jobs` one-job transactions per variant, from the
    bare autocommit INSERT up to `task.enqueue()`, taking turns in blocks of
    BREAKDOWN_BLOCK on one scratch database, each on a warm connection of its own."""
    with scratch_database(admin_dsn) as dsn:
        app, task = migrated_app(dsn)
        loop = asyncio.new_event_loop()
        raw = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        caller = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
        try:
            raw.execute(RAW_TABLE)
            app.pool.wait(timeout=30)
            enqueue_sql = sql.SQL("SELECT {}.enqueue(%s, %s::jsonb)").format(
                sql.Identifier(app.schema)
            )
            insert_jobs_sql = sql.SQL("INSERT INTO {} (task, args) VALUES (%s, %s::jsonb)").format(
                jobs_table(app)
            )
            enqueue_job_sql = app.client.queries["job_enqueue"]
            via_conn = task.options(conn=caller)

            async def async_block(start: int, stop: int) -> None:
                for i in range(start, stop):
                    await task.enqueue_async(n=i)

            def block(variant: str, start: int, stop: int) -> None:
                if variant == "insert":
                    for i in range(start, stop):
                        raw.execute(RAW_INSERT, (f'{{"n": {i}}}',))
                elif variant == "insert_notify":
                    for i in range(start, stop):
                        raw.execute(RAW_INSERT_NOTIFY, (f'{{"n": {i}}}',))
                elif variant == "insert_jobs":
                    for i in range(start, stop):
                        raw.execute(insert_jobs_sql, (TASK_NAME, f'{{"n": {i}}}'))
                elif variant == "sql_enqueue":
                    for i in range(start, stop):
                        raw.execute(enqueue_sql, (TASK_NAME, f'{{"n": {i}}}'))
                elif variant == "sql_enqueue_job":
                    for i in range(start, stop):
                        params = JobSpec(TASK_NAME, f'{{"n": {i}}}').params()
                        raw.execute(enqueue_job_sql, params)
                elif variant == "task_enqueue":
                    for i in range(start, stop):
                        task.enqueue(n=i)
                elif variant == "task_enqueue_async":
                    loop.run_until_complete(async_block(start, stop))
                else:
                    for i in range(start, stop):
                        via_conn.enqueue(n=i)

            # One untimed block each: connections, prepared statements, the schema check.
            for variant in BREAKDOWN:
                block(variant, 0, 10)
            elapsed = dict.fromkeys(BREAKDOWN, 0.0)
            for start in range(0, jobs, BREAKDOWN_BLOCK):
                stop = min(start + BREAKDOWN_BLOCK, jobs)
                for variant in BREAKDOWN:
                    began = time.perf_counter()
                    block(variant, start, stop)
                    elapsed[variant] += time.perf_counter() - began
            raw_rows = int(fetch_one(raw, "SELECT count(*) FROM bench_raw")[0])
            rows = count_jobs(app)
        finally:
            raw.close()
            caller.close()
            loop.run_until_complete(app.aclose())
            loop.close()
            app.close()
    expected_jobs = 6 * (jobs + 10)
    if raw_rows != 2 * (jobs + 10) or rows != expected_jobs:
        return Run(
            error=f"expected {expected_jobs} jobs, {2 * (jobs + 10)} raw rows;"
            f" found {rows} and {raw_rows}"
        )
    metrics = {f"{v}_per_s": jobs / elapsed[v] for v in BREAKDOWN}
    metrics["task_enqueue_to_floor"] = elapsed["insert"] / elapsed["task_enqueue"]
    return Run(
        metrics=metrics,
        details={f"{v}_us_per_job": elapsed[v] / jobs * 1e6 for v in BREAKDOWN},
    )


FANOUT_TIMES = """
SELECT p.created_at, p.finished_at, p.state, p.result,
       min(c.created_at), min(c.started_at), max(c.finished_at), count(*),
       count(*) FILTER (WHERE c.state = 'completed')
  FROM {jobs} AS p, {jobs} AS c
 WHERE p.task = 'bench.fan' AND c.task = 'bench.noop'
 GROUP BY p.id
"""


def fanout_run(admin_dsn: str, children: int, concurrency: int) -> Run:
    """A workflow 1 -> `children` -> 1: one parent maps no-op children and gathers them,
    suspending (no slot held) until the last one ends; one burst worker process."""
    with scratch_database(admin_dsn) as dsn:
        app, _task = migrated_app(dsn)
        try:
            app.enqueue("bench.fan", {"n": children})
        finally:
            app.close()
        command = [
            sys.executable, "-m", "pgqueue.cli", "worker", "benchmarks.bench_app:app",
            "-c", str(concurrency), "--burst",
        ]  # fmt: skip
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True,
            timeout=SUBPROCESS_TIMEOUT, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            return Run(error=f"worker exited with {proc.returncode}: {proc.stderr[-500:]}")
        with psycopg.connect(dsn, autocommit=True) as conn:
            found = conn.execute(sql.SQL(FANOUT_TIMES).format(jobs=jobs_table(app))).fetchone()
            if found is None:  # the parent spawned nothing: say why
                parent = fetch_one(
                    conn,
                    sql.SQL("SELECT state, errors -> -1 FROM {} WHERE task = 'bench.fan'").format(
                        jobs_table(app)
                    ),
                )
                return Run(error=f"the parent spawned no children: {parent}")
            row = tuple(found)
    (created, finished, state, result, spawned, first_start, last_child, n, done) = row
    if state != "completed" or result != children or n != children or done != children:
        return Run(error=f"parent {state} with {result!r}; {done}/{n} children completed")
    span = (finished - spawned).total_seconds()
    return Run(
        metrics={
            # From the spawn (the parent's first run) to the join's end: worker start-up,
            # which the drain reports separately, is not part of the workflow.
            "jobs_per_s": (children + 1) / span,
            "children_per_s": children / (last_child - first_start).total_seconds(),
            "join_ms": (finished - last_child).total_seconds() * 1000,
        },
        details={"spawn_to_join_s": span, "total_s": (finished - created).total_seconds()},
    )


# --- reporting ---------------------------------------------------------------------------


@dataclass
class Metric:
    label: str
    key: str
    unit: str


@dataclass
class Workload:
    name: str
    jobs: int
    warmup_jobs: int
    run: Callable[[int], Run]
    metrics: list[Metric]
    params: dict[str, Any]


def summarise(runs: list[Run], key: str) -> dict[str, Any]:
    samples = [r.metrics[key] for r in runs if r.error is None]
    if not samples:
        return {"samples": []}
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def git_state() -> dict[str, Any]:
    """Which library code was measured: other work may be uncommitted in the tree."""

    def git(*args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return done.stdout.rstrip("\n")

    dirty = git("status", "--porcelain", "--", *SOURCE_DIRS)
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty_paths": [line[3:] for line in dirty.splitlines()],
        "source_sha256": source_fingerprint(),
    }


def source_fingerprint() -> str:
    """A hash of the library sources as they are now.

    The worker subprocess imports whatever is on disk when it starts, and the tree may be
    edited while a benchmark runs; comparing this before and after each workload says whether
    all of its runs measured the same code.
    """
    digest = hashlib.sha256()
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix in (".py", ".sql") and path.is_file():
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment(admin_dsn: str) -> dict[str, Any]:
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        version = fetch_one(conn, "SHOW server_version")[0]
        settings: dict[str, str] = dict(
            conn.execute(
                "SELECT name, current_setting(name) FROM unnest(%s::text[]) AS name",
                (list(SETTINGS),),
            ).fetchall()
        )
    return {
        "pgqueue_version": pgqueue.__version__,
        "git": git_state(),
        "postgresql_version": version,
        "postgresql_settings": settings,
        "machine": {
            "nproc": len(os.sched_getaffinity(0)),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        },
    }


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}" if value >= 10 else f"{value:.3f}"


def print_table(
    env: dict[str, Any], rows: list[tuple[str, int, int, dict[str, Any], str, str]]
) -> None:
    s = env["postgresql_settings"]
    m = env["machine"]
    print()
    print(
        f"pgqueue {env['pgqueue_version']} | PostgreSQL {env['postgresql_version']}"
        f" | synchronous_commit={s['synchronous_commit']} fsync={s['fsync']}"
        f" shared_buffers={s['shared_buffers']} autovacuum={s['autovacuum']}"
        f" | {m['nproc']} CPUs | Python {m['python']} | psycopg {m['psycopg']}"
    )
    header = (
        f"{'workload':<40} {'jobs':>8} {'runs':>4} {'median':>11} {'min':>11} "
        f"{'max':>11}  {'unit':<8} notes"
    )
    print(header)
    print("-" * len(header))
    for label, jobs, runs, stats, unit, note in rows:
        if stats.get("status") == "FAILED":
            print(f"{label:<40} {jobs:>8} {runs:>4} {'FAILED':>11}  {note}")
            continue
        print(
            f"{label:<40} {jobs:>8} {runs:>4} {fmt(stats.get('median')):>11} "
            f"{fmt(stats.get('min')):>11} {fmt(stats.get('max')):>11}  {unit:<8} {note}"
        )
    print()


def drain_note(runs: list[Run]) -> str:
    ok = [r.details for r in runs if r.error is None]
    if not ok:
        return ""
    med = {
        k: statistics.median(d[k] for d in ok)
        for k in (
            "jobs_per_claim",
            "jobs_per_flush",
            "worker_cpu_s",
            "startup_s",
            "first_half_jobs_per_s",
            "second_half_jobs_per_s",
        )
    }
    return (
        f"{med['jobs_per_claim']:.1f} jobs/claim, {med['jobs_per_flush']:.1f} jobs/flush,"
        f" worker CPU {med['worker_cpu_s']:.1f} s, startup {med['startup_s']:.2f} s,"
        f" halves {med['first_half_jobs_per_s']:,.0f}/{med['second_half_jobs_per_s']:,.0f}"
        " jobs/s"
    )


# --- profiling ---------------------------------------------------------------------------


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        sys.exit("--profile-drain needs py-spy: pip install py-spy")
    return found


def _package(frame: str) -> str:
    match = re.search(r"\((.*):\d+\)$", frame)
    path = match[1] if match else frame
    for name in (
        "psycopg_pool",
        "psycopg",
        "pgqueue",
        "asyncio",
        "logging",
        "threading",
        "selectors",
        "json",
        "uuid",
    ):
        if path.startswith(f"{name}/") or path == f"{name}.py" or f"/{name}/" in path:
            return name
    return "other: " + path.rsplit("/", 1)[-1]


def print_profile(path: Path, top: int = 15) -> None:
    """Hot spots of a py-spy raw profile taken with --gil, i.e. of Python CPU time.

    Self time names the expensive leaf; the deepest pgqueue frame of each sample says which
    part of the worker paid for it, however deep in psycopg or asyncio the leaf was.
    """
    own: Counter[str] = Counter()
    pgqueue_frame: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    by_thread: Counter[str] = Counter()
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        by_thread[re.sub(r"\s*\(\w+\)|-\d+$", "", frames[0])] += count
        code = frames[1:] or ["(no Python frame)"]
        own[code[-1]] += count
        by_package[_package(code[-1])] += count
        ours = [f for f in code if "pgqueue/" in f]
        pgqueue_frame[ours[-1] if ours else "(outside pgqueue: startup, event loop)"] += count
    if not total:
        print(f"profile {path}: no samples")
        return
    print(f"py-spy profile of one drain worker: {total} samples holding the GIL ({path})")
    for title, counter in (
        ("self time", own),
        ("by deepest pgqueue frame", pgqueue_frame),
        ("self time by package", by_package),
        ("by thread", by_thread),
    ):
        print(f"  top {title}:")
        for frame, count in counter.most_common(top):
            print(f"    {100 * count / total:5.1f}%  {frame}")
    print()


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN),
        help="a database to connect to for CREATE/DROP DATABASE"
        " (default: $PGQUEUE_BENCH_DSN or %(default)s)",
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs drained per drain run")
    parser.add_argument("--concurrency", type=int, default=10, help="drain worker concurrency")
    parser.add_argument(
        "--single-jobs", type=int, default=2_000, help="jobs per enqueue-single run"
    )
    parser.add_argument("--bulk-jobs", type=int, default=100_000, help="jobs per enqueue-bulk run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per workload")
    parser.add_argument(
        "--fanout-children", type=int, default=1000, help="children of the fanout workflow"
    )
    parser.add_argument("--only", choices=WORKLOADS, help="run just this workload")
    parser.add_argument(
        "--async-task",
        action="store_true",
        help="drain with the no-op task as a coroutine (default: a plain function, on threads)",
    )
    parser.add_argument(
        "--worker-args",
        default="",
        metavar="ARGS",
        help="more `pgqueue worker` options for the drain, e.g. '--prefetch 10'",
    )
    parser.add_argument(
        "--pause-queue",
        action="append",
        default=[],
        metavar="NAME",
        help="pause this queue (it holds no jobs) before the drain; repeatable",
    )
    parser.add_argument(
        "--profile-drain",
        type=Path,
        metavar="FILE",
        help="after the drain runs, profile one more (untimed) with py-spy,"
        " write its raw stacks to FILE and print the hot spots",
    )
    parser.add_argument(
        "--no-save", action="store_true", help=f"do not append to {RESULTS_FILE.relative_to(ROOT)}"
    )
    args = parser.parse_args(argv)
    for name in ("jobs", "concurrency", "single_jobs", "bulk_jobs", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def workloads(args: argparse.Namespace) -> list[Workload]:
    dsn = args.dsn
    return [
        Workload(
            "drain",
            args.jobs,
            min(args.jobs, 2_000),
            lambda n: drain_run(
                dsn,
                n,
                args.concurrency,
                worker_args=shlex.split(args.worker_args),
                async_task=args.async_task,
                paused=args.pause_queue,
            ),
            [
                Metric("drain (DB span)", "jobs_per_s_db_span", "jobs/s"),
                Metric("drain (wall, incl. startup)", "jobs_per_s_wall", "jobs/s"),
            ],
            {
                "concurrency": args.concurrency,
                "worker": "subprocess --burst",
                "task": "async noop" if args.async_task else "sync noop",
                "worker_args": args.worker_args,
                "paused_queues": args.pause_queue,
            },
        ),
        Workload(
            "enqueue-single",
            args.single_jobs,
            min(args.single_jobs, 200),
            lambda n: enqueue_single_run(dsn, n),
            [
                Metric("enqueue-single (pgqueue)", "jobs_per_s", "jobs/s"),
                Metric("enqueue-single (raw INSERT)", "raw_inserts_per_s", "rows/s"),
                Metric("enqueue-single pgqueue/raw", "ratio_to_raw", "ratio"),
            ],
            {"transaction": "one per job", "client": "App pool, one thread"},
        ),
        Workload(
            "fanout",
            args.fanout_children,
            min(args.fanout_children, 100),
            lambda n: fanout_run(dsn, n, args.concurrency),
            [
                Metric("fanout 1->N->1 (whole workflow)", "jobs_per_s", "jobs/s"),
                Metric("fanout children", "children_per_s", "jobs/s"),
                Metric("fanout last child -> join done", "join_ms", "ms"),
            ],
            {"concurrency": args.concurrency, "worker": "subprocess --burst"},
        ),
        Workload(
            "enqueue-bulk",
            args.bulk_jobs,
            min(args.bulk_jobs, 10_000),
            lambda n: enqueue_bulk_run(dsn, n),
            [Metric("enqueue-bulk", "jobs_per_s", "jobs/s")],
            {"calls": 1, "chunk": 5000},
        ),
        Workload(
            "enqueue-breakdown",
            args.single_jobs,
            min(args.single_jobs, 200),
            lambda n: enqueue_breakdown_run(dsn, n),
            [
                *(
                    Metric(f"breakdown {BREAKDOWN_LABELS[v]}", f"{v}_per_s", "jobs/s")
                    for v in BREAKDOWN
                ),
                Metric("breakdown task.enqueue/floor", "task_enqueue_to_floor", "ratio"),
            ],
            {"transaction": "one per job", "block": BREAKDOWN_BLOCK, "variants": BREAKDOWN},
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args.dsn)
    chosen = [
        w
        for w in workloads(args)
        if args.only == w.name or (args.only is None and w.name not in ON_REQUEST)
    ]
    table: list[tuple[str, int, int, dict[str, Any], str, str]] = []
    records: list[dict[str, Any]] = []
    failed = False
    for workload in chosen:
        print(f"{workload.name}: warm-up ({workload.warmup_jobs} jobs)", flush=True)
        source_before = source_fingerprint()
        warmup = workload.run(workload.warmup_jobs)
        if warmup.error is not None:
            print(f"  warm-up FAILED: {warmup.error}", flush=True)
        runs: list[Run] = []
        for i in range(args.repeats):
            load = os.getloadavg()[0]
            run = workload.run(workload.jobs)
            run.details["loadavg_1m_before"] = load
            runs.append(run)
            shown = ", ".join(f"{k}={fmt(v)}" for k, v in run.metrics.items())
            print(
                f"  run {i + 1}/{args.repeats}: {'FAILED: ' + run.error if run.error else shown}",
                flush=True,
            )
        source_after = source_fingerprint()
        if source_after != source_before:
            print(f"  warning: library sources changed while {workload.name} ran", flush=True)
        errors = [r.error for r in runs if r.error is not None]
        failed = failed or bool(errors)
        metrics: dict[str, Any] = {}
        for metric in workload.metrics:
            stats = summarise(runs, metric.key)
            if errors:
                stats["status"] = "FAILED"
            metrics[metric.key] = {"unit": metric.unit, **stats}
            note = f"{len(errors)}/{len(runs)} runs failed" if errors else ""
            if workload.name == "drain" and metric.key == "jobs_per_s_db_span" and not errors:
                note = drain_note(runs)
            table.append((metric.label, workload.jobs, len(runs), stats, metric.unit, note))
        records.append(
            {
                "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "system": "pgqueue",
                "workload": workload.name,
                "status": "FAILED" if errors else "ok",
                "jobs": workload.jobs,
                "repeats": args.repeats,
                "warmup_jobs": workload.warmup_jobs,
                "params": workload.params,
                "metrics": metrics,
                "runs": [
                    {"metrics": r.metrics, "details": r.details, "error": r.error} for r in runs
                ],
                "source_sha256_before": source_before,
                "source_changed_during_run": source_after != source_before,
                **env,
            }
        )
    print_table(env, table)
    if not args.no_save and records:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        with RESULTS_FILE.open("a", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record, default=str) + "\n")
        print(f"appended {len(records)} result lines to {RESULTS_FILE.relative_to(ROOT)}")
    if args.profile_drain is not None and args.only in (None, "drain"):
        profiled = drain_run(
            args.dsn,
            args.jobs,
            args.concurrency,
            profile=args.profile_drain,
            worker_args=shlex.split(args.worker_args),
            async_task=args.async_task,
            paused=args.pause_queue,
        )
        if profiled.error is not None:
            print(f"profiled drain run FAILED: {profiled.error}")
        else:
            print(
                f"profiled drain run (py-spy attached, not a result):"
                f" {fmt(profiled.metrics['jobs_per_s_db_span'])} jobs/s by DB span"
            )
            print_profile(args.profile_drain)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
