"""Side-by-side drain benchmark: pgqueue against Procrastinate, PgQueuer and Celery.

Each peer is installed into its own virtualenv under benchmarks/.venvs/<peer> (created on
first use, reused afterwards) and driven by benchmarks/peer_apps/<peer>_app.py in that venv.
For every run: a fresh scratch database (Celery: a fresh Redis queue), N no-op jobs taking
one small JSON argument pre-inserted with the peer's bulk API, then ONE worker process with
concurrency 10. jobs/s is N over the time from spawning the worker to the last job's
completion (start-up included, the same for every library). A run whose completed count is
not N, or whose worker ran a job twice or missed one, is FAILED rather than timed. pgqueue
runs through bench_pgqueue.drain_run. A peer that fails to install or run is reported as
FAILED with the reason; it does not stop the others.

Usage:
    python benchmarks/peers.py [--jobs 20000] [--repeats 3] [--only pgqueue,pgqueuer,...]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from psycopg.conninfo import conninfo_to_dict

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

from bench_pgqueue import (  # noqa: E402
    DEFAULT_DSN,
    RESULTS_FILE,
    ROOT,
    SUBPROCESS_TIMEOUT,
    Run,
    analyze,
    drain_run,
    environment,
    scratch_database,
    summarise,
)

VENVS = BENCH_DIR / ".venvs"
APPS = BENCH_DIR / "peer_apps"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
#: Bound on a peer's virtualenv creation plus pip install.
INSTALL_TIMEOUT = 600.0
METRIC = "jobs_per_s_spawn_to_last"


@dataclass
class Peer:
    name: str
    requirements: list[str]
    distribution: str  # whose version is reported
    backend: str  # "postgres" or "redis"


PEERS = [
    Peer("procrastinate", ["procrastinate", "psycopg[binary]"], "procrastinate", "postgres"),
    Peer("pgqueuer", ["pgqueuer", "asyncpg"], "pgqueuer", "postgres"),
    Peer("celery", ["celery[redis]"], "celery", "redis"),
]
LIBRARIES = ["pgqueue", *(p.name for p in PEERS)]


class PeerError(Exception):
    """A peer could not be installed or run; the message is the reason shown in the table."""


def tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --- virtualenvs -------------------------------------------------------------------------


def venv_python(peer: Peer) -> Path:
    return VENVS / peer.name / "bin" / "python"


def ensure_venv(peer: Peer) -> str:
    """Create (if needed) the peer's virtualenv, install it, and return its version."""
    python = venv_python(peer)
    steps: list[list[str]] = []
    if not python.exists():
        steps.append([sys.executable, "-m", "venv", str(VENVS / peer.name)])
    steps.append(
        [
            str(python),
            *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *peer.requirements,
        ]
    )
    for command in steps:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"install timed out after {INSTALL_TIMEOUT:.0f} s") from exc
        if done.returncode != 0:
            raise PeerError(f"install failed ({' '.join(command[:4])}...):\n{tail(done.stderr)}")
    done = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))",
            peer.distribution,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise PeerError(f"cannot read the installed version:\n{tail(done.stderr)}")
    return done.stdout.strip()


# --- runs --------------------------------------------------------------------------------


def redis_reachable(url: str) -> str | None:
    """None if a Redis server answers PING at `url`, else why not."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or 6379), timeout=3
        ) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return f"Redis not reachable at {url}: {exc}"
    return None if reply.startswith(b"+PONG") else f"Redis at {url} answered {reply!r}"


def as_url(conninfo: str) -> str:
    """A postgresql:// URL for a key=value conninfo: asyncpg (PgQueuer) only takes URLs."""
    params = conninfo_to_dict(conninfo)
    user = quote(str(params.get("user", "")), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(str(password), safe='')}@" if password else f"{user}@" if user else ""
    host = str(params.get("host", "localhost"))
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{auth}{host}{port}/{quote(str(params.get('dbname', '')), safe='')}"


def run_app(peer: Peer, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the peer's app script in its venv; returns the process and its spawn time."""
    command = [str(venv_python(peer)), str(APPS / f"{peer.name}_app.py"), *args]
    spawned = time.time()
    try:
        done = subprocess.run(
            command,
            cwd=BENCH_DIR,
            capture_output=True,
            text=True,
            timeout=SUBPROCESS_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"{args[0]} did not finish within {SUBPROCESS_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        raise PeerError(f"{args[0]} exited with {done.returncode}:\n{tail(done.stderr)}")
    return done, spawned


def last_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    for line in reversed(done.stdout.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    raise PeerError(f"no JSON result on stdout:\n{tail(done.stdout)}\n{tail(done.stderr)}")


def peer_drain(peer: Peer, target: str, jobs: int, concurrency: int) -> Run:
    enqueued = last_json(run_app(peer, "enqueue", target, str(jobs))[0])
    if enqueued.get("enqueued") != jobs:
        return Run(error=f"enqueue reported {enqueued}, expected {jobs}")
    if peer.backend != "redis":
        analyze(target)
    done, spawned = run_app(peer, "work", target, str(jobs), str(concurrency))
    result = last_json(done)
    details = {
        "executions": result["executions"],
        "distinct": result["distinct"],
        "completed": result["completed"],
        "db_states": result.get("db_states"),
    }
    if not (result["executions"] == result["distinct"] == result["completed"] == jobs):
        return Run(details=details, error=f"not exactly-once: {jobs} enqueued, got {details}")
    span = result["last_done"] - spawned
    details |= {
        "spawn_to_last_completion_s": span,
        "startup_s": result["first_start"] - spawned,
        "first_to_last_s": result["last_done"] - result["first_start"],
    }
    return Run(metrics={METRIC: jobs / span}, details=details)


def one_run(library: str, args: argparse.Namespace) -> Run:
    """One timed drain of `library`; never raises for the library's own failures."""
    if library == "pgqueue":
        run = drain_run(args.dsn, args.jobs, args.concurrency)
        if run.error is None:
            run.metrics[METRIC] = args.jobs / run.details["spawn_to_last_completion_s"]
        return run
    peer = next(p for p in PEERS if p.name == library)
    try:
        if peer.backend == "redis":
            target = f"{args.redis}#bench_{secrets.token_hex(6)}"
            return peer_drain(peer, target, args.jobs, args.concurrency)
        with scratch_database(args.dsn) as dsn:
            return peer_drain(peer, as_url(dsn), args.jobs, args.concurrency)
    except PeerError as exc:
        return Run(error=str(exc))
    except Exception as exc:  # a broken peer must not stop the others
        return Run(error=f"{type(exc).__name__}: {exc}")


# --- main --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dsn",
        default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN),
        help="a database to connect to for CREATE/DROP DATABASE (default: %(default)s)",
    )
    parser.add_argument(
        "--redis", default=os.environ.get("PGQUEUE_BENCH_REDIS", DEFAULT_REDIS), help="for Celery"
    )
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs drained per run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per library")
    parser.add_argument("--concurrency", type=int, default=10, help="worker concurrency")
    parser.add_argument(
        "--only",
        default=",".join(LIBRARIES),
        help="comma-separated libraries to run (default: %(default)s)",
    )
    parser.add_argument("--no-save", action="store_true", help="do not append to results.jsonl")
    args = parser.parse_args(argv)
    for name in ("jobs", "repeats", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    args.libraries = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(args.libraries) - set(LIBRARIES)
    if unknown:
        parser.error(f"unknown libraries {sorted(unknown)}; choose from {LIBRARIES}")
    return args


def bench_library(library: str, args: argparse.Namespace, version: str) -> dict[str, Any]:
    runs: list[Run] = []
    for i in range(args.repeats):
        load = os.getloadavg()[0]
        run = one_run(library, args)
        run.details["loadavg_1m_before"] = load
        runs.append(run)
        shown = f"{run.metrics[METRIC]:,.1f} jobs/s" if run.error is None else "FAILED: "
        print(f"  run {i + 1}/{args.repeats}: {shown}{run.error or ''}", flush=True)
        if run.error is not None and library != "pgqueue" and "exactly-once" not in run.error:
            break  # an install/start-up failure will not fix itself on the next repeat
    errors = [r.error for r in runs if r.error is not None]
    return {
        "library": library,
        "version": version,
        "status": "FAILED" if errors else "ok",
        "reason": errors[0] if errors else None,
        "stats": summarise(runs, METRIC),
        "runs": [{"metrics": r.metrics, "details": r.details, "error": r.error} for r in runs],
    }


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    base = next(
        (
            r["stats"]["median"]
            for r in results
            if r["library"] == "pgqueue" and r["status"] == "ok"
        ),
        None,
    )
    print()
    print(
        f"drain: {args.jobs} no-op jobs, one worker process, concurrency {args.concurrency},"
        f" {args.repeats} repeats; jobs/s from worker spawn to last completion"
    )
    header = (
        f"{'library':<14} {'version':<10} {'median jobs/s':>14} {'(min, max)':>22}"
        f" {'vs pgqueue':>11}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if r["status"] != "ok":
            reason = (r["reason"] or "").splitlines()[0]
            print(f"{r['library']:<14} {r['version']:<10} {r['status']:>14}  {reason}")
            continue
        s = r["stats"]
        spread = f"({s['min']:,.1f}, {s['max']:,.1f})"
        ratio = f"{s['median'] / base:.2f}x" if base else "-"
        print(
            f"{r['library']:<14} {r['version']:<10} {s['median']:>14,.1f} {spread:>22} {ratio:>11}"
        )
    print()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args.dsn)
    results: list[dict[str, Any]] = []
    for library in args.libraries:
        print(f"{library}:", flush=True)
        if library == "pgqueue":
            results.append(bench_library(library, args, env["pgqueue_version"]))
            continue
        peer = next(p for p in PEERS if p.name == library)
        reason = redis_reachable(args.redis) if peer.backend == "redis" else None
        if reason is not None:
            print(f"  skipped: {reason}", flush=True)
            results.append(
                {"library": library, "version": "-", "status": "SKIPPED", "reason": reason}
            )
            continue
        try:
            version = ensure_venv(peer)
        except PeerError as exc:
            print(f"  FAILED to install: {exc}", flush=True)
            results.append(
                {"library": library, "version": "-", "status": "FAILED", "reason": str(exc)}
            )
            continue
        print(
            f"  {peer.distribution} {version} in {VENVS.relative_to(ROOT) / peer.name}", flush=True
        )
        results.append(bench_library(library, args, version))
    print_table(results, args)
    if not args.no_save:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with RESULTS_FILE.open("a", encoding="utf-8") as out:
            for r in results:
                record = {
                    "timestamp": stamp,
                    "system": r["library"],
                    "workload": "peers-drain",
                    "jobs": args.jobs,
                    "repeats": args.repeats,
                    "params": {"concurrency": args.concurrency, "worker_processes": 1},
                    **r,
                    **env,
                }
                out.write(json.dumps(record, default=str) + "\n")
        print(f"appended {len(results)} result lines to {RESULTS_FILE.relative_to(ROOT)}")
    return 1 if any(r["status"] == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
