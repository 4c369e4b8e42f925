"""Flow control benchmarks (DESIGN.md section 8, issue 12): fairness, rate accuracy and the
cost of a concurrency limit. Figures, never assertions; compare within one run (the
machine's speed swings between runs), so the variants alternate (A B A B).

Every run gets a scratch database (see bench_pgqueue.scratch_database). All times come from
the jobs' own rows (created_at, started_at, finished_at: the database clock).

Usage:
    python benchmarks/bench_flow.py [--dsn DSN] [--only fairness|rate|concurrency]
        [--big 100000] [--groups 50] [--small 100] [--rate-seconds 60] [--drain 20000]
        [--repeats 2] [--claim-size 100]

- fairness: group A enqueues --big jobs, then --groups groups enqueue --small each; one
  worker process, concurrency 10, draining. Plain (FIFO) queue against `fair=True`: when the
  last small-group job finished, how much of A was done by then, the small jobs' p50/p99
  wait (started_at - created_at), and the whole drain's rate.
- rate: 2 worker processes on a queue limited to 200/s with one group limited to 20/s, for
  --rate-seconds: the most starts in any 1 s window (from started_at) and the sustained rate.
- concurrency: drain --drain no-op jobs with `concurrency=50` on the queue against no limit
  (one process, -c 50).
- claim-loop (only by name): the fairness layout drained by one connection in a loop of
  --claim-size claims, each recording the previous claim's jobs completed (as a worker's
  claim carries its successes): `claim_limited` on the fair queue against the plain claim
  (job_claim_one, continuing after the previous claim). Reports the server backend's CPU
  per job (read from /proc, so only with the server on this machine) and the claims' wall
  time: the claim's own cost, without a worker's.
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
import uuid
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


# --- the claim alone --------------------------------------------------------------------


def _backend_cpu(pid: int) -> float | None:
    """User plus system CPU seconds of a server backend on this machine, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def claim_loop_run(
    admin: str, fair: bool, size: int, big: int, groups: int, small: int
) -> dict[str, Any]:
    with scratch_database(admin) as dsn:
        app = _setup(dsn)
        if fair:
            app.configure_queue("exports", fair=True)
        app.enqueue_many(TASK, ({"n": i} for i in range(big)), queue="exports", group_key="A")
        for g in range(groups):
            app.enqueue_many(
                TASK, ({"n": i} for i in range(small)), queue="exports", group_key=f"s{g:03}"
            )
        queries = app.queries
        app.close()
        _analyze(dsn)
        worker = uuid.uuid4()
        done: list[tuple[int, str]] = []
        cursor: tuple[Any, ...] | None = None
        total = claims = 0
        spent = 0.0
        with psycopg.connect(dsn, autocommit=True) as conn:
            pid = _one(conn, "SELECT pg_backend_pid()")[0]
            cpu_before = _backend_cpu(pid)
            while True:
                params: dict[str, Any] = {
                    "queues": ["exports"],
                    "queue": "exports",
                    "worker_id": worker,
                    "limit": size,
                    "start": size,
                    "ids": "{" + ",".join(str(i) for i, _ in done) + "}",
                    "leases": "{" + ",".join(lease for _, lease in done) + "}",
                    "results": "[" + ",".join("null" for _ in done) + "]",
                    "began": "{}",
                    "done_channel": "bench_done",
                    "suspects": False,
                    "quarantine": 2,
                }
                if fair:
                    query = queries["job_claim_limited"]
                elif cursor is None:
                    query = queries["job_claim_one"]
                else:
                    query = queries["job_claim_after_one"]
                    params.update(
                        after_priority=cursor[0], after_run_at=cursor[1], after_id=cursor[2]
                    )
                start = time.perf_counter()
                rows = conn.execute(query, params).fetchall()
                spent += time.perf_counter() - start
                claims += 1
                got = [r for r in rows if r[0]]
                done = [(r[1], r[7]) for r in got]
                total += len(got)
                if not fair:
                    # Continue after the last row in claim order; from the front once dry.
                    cursor = (got[-1][12], got[-1][13], got[-1][1]) if got else None
                if not got and (fair or params.get("after_id") is None):
                    break
            cpu_after = _backend_cpu(pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return {
        "variant": "fair claim_limited" if fair else "plain job_claim_one",
        "claim_size": size,
        "jobs": total,
        "claims": claims,
        "backend_cpu_us_per_job": None if cpu is None else cpu / total * 1e6,
        "claim_wall_us_per_job": spent / total * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN", DEFAULT_DSN))
    parser.add_argument("--only", choices=("fairness", "rate", "concurrency", "claim-loop"))
    parser.add_argument("--big", type=int, default=100_000)
    parser.add_argument("--groups", type=int, default=50)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--rate-seconds", type=float, default=60.0)
    parser.add_argument("--drain", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--claim-size", type=int, default=100, help="claim-loop: jobs per claim")
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
    if args.only == "claim-loop":
        for _ in range(args.repeats):
            for fair in (False, True):
                report(
                    "claim-loop",
                    claim_loop_run(
                        args.dsn, fair, args.claim_size, args.big, args.groups, args.small
                    ),
                )
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
