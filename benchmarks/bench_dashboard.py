"""The dashboard's jobs page on a table of a million finished jobs: time to first byte of
the first page and of deep pages (keyset, `before=`), with the plans of the listing query.

Usage:
    python benchmarks/bench_dashboard.py [--dsn ADMIN_DSN] [--jobs 1000000] [--repeats 20]

Without --dsn (or $PGQUEUE_BENCH_DSN) a throwaway cluster is started, as the tests do. The
rows are inserted in one INSERT ... SELECT (finished jobs of four queues, one in a thousand
failed, spread evenly over `--hours`), then VACUUM ANALYZE, then the dashboard is served by
uvicorn on 127.0.0.1 and each page is fetched `--repeats` times after one warm-up; reported:
median, min and max of the time from sending the request to the first byte of the response,
once with the statistics read per request and once shared between requests (the default),
then EXPLAIN ANALYZE of the listing query.
"""

from __future__ import annotations

import argparse
import http.client
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pgqueue  # noqa: E402
from pgqueue.web import create_app  # noqa: E402
from tests.pgcluster import start_cluster  # noqa: E402
from tests.webserver import serve  # noqa: E402

FILL = """
INSERT INTO pgqueue.jobs (task, queue, args, state, attempt, max_attempts, result, errors,
                          created_at, run_at, started_at, finished_at)
SELECT 'bench.export', 'q' || (i %% 4), jsonb_build_object('n', i, 'customer', i %% 997),
       CASE WHEN i %% 1000 = 0 THEN 'failed' ELSE 'completed' END, 1, 1,
       CASE WHEN i %% 1000 = 0 THEN NULL ELSE '{"ok": true}'::jsonb END,
       CASE WHEN i %% 1000 = 0
            THEN '[{"type": "ValueError", "message": "bad row", "attempt": 1}]'::jsonb
            ELSE '[]'::jsonb END,
       t, t, t, t + interval '20 ms'
  FROM generate_series(1, %(jobs)s::integer) AS i,
       LATERAL (SELECT now() - %(span)s::interval
                       + i * (%(span)s::interval / %(jobs)s::integer)) AS at(t)
"""


def ttfb(url: str) -> float:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    start = time.perf_counter()
    conn.request("GET", path)
    response = conn.getresponse()  # returns once the status line and headers are in
    first = time.perf_counter() - start
    assert response.status == 200, (url, response.status)
    response.read()
    conn.close()
    return first


def explain(dsn: str, app: pgqueue.App, name: str, params: dict[str, Any], generic: bool) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if generic:
            conn.execute("SET plan_cache_mode = force_generic_plan")
        rows = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + app.queries[name], params
        ).fetchall()
    return "\n".join(r[0] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("PGQUEUE_BENCH_DSN"))
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--hours",
        type=float,
        default=24.0,
        help="the jobs finished evenly over this many hours before now (default 24: the"
        " default retention of completed jobs is a day)",
    )
    args = parser.parse_args()
    cluster = None
    admin = args.dsn
    if admin is None:
        cluster = start_cluster()
        admin = cluster.dsn
    name = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = make_conninfo(admin, dbname=name)
    try:
        app = pgqueue.App(dsn)
        app.migrate()
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(FILL, {"jobs": args.jobs, "span": f"{args.hours} hours"})
            conn.execute("VACUUM ANALYZE pgqueue.jobs")
            size = conn.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('pgqueue.jobs'))"
            ).fetchone()
            version = conn.execute("SHOW server_version").fetchone()
        print(
            f"{args.jobs:,} jobs finished over {args.hours:g} h inserted and analyzed in"
            f" {time.perf_counter() - started:.1f} s; table and indexes"
            f" {size[0] if size else '?'};"
            f" PostgreSQL {version[0] if version else '?'}"
        )
        oldest_page_bound = 60  # the last page: ids below 60
        pages = {
            "first page": "/jobs",
            "deep page (before=500000)": "/jobs?before=500000",
            "last page (before=60)": f"/jobs?before={oldest_page_bound}",
            "newer page (after=500000)": "/jobs?after=500000",
            "first page, queue=q2": "/jobs?queue=q2",
            "deep page, queue=q2 (before=500000)": "/jobs?queue=q2&before=500000",
            "first page, state=failed (1 in 1000)": "/jobs?state=failed",
            "job page": "/job/777777",
            "overview": "/",
        }
        # Unshared (refresh=0): every request reads the statistics itself, the cost of one
        # viewer paging; shared (the default): reads shared for up to a second by viewers.
        for label_mode, refresh in (("unshared statistics", 0.0), ("shared (default)", 2.0)):
            with serve(create_app(app, refresh=refresh)) as base:
                print(f"\n{label_mode}\n\n| page | TTFB median ms | min | max |")
                print("|---|---:|---:|---:|")
                for label, path in pages.items():
                    ttfb(base + path)  # warm-up: pool connections, prepared statements
                    times = [ttfb(base + path) * 1000 for _ in range(args.repeats)]
                    print(
                        f"| {label} `{path}` | {statistics.median(times):.1f} |"
                        f" {min(times):.1f} | {max(times):.1f} |"
                    )
        base_params = {
            "queue": None,
            "task": None,
            "older_than": None,
            "newer_than": None,
            "limit": 51,
            "before": None,
            "after": None,
        }
        for label, name, extra, generic in (
            ("first page, generic plan", "job_list", {}, True),
            ("deep page before=500000, generic plan", "job_list", {"before": 500000}, True),
            ("deep page before=500000, custom plan", "job_list", {"before": 500000}, False),
            ("state=failed, generic plan", "job_list_failed", {}, True),
            ("state=failed, before=500000, generic", "job_list_failed", {"before": 500000}, True),
        ):
            print(f"\n### {label} ({name})\n```")
            print(explain(dsn, app, name, {**base_params, **extra}, generic))
            print("```")
        app.close()
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if cluster is not None:
            cluster.destroy()


if __name__ == "__main__":
    main()
