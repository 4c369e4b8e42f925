"""Where a pickup's latency and a worker's start-up go: a real `pgqueue worker` process with
its steps stamped.

The worker is `pgqueue worker benchmarks.bench_app:app` started through this file, which
wraps a few seams of the running code with wall-clock stamps (no change to what they do):

- `latency`: an idle worker (concurrency 10), jobs enqueued one at a time at --rate after
  100 warm-up jobs; for each job, from the enqueue's COMMIT returning to: the NOTIFY handled
  (the Producer nudged), the claim statement that brought the job sent, its reply, and the
  task's own start (the stamp task's result). Percentiles over --jobs jobs.
- `startup`: a burst worker on a backlog of 2,000 no-op jobs; from the spawn to: the
  interpreter up, `pgqueue.cli` imported, each start-up step done (with its own duration),
  the first claim that brought jobs back.

Usage:
    python benchmarks/stages.py latency [--jobs 1000] [--rate 100]
    python benchmarks/stages.py startup [--runs 3]

A scratch database on --dsn's server is created and dropped. Figures, never assertions.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = "benchmarks.bench_app:app"


# --- inside the worker process ------------------------------------------------------------------


def _worker(kind: str, argv: list[str]) -> None:
    """Run `pgqueue worker` with the seams of `kind` stamped; stamps go to $STAGES_OUT."""
    spawned = float(os.environ["STAGES_SPAWNED"])
    stamps: dict[str, list[Any]] = {}

    def mark(name: str, value: Any = None) -> None:
        stamps.setdefault(name, []).append(time.time() if value is None else value)

    mark("interpreter up")
    import pgqueue.cli

    from pgqueue._db import worker as dbw
    from pgqueue._runtime import heartbeat, maintenance, producer, startup, worker

    mark("pgqueue.cli imported")

    def timed(owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.time()
            result = await original(*args, **kwargs)
            mark(label, [time.time(), time.time() - began])
            return result

        setattr(owner, attr, wrapper)

    claim = dbw.WorkerDb.claim

    async def stamped_claim(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent = time.time()
        result = await claim(self, *args, **kwargs)
        mark("claim", [sent, time.time(), len(result.jobs)])
        return result

    dbw.WorkerDb.claim = stamped_claim  # type: ignore[method-assign]
    if kind == "latency":
        nudge = producer.Producer.nudge

        def stamped_nudge(self: Any) -> None:
            mark("nudge")
            nudge(self)

        producer.Producer.nudge = stamped_nudge  # type: ignore[method-assign]
    else:
        timed(dbw.WorkerDb, "open", "db.open")
        timed(heartbeat.Heartbeat, "register", "heartbeat.register")
        timed(worker.Worker, "announce", "announce")
        timed(maintenance.Analyzer, "run_once", "analyzer.run_once")
        timed(startup, "warn_unknown_queues", "warn_unknown_queues")

    def dump() -> None:
        Path(os.environ["STAGES_OUT"]).write_text(json.dumps({"spawned": spawned, **stamps}))

    import atexit

    atexit.register(dump)
    sys.argv = ["pgqueue", "worker", APP, *argv]
    pgqueue.cli.main()


# --- the driver ---------------------------------------------------------------------------------


def _database(server: str) -> str:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS pgqueue_stages WITH (FORCE)")
        conn.execute("CREATE DATABASE pgqueue_stages")
    dsn = server.rsplit("/", 1)[0] + "/pgqueue_stages"
    import pgqueue

    pgqueue.App(dsn).migrate()
    return dsn


def _spawn(kind: str, dsn: str, out: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        PGQUEUE_DSN=dsn,
        PYTHONPATH=str(ROOT),
        STAGES_OUT=str(out),
        STAGES_SPAWNED=repr(time.time()),
    )
    command = [sys.executable, __file__, f"--worker-{kind}", "--", *argv]
    return subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)


def _q(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[int(p * (len(ordered) - 1))] if ordered else float("nan")


def latency(dsn: str, jobs: int, rate: float) -> None:
    import psycopg

    import pgqueue

    app = pgqueue.App(dsn)
    stamp = app.task(name="bench.stamp")(lambda n: None)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stamps.json"
        proc = _spawn("latency", dsn, out, ["-c", "10", "--shutdown-grace", "10"])
        time.sleep(3)  # ready: the worker's own start-up is the other mode's business
        commits: dict[int, float] = {}
        for first, count in ((0, 100), (100, jobs)):
            began = time.perf_counter()
            for i, n in enumerate(range(first, first + count)):
                delay = began + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                stamp.enqueue(n=n)
                commits[n] = time.time()  # enqueue returns after its COMMIT
            time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        stamps = json.loads(out.read_text())
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT (args->>'n')::int, result::float8 FROM pgqueue.jobs WHERE state = 'completed'"
        ).fetchall()
    nudges = sorted(stamps.get("nudge", []))
    claims = sorted(stamps["claim"], key=lambda c: c[1])
    replies = [c[1] for c in claims]
    parts: dict[str, list[float]] = {
        "commit -> task start": [],
        "commit -> NOTIFY handled": [],
        "NOTIFY handled -> claim sent": [],
        "claim round trip": [],
        "claim reply -> task start": [],
    }
    for n, started in rows:
        if n < 100:
            continue
        committed = commits[n]
        parts["commit -> task start"].append(started - committed)
        i = bisect.bisect_right(replies, started) - 1  # the claim that brought it
        sent, reply, _ = claims[i]
        parts["claim round trip"].append(reply - sent)
        parts["claim reply -> task start"].append(started - reply)
        j = bisect.bisect_right(nudges, sent) - 1
        if j >= 0:
            parts["commit -> NOTIFY handled"].append(nudges[j] - committed)
            parts["NOTIFY handled -> claim sent"].append(sent - nudges[j])
    print(f"latency: {jobs} jobs at {rate:g}/s, idle worker -c 10; ms")
    print(f"{'':30} {'p50':>7} {'p90':>7} {'p99':>7}")
    for name, values in parts.items():
        ms = [v * 1000 for v in values]
        print(f"{name:30} {_q(ms, 0.5):7.2f} {_q(ms, 0.9):7.2f} {_q(ms, 0.99):7.2f}")
    print(
        "claim statements per job, warm-up included (outcome writes, polls and the idle"
        f" worker's looks for rescued jobs too): {len(claims) / len(rows):.2f}"
    )


def startup(dsn: str, runs: int) -> None:
    import psycopg

    import pgqueue

    app = pgqueue.App(dsn)
    noop = app.task(name="bench.noop")(lambda n: None)
    for run in range(runs):
        noop.enqueue_many([{"n": i} for i in range(2000)])
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ANALYZE pgqueue.jobs")
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "stamps.json"
            proc = _spawn("startup", dsn, out, ["-c", "10", "--burst"])
            proc.wait(120)
            stamps = json.loads(out.read_text())
        spawned = stamps.pop("spawned")
        first = next(c for c in stamps.pop("claim") if c[2])
        print(f"start-up, run {run + 1}: ms since the spawn (the step's own ms)")
        events = [
            (t, name, None)
            for name in ("interpreter up", "pgqueue.cli imported")
            for t in stamps.pop(name)
        ]
        events += [(v[0], name, v[1]) for name, vs in stamps.items() for v in vs]
        events.append((first[1], "first claim with jobs back", first[1] - first[0]))
        for at, name, took in sorted(events):
            own = f" ({took * 1000:.1f})" if took is not None else ""
            print(f"  {(at - spawned) * 1000:8.1f}  {name}{own}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--worker-"):
        _worker(sys.argv[1].removeprefix("--worker-"), sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["latency", "startup"])
    parser.add_argument("--dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    dsn = _database(args.dsn)
    try:
        if args.mode == "latency":
            latency(dsn, args.jobs, args.rate)
        else:
            startup(dsn, args.runs)
    finally:
        import psycopg

        with psycopg.connect(args.dsn, autocommit=True) as conn:
            conn.execute("DROP DATABASE IF EXISTS pgqueue_stages WITH (FORCE)")


if __name__ == "__main__":
    main()
