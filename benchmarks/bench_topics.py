"""The cost of a publish: fan-out to 1, 10 and 100 subscriptions, in jobs per second.

Every run gets a scratch database (created, migrated, dropped at the end). For each number
of subscriptions it times, after one untimed warm-up, `--repeats` runs of:

- `publish`: `app.publish(topic, args)` called `--publishes` times, each its own
  transaction on a pooled connection (one round trip: one `publish_jobs` call);
- `publish_many`: one `app.publish_many(topic, [...])` of `--messages` messages (one
  statement per chunk of 1,000 messages);

and, as the yardstick for the same number of jobs, plain enqueues of one task:
`enqueue` (one per job) and `enqueue_many` (bulk). Subscriptions are exact (`bench.topic`)
or wildcards (`bench.*`), each to its own task on one of 10 queues. The jobs table is emptied
between runs. `--defaults` also times plain bulk enqueue with and without the `topic`
column's default (the transaction-local setting publish uses), alternating, to show what the
default costs an enqueue that is not a publish.

Usage:
    python benchmarks/bench_topics.py [--dsn DSN] [--publishes N] [--messages N]
                                      [--repeats R] [--subscriptions 1,10,100] [--defaults]
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

import pgqueue

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _with_db(dsn: str, name: str) -> str:
    return psycopg.conninfo.make_conninfo(dsn, dbname=name)


def _median(f: Callable[[], float], repeats: int, reset: Callable[[], None]) -> list[float]:
    reset()
    f()  # warm-up, not reported
    times = []
    for _ in range(repeats):
        reset()
        times.append(f())
    return times


def _timed(f: Callable[[], Any]) -> float:
    start = time.perf_counter()
    f()
    return time.perf_counter() - start


def run(args: argparse.Namespace) -> None:
    name = f"bench_topics_{secrets.token_hex(4)}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _with_db(args.dsn, name)
    try:
        app = pgqueue.App(dsn)
        app.migrate()
        with psycopg.connect(dsn, autocommit=True) as db:
            version = db.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            print(f"PostgreSQL {version}; {args.publishes} publishes, {args.messages} messages")
            print(
                "| subscriptions | kind | publish jobs/s (publishes/s) | publish_many jobs/s"
                " | enqueue jobs/s | enqueue_many jobs/s |"
            )
            print("|---:|---|---:|---:|---:|---:|")

            def reset() -> None:
                db.execute("TRUNCATE pgqueue.jobs")

            for n in args.subscriptions:
                for kind, pattern in (("exact", "bench.topic"), ("wildcard", "bench.*")):
                    db.execute("TRUNCATE pgqueue.topic_subscriptions")
                    for i in range(n):
                        app.subscribe(pattern, f"bench.sub{i}", queue=f"q{i % 10}")
                    single = _median(
                        lambda: _timed(
                            lambda: [
                                app.publish("bench.topic", {"i": i}) for i in range(args.publishes)
                            ]
                        ),
                        args.repeats,
                        reset,
                    )
                    items = [{"i": i} for i in range(args.messages)]
                    bulk = _median(
                        lambda items=items: _timed(  # type: ignore[misc]
                            lambda: app.publish_many("bench.topic", items)
                        ),
                        args.repeats,
                        reset,
                    )
                    # The same number of jobs, enqueued plainly (one task, one queue).
                    jobs = args.publishes * n
                    plain = _median(
                        lambda jobs=jobs: _timed(  # type: ignore[misc]
                            lambda: [app.enqueue("bench.plain", {"i": i}) for i in range(jobs)]
                        ),
                        max(1, args.repeats if jobs <= 2000 else 1),
                        reset,
                    )
                    many = [{"i": i} for i in range(args.messages * n)]
                    plain_bulk = _median(
                        lambda many=many: _timed(  # type: ignore[misc]
                            lambda: app.enqueue_many("bench.plain", many)
                        ),
                        args.repeats,
                        reset,
                    )
                    s, b = statistics.median(single), statistics.median(bulk)
                    p, pb = statistics.median(plain), statistics.median(plain_bulk)
                    print(
                        f"| {n} | {kind} | {args.publishes * n / s:,.0f}"
                        f" ({args.publishes / s:,.0f}) | {args.messages * n / b:,.0f}"
                        f" | {jobs / p:,.0f} | {args.messages * n / pb:,.0f} |",
                        flush=True,
                    )
            if args.defaults:
                _defaults_cost(app, db, args.repeats)
        app.close()
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _defaults_cost(app: pgqueue.App, db: psycopg.Connection[Any], repeats: int) -> None:
    """Plain bulk enqueue of 5,000 jobs, with and without the topic column's default,
    alternating (ABAB) so that drift hits both alike."""
    items = [{"i": i} for i in range(5000)]
    default = "nullif(current_setting('pgqueue.topic', true), '')"
    results: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(max(repeats, 5)):
        for mode in ("with", "without"):
            clause = f"SET DEFAULT {default}" if mode == "with" else "DROP DEFAULT"
            db.execute(f"ALTER TABLE pgqueue.jobs ALTER COLUMN topic {clause}")
            db.execute("TRUNCATE pgqueue.jobs")
            results[mode].append(_timed(lambda: app.enqueue_many("bench.plain", items)))
    db.execute(f"ALTER TABLE pgqueue.jobs ALTER COLUMN topic SET DEFAULT {default}")
    for mode, times in results.items():
        print(
            f"enqueue_many of 5,000, {mode} the topic default: median"
            f" {statistics.median(times) * 1e6 / 5000:.2f} us/job"
            f" (min {min(times) * 1e6 / 5000:.2f}) over {len(times)} runs"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--publishes", type=int, default=300)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--subscriptions",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[1, 10, 100],
    )
    parser.add_argument("--defaults", action="store_true")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
