"""Flow control benchmarks (DESIGN.md section 8, issue 12): fairness, rate accuracy and the
cost of a concurrency limit. Figures, never assertions; compare within one run (the
machine's speed swings between runs), so the variants alternate (A B A B).

Every run gets a scratch database (see bench_pgqueue.scratch_database). All times come from
the jobs' own rows (created_at, started_at, finished_at: the database clock).

Usage:
    python benchmarks/bench_flow.py [--dsn DSN] [--only fairness|rate|concurrency]
        [--big 100000] [--groups 50] [--small 100] [--rate-seconds 60] [--drain 20000]
        [--repeats 2]

- fairness: group A enqueues --big jobs, then --groups groups enqueue --small each; one
  worker process, concurrency 10, draining. Plain (FIFO) queue against `fair=True`: when the
  last small-group job finished, how much of A was done by then, the small jobs' p50/p99
  wait (started_at - created_at), and the whole drain's rate.
- rate: 2 worker processes on a queue limited to 200/s with one group limited to 20/s, for
  --rate-seconds: the most starts in any 1 s window (from started_at) and the sustained rate.
- concurrency: drain --drain no-op jobs with `concurrency=50` on the queue against no limit
  (one process, -c 50).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

import pgqueue

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_pgqueue import DEFAULT_DSN, scratch_database

ROOT = Path(__file__).resolve().parent.parent
WORKER_APP = "benchmarks.bench_app:app"
TASK = "bench.noop"


def _worker(dsn: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "pgqueue.cli", "worker", WORKER_APP, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> tuple[Any, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(row)


def _setup(dsn: str) -> pgqueue.App:
    app = pgqueue.App(dsn)
    app.migrate()
    return app


def _analyze(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE pgqueue.jobs")


# --- fairness ---------------------------------------------------------------------------


def fairness_run(admin: str, fair: bool, big: int, groups: int, small: int) -> dict[str, Any]:
    with scratch_database(admin) as dsn:
        app = _setup(dsn)
        if fair:
            app.configure_queue("exports", fair=True)
        app.enqueue_many(TASK, ({"n": i} for i in range(big)), queue="exports", group_key="A")
        for g in range(groups):
            app.enqueue_many(
                TASK, ({"n": i} for i in range(small)), queue="exports", group_key=f"s{g:03}"
            )
        app.close()
        _analyze(dsn)
        start = time.perf_counter()
        # The fair queue's worker serves it by name (only the limited claim runs); the plain
        # one serves every queue, the same claims as `-q exports` (the only queue with jobs)
        # since job_claim.sql's plans hold for both, and comparable with runs from before.
        queue = ["-q", "exports"] if fair else []
        proc = _worker(dsn, *queue, "-c", "10", "--burst")
        _, err = proc.communicate(timeout=1800)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(err[-2000:])
        with psycopg.connect(dsn, autocommit=True) as conn:
            first, last, done = _one(
                conn,
                "SELECT min(started_at), max(finished_at), count(*) FILTER"
                " (WHERE state = 'completed') FROM pgqueue.jobs",
            )
            small_last, p50, p99 = _one(
                conn,
                """SELECT max(finished_at),
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                              started_at - created_at)),
                          percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM
                              started_at - created_at))
                     FROM pgqueue.jobs WHERE group_key <> 'A'""",
            )
            (a_done,) = _one(
                conn,
                "SELECT count(*) FROM pgqueue.jobs WHERE group_key = 'A' AND finished_at <= %s",
                [small_last],
            )
    total = big + groups * small
    span = (last - first).total_seconds()
    return {
        "variant": "fair" if fair else "plain (FIFO)",
        "completed": done,
        "drain_jobs_per_s": total / span,
        "wall_s": wall,
        "last_small_done_s": (small_last - first).total_seconds(),
        "share_of_A_done_then": a_done / big,
        "small_wait_p50_s": p50,
        "small_wait_p99_s": p99,
    }


# --- rate accuracy ----------------------------------------------------------------------


def rate_run(admin: str, seconds: float) -> dict[str, Any]:
    with scratch_database(admin) as dsn:
        app = _setup(dsn)
        app.configure_queue("api", rate="200/s", group_rate="20/s")
        need = int(200 * seconds * 1.3)
        # The limited group's backlog first, in front of everything else in FIFO order.
        app.enqueue_many(TASK, ({"n": i} for i in range(need // 4)), queue="api", group_key="g20")
        app.enqueue_many(TASK, ({"n": i} for i in range(need)), queue="api")
        app.close()
        _analyze(dsn)
        procs = [_worker(dsn, "-q", "api", "-c", "20") for _ in range(2)]
        time.sleep(seconds + 2)  # start-up, then the measured period
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.communicate(timeout=60)
        with psycopg.connect(dsn, autocommit=True) as conn:
            window = """SELECT coalesce(max(n), 0) FROM (
                          SELECT count(*) OVER (ORDER BY started_at
                                 RANGE BETWEEN CURRENT ROW AND '1 second' FOLLOWING) AS n
                            FROM pgqueue.jobs WHERE started_at IS NOT NULL AND {where}) s"""
            (max_q,) = _one(conn, window.format(where="true"))
            (max_g,) = _one(conn, window.format(where="group_key = 'g20'"))
            first, last, n, ng = _one(
                conn,
                "SELECT min(started_at), max(started_at), count(*),"
                " count(*) FILTER (WHERE group_key = 'g20')"
                " FROM pgqueue.jobs WHERE started_at IS NOT NULL",
            )
            # Steady state: skip the first second (the start-up burst of the window).
            (steady,) = _one(
                conn,
                "SELECT count(*) FROM pgqueue.jobs WHERE started_at >= %s + interval '1 s'"
                " AND started_at < %s",
                [first, last],
            )
    span = (last - first).total_seconds()
    return {
        "processes": 2,
        "measured_s": span,
        "max_starts_any_1s_queue": max_q,
        "max_starts_any_1s_group": max_g,
        "sustained_per_s_queue": steady / max(span - 1, 1e-9),
        "sustained_per_s_group": ng / span,
        "starts": n,
    }


# --- concurrency overhead ---------------------------------------------------------------


def drain_run(admin: str, jobs: int, limited: bool) -> dict[str, Any]:
    with scratch_database(admin) as dsn:
        app = _setup(dsn)
        if limited:
            app.configure_queue("work", concurrency=50)
        app.enqueue_many(TASK, ({"n": i} for i in range(jobs)), queue="work")
        app.close()
        _analyze(dsn)
        queue = ["-q", "work"] if limited else []  # as in fairness_run
        proc = _worker(dsn, *queue, "-c", "50", "--burst")
        _, err = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(err[-2000:])
        with psycopg.connect(dsn, autocommit=True) as conn:
            first, last, done = _one(
                conn,
                "SELECT min(started_at), max(finished_at), count(*) FILTER"
                " (WHERE state = 'completed' AND attempt = 1) FROM pgqueue.jobs",
            )
    return {
        "variant": "concurrency=50" if limited else "no limit",
        "completed_once": done,
        "jobs_per_s": jobs / (last - first).total_seconds(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--only", choices=("fairness", "rate", "concurrency"))
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--rate-seconds", type=float, default=60.0)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    results: dict[str, list[dict[str, Any]]] = {}

    def report(name: str, row: dict[str, Any]) -> None:
        results.setdefault(name, []).append(row)
        print(name, json.dumps(row, default=str), flush=True)

    if args.only in (None, "fairness"):
        for _ in range(args.repeats):
            for fair in (False, True):
                report("fairness", fairness_run(args.dsn, fair, args.big, args.groups, args.small))
    if args.only in (None, "rate"):
        report("rate", rate_run(args.dsn, args.rate_seconds))
    if args.only in (None, "concurrency"):
        for _ in range(args.repeats):
            for limited in (False, True):
                report("concurrency", drain_run(args.dsn, args.drain, limited))
    if "concurrency" in results:
        rows = results["concurrency"]
        plain = statistics.median(r["jobs_per_s"] for r in rows if r["variant"] == "no limit")
        lim = statistics.median(r["jobs_per_s"] for r in rows if r["variant"] != "no limit")
        print(f"concurrency=50 drains at {lim / plain:.0%} of no limit")
    if "fairness" in results:
        rows = results["fairness"]
        plain = statistics.median(r["drain_jobs_per_s"] for r in rows if r["variant"] != "fair")
        fair = statistics.median(r["drain_jobs_per_s"] for r in rows if r["variant"] == "fair")
        print(f"fair drain at {fair / plain:.0%} of plain")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
