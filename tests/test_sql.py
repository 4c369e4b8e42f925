"""The SQL seam: every named query prepares, and the claim query uses its partial index."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgqueue


def _as_prepared(query: str) -> tuple[str, list[str]]:
    """Turn %(name)s placeholders into $n so the server can PREPARE the text unchanged."""
    names: list[str] = []

    def repl(m: re.Match[str]) -> str:
        if m[1] not in names:
            names.append(m[1])
        return f"${names.index(m[1]) + 1}"

    return re.sub(r"%\((\w+)\)s", repl, query), names


def test_every_named_query_prepares(app: pgqueue.App, db: psycopg.Connection[Any]) -> None:
    names = app.queries.names()
    assert "job_claim_all" in names and len(names) >= 15
    for i, name in enumerate(names):
        # psycopg's own placeholder parsing: a stray '%' (in a comment, say) fails here.
        query = app.queries[name]
        placeholders = re.findall(r"%\((\w+)\)s", query)
        psycopg.ClientCursor(db).mogrify(query, dict.fromkeys(placeholders))
        text, _ = _as_prepared(query)
        db.execute(f"PREPARE q{i} AS {text}")  # raises on any syntax or name error
        db.execute(f"DEALLOCATE q{i}")


def test_every_named_query_fits_psycopgs_parse_cache(app: pgqueue.App) -> None:
    """psycopg keeps a query's parsed form only up to a length: past it, every execution
    parses the text again (the claim statement, with its comments, once cost a twentieth of
    a drain worker's CPU that way). Comments are stripped at load, quoted text kept."""
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

    from pgqueue._db.queries import strip_comments

    too_long = {
        name: len(app.queries[name])
        for name in app.queries.names()
        if len(app.queries[name].encode()) > MAX_CACHED_STATEMENT_LENGTH
    }
    assert not too_long
    assert "--" not in app.queries["job_claim_all"]
    assert strip_comments("SELECT '--x', \"a--b\" -- note\n\n  -- gone\nFROM t\n") == (
        "SELECT '--x', \"a--b\"\nFROM t\n"
    )


@pytest.mark.parametrize(
    ("query", "queues", "index"),
    [
        ("job_claim_one", ["small"], "jobs_claim_queue_idx"),  # past another queue's backlog
        # Several queues: no single index order fits; either claim index will do, never a scan.
        ("job_claim_some", ["small", "tiny"], "jobs_claim_queue_idx|jobs_claim_idx"),
        ("job_claim_all", None, "jobs_claim_idx"),  # every queue, in priority order
        ("job_claim_suspect_all", None, "jobs_suspect_idx|jobs_troubled_idx"),  # idle probe
        # Continuing after the previous claim: the row comparison positions the index scan.
        ("job_claim_after_one", ["small"], "jobs_claim_queue_idx"),
        ("job_claim_after_all", None, "jobs_claim_idx"),
        # Every queue but some: the all-queues order, the exclusion filtered on the index.
        ("job_claim_except", None, "jobs_claim_idx"),
        ("job_claim_after_except", None, "jobs_claim_idx"),
    ],
)
def test_claim_queries_use_their_partial_index(
    app: pgqueue.App,
    db: psycopg.Connection[Any],
    query: str,
    queues: list[str] | None,
    index: str,
) -> None:
    db.execute(
        "INSERT INTO pgqueue.jobs (task, state, finished_at)"
        " SELECT 't', 'completed', now() FROM generate_series(1, 20000)"
    )
    db.execute("SELECT pgqueue.enqueue('t', queue => 'big') FROM generate_series(1, 20000)")
    db.execute("SELECT pgqueue.enqueue('t', queue => 'small') FROM generate_series(1, 10)")
    db.execute("ANALYZE pgqueue.jobs")
    text, names = _as_prepared(app.queries[query])
    db.execute(sql.SQL("PREPARE claim AS {}").format(sql.SQL(text)))  # type: ignore[arg-type]
    db.execute("SET plan_cache_mode = force_generic_plan")  # the worst case for partial indexes
    params = {
        "limit": 10,
        "queues": queues,
        "queue": queues[0] if queues else None,
        "excluded": ["big"],
        "worker_id": "00000000-0000-0000-0000-000000000000",
        "ids": [],
        "leases": [],
        "results": [],
        "began": [],
        "start": 10,
        "done_channel": "pgqueue_done",
        "after_priority": 0,
        "after_run_at": datetime(2000, 1, 1, tzinfo=timezone.utc),
        "after_id": 0,
    }
    args = ", ".join(f"%({n})s" for n in names)
    with db.transaction(force_rollback=True):
        # EXPLAIN EXECUTE is a utility statement: its arguments must be literals, so bind
        # them client-side.
        cur = psycopg.ClientCursor(db)
        plan = "\n".join(r[0] for r in cur.execute(f"EXPLAIN EXECUTE claim({args})", params))
    assert any(name in plan for name in index.split("|")), plan
    assert "Seq Scan on jobs" not in plan, plan
    if "_after" in query:
        # The row comparison is an index condition (it positions the scan), never a filter
        # applied to rows the scan has already visited.
        uses = [line for line in plan.splitlines() if "ROW(run_at, id) > ROW(" in line]
        assert any("Index Cond" in line for line in uses), plan
        assert not any("Filter" in line for line in uses), plan


def _claim_plan(
    db: psycopg.Connection[Any], query: str, params: dict[str, Any], generic: bool
) -> str:
    """The plan of a claim statement: a custom plan (the literals in the text) or the generic
    one a prepared statement may switch to; rolled back, nothing is claimed."""
    with db.transaction(force_rollback=True):
        cur = psycopg.ClientCursor(db)
        if not generic:
            rows = cur.execute(f"EXPLAIN {query}", params).fetchall()
            return "\n".join(r[0] for r in rows)
        text, names = _as_prepared(query)
        db.execute(sql.SQL("PREPARE claim_plan AS {}").format(sql.SQL(text)))  # type: ignore[arg-type]
        db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        args = ", ".join(f"%({n})s" for n in names)
        try:
            rows = cur.execute(f"EXPLAIN EXECUTE claim_plan({args})", params).fetchall()
        finally:
            db.execute("DEALLOCATE claim_plan")
        return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("other_queue_paused", [False, True])
def test_claims_keep_their_index_when_one_queue_holds_every_job(
    app: pgqueue.App, db: psycopg.Connection[Any], other_queue_paused: bool
) -> None:
    """A worker for the one queue that holds (nearly) every job, `-q big` above all. The
    paused/limited check was an anti-join against `queues`: with the claim's `queue = 'big'`
    the planner inferred `queues.name = 'big'` too and estimated that the join removes
    every job (1 row left), so the LIMIT saved nothing and a Seq Scan of jobs plus a sort of
    the whole backlog looked cheaper than the index: 60-90 ms a claim at 100,000 jobs where
    the index reads ten rows. A paused queue anywhere (one row in `queues` matching the
    check) did the same to every claim of a single-queue database."""
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue) SELECT 't', 'big' FROM generate_series(1, 50000)"
    )
    if other_queue_paused:
        # Every job in one queue: by the statistics, the paused queue may well be that one.
        db.execute("INSERT INTO pgqueue.queues (name, paused) VALUES ('elsewhere', true)")
    else:
        db.execute("INSERT INTO pgqueue.jobs (task, queue) VALUES ('t', 'small')")
    db.execute("ANALYZE pgqueue.jobs")
    db.execute("ANALYZE pgqueue.queues")
    base: dict[str, Any] = {
        "limit": 10,
        "start": 10,
        "worker_id": "00000000-0000-0000-0000-000000000000",
        "ids": "{}",
        "leases": "{}",
        "results": "[]",
        "began": "{}",
        "done_channel": "pgqueue_done",
        "after_priority": 0,
        "after_run_at": datetime(2000, 1, 1, tzinfo=timezone.utc),
        "after_id": 0,
    }
    selections: dict[str, dict[str, Any]] = {
        "_one": {"queue": "big", "queues": ["big"]},
        "_some": {"queues": ["big", "small"]},
        "_all": {},
        "_except": {"excluded": ["small"]},
    }
    scans: dict[str, str] = {}  # every claim that does not read a claim index, its plan
    for kind, selection in selections.items():
        for query in (f"job_claim{kind}", f"job_claim_after{kind}"):
            if query not in app.queries.names():
                continue  # no continuation over several queues
            params = {"queue": None, "queues": None, "excluded": None, **base, **selection}
            for generic in (False, True):
                plan = _claim_plan(db, app.queries[query], params, generic)
                if "Seq Scan on jobs" in plan or not re.search(
                    r"Index Scan using jobs_claim(_queue)?_idx on jobs", plan
                ):
                    scans[f"{query} ({'generic' if generic else 'custom'})"] = plan
    assert not scans, "\n\n".join(f"{name}:\n{plan}" for name, plan in scans.items())


@pytest.mark.parametrize("query", ["job_claim_all", "job_fail_many"])
def test_outcomes_find_their_rows_by_primary_key(
    app: pgqueue.App, db: psycopg.Connection[Any], query: str
) -> None:
    """Outcomes are fenced by the lease alone, so nothing leads the planner to read
    jobs_running_idx end to end: while the xmin horizon is pinned, that index keeps an entry
    for every job claimed since, and a flush would visit all of them."""
    # Few running rows by the statistics (as in a live system, however bloated the index):
    # the case where a state test would send the planner through jobs_running_idx.
    db.execute("SELECT pgqueue.enqueue('t') FROM generate_series(1, 5000)")
    rows = db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', lease = gen_random_uuid(),"
        " worker_id = gen_random_uuid() WHERE id IN (SELECT id FROM pgqueue.jobs LIMIT 10)"
        " RETURNING id, lease::text"
    ).fetchall()
    db.execute("ANALYZE pgqueue.jobs")
    text, names = _as_prepared(app.queries[query])
    db.execute(sql.SQL("PREPARE outcome AS {}").format(sql.SQL(text)))  # type: ignore[arg-type]
    db.execute("SET plan_cache_mode = force_generic_plan")
    ids, leases = [r[0] for r in rows], [r[1] for r in rows]
    params: dict[str, Any] = {
        "limit": 0,
        "queues": None,
        "queue": None,
        "worker_id": "00000000-0000-0000-0000-000000000000",
        "ids": "{" + ",".join(map(str, ids)) + "}",
        "leases": "{" + ",".join(leases) + "}",
        "results": "[" + ",".join(["null"] * len(ids)) + "]",
        "began": "{}",
        "start": 0,
        "done_channel": "pgqueue_done",
        "states": ["failed"] * len(ids),
        "delays": [0.0] * len(ids),
        "errors": ["{}"] * len(ids),
    }
    if query == "job_fail_many":
        params["ids"], params["leases"], params["began"] = ids, leases, []
    args = ", ".join(f"%({n})s" for n in names)
    with db.transaction(force_rollback=True):
        cur = psycopg.ClientCursor(db)
        plan = "\n".join(r[0] for r in cur.execute(f"EXPLAIN EXECUTE outcome({args})", params))
    assert "jobs_pkey" in plan, plan
    assert "jobs_running_idx" not in plan, plan
    assert "Seq Scan on jobs" not in plan, plan


@pytest.mark.parametrize(
    ("records_outcome", "expected"),
    [(False, "off"), (True, "on")],
)
def test_claims_that_record_nothing_commit_asynchronously(
    app: pgqueue.App, db: psycopg.Connection[Any], records_outcome: bool, expected: str
) -> None:
    """A bare claim may skip the WAL flush (losing it only makes the job run again); one that
    records an outcome keeps the session's setting, so no finished job can be lost."""
    db.execute("SET synchronous_commit = on")
    db.execute("SELECT pgqueue.enqueue('t') FROM generate_series(1, 2)")
    worker = "00000000-0000-0000-0000-000000000000"
    first = db.execute(
        "UPDATE pgqueue.jobs SET state = 'running', lease = gen_random_uuid(), worker_id = %s"
        " WHERE id = (SELECT min(id) FROM pgqueue.jobs) RETURNING id, lease::text",
        [worker],
    ).fetchone()
    assert first is not None
    done = [first] if records_outcome else []
    params = {
        "limit": 1,
        "queues": None,
        "queue": None,
        "worker_id": worker,
        "ids": "{" + ",".join(str(r[0]) for r in done) + "}",
        "leases": "{" + ",".join(r[1] for r in done) + "}",
        "results": "[" + ",".join("null" for _ in done) + "]",
        "began": "{}",
        "start": 1,
        "done_channel": "pgqueue_done",
    }
    with db.transaction(force_rollback=True):
        rows = db.execute(app.queries["job_claim_all"], params).fetchall()
        # The setting that COMMIT will read: transaction-local, made by the statement.
        setting = db.execute("SHOW synchronous_commit").fetchone()
    assert [r[0] for r in rows].count(True) == 1  # it did claim the second job
    assert [r[0] for r in rows].count(False) == len(done)
    assert setting == (expected,)
    assert db.execute("SHOW synchronous_commit").fetchone() == ("on",)  # and only for it
