"""Flow control (DESIGN.md section 8, issue 12): queue settings, group_key, concurrency and
rate limits, fairness, back pressure and expiry, against a real PostgreSQL.

The claim itself is exercised through `claim_limited` directly where the point is its
arithmetic (deterministic, no timing), and through real worker processes where the point is
that a limit holds across processes (tests/test_flow_processes.py)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._core.flow import check_settings
from pgqueue._core.validate import format_rate, parse_rate
from pgqueue._db.claim import ClaimStatement, LimitedClaim, route
from pgqueue._db.queries import Queries
from pgqueue.errors import QueueFull, ValidationError
from tests.helpers import race, wait_until, worker_thread

Conn = psycopg.Connection[tuple[Any, ...]]


def claim(db: Conn, queues: list[str], limit: int, worker: uuid.UUID | None = None) -> Any:
    """One claim_limited call: (claimed ids in order, the wait hint or None)."""
    rows = db.execute(
        "SELECT claimed, id, timeout FROM pgqueue.claim_limited(%s, %s, %s, '{}', '{}', '[]', 'x')",
        [queues, worker or uuid.uuid4(), limit],
    ).fetchall()
    return [r[1] for r in rows if r[0]], next((r[2] for r in rows if r[0] is None), None)


def finish(db: Conn, ids: list[int]) -> None:
    """Record these running jobs completed, as a worker's outcome write does (lease-fenced)."""
    db.execute(
        "UPDATE pgqueue.jobs SET state = 'completed', lease = NULL, finished_at = now()"
        " WHERE id = ANY(%s) AND state = 'running'",
        [ids],
    )


# --- pure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("20/s", (20, 1.0)),
        ("100/m", (100, 60.0)),
        ("5/h", (5, 3600.0)),
        ("1000/d", (1000, 86400.0)),
        ("30/10s", (30, 10.0)),
        (" 7 / 2.5s ", (7, 2.5)),
    ],
)
def test_rates_parse(text: str, parsed: tuple[int, float]) -> None:
    assert parse_rate("rate", text) == parsed
    assert parse_rate("rate", format_rate(*parsed)) == parsed


@pytest.mark.parametrize("text", ["20/x", "0/s", "-1/s", "20", "/s", "5/0s", "5/10m", 20, None])
def test_bad_rates_are_refused(text: object) -> None:
    with pytest.raises(ValidationError, match="rate"):
        parse_rate("rate", text)


def test_settings_are_checked_before_anything_is_written() -> None:
    assert check_settings({"rate": "20/s", "fair": True, "concurrency": None}) == {
        "rate": "20/s",
        "fair": True,
        "concurrency": None,
    }
    for bad in ({"concurrency": 0}, {"max_depth": -1}, {"fair": "yes"}, {"colour": 1}):
        with pytest.raises(ValidationError):
            check_settings(bad)


def test_queue_full_carries_its_numbers_and_pickles() -> None:
    import pickle

    exc = pickle.loads(pickle.dumps(QueueFull("q", 11, 10)))
    assert (exc.queue, exc.depth, exc.max_depth) == ("q", 11, 10)
    assert "q is full" in str(exc)


def test_route_leaves_limited_queues_to_the_limited_claim() -> None:
    queries = Queries("pgqueue")
    wid = uuid.uuid4()
    every = ClaimStatement(queries, wid, None)
    r = route(every, {"b", "a"})
    assert r.plain is not None and r.plain.excluded == ["a", "b"]
    assert r.limited is not None and r.limited.queues == ["a", "b"]
    assert route(every, set()).plain is every and route(every, set()).limited is None
    named = ClaimStatement(queries, wid, ["a", "c"])
    r = route(named, {"a", "b"})
    assert r.plain is not None and r.plain.queues == ["c"]
    assert r.limited is not None and r.limited.queues == ["a"]
    r = route(ClaimStatement(queries, wid, ["a"]), {"a"})
    assert r.plain is None and r.limited is not None
    r = route(ClaimStatement(queries, wid, None, excluded=["a"]), {"a", "b"})
    assert r.plain is not None and r.plain.excluded == ["a", "b"]
    assert r.limited is not None and r.limited.queues == ["b"]


def test_the_limited_claim_decodes_the_plain_layout_and_its_hint() -> None:
    job = (True, 1, "t", "q", {}, 1, 3, "lease", None, 0, datetime.now(timezone.utc))
    done = (False, 7, *([None] * 9))
    hint = (None, None, None, None, None, None, None, None, 0.25, None, None)
    result = LimitedClaim.decode([job, done, hint])
    assert [j.id for j in result.jobs] == [1] and result.accepted == {7}
    assert result.wait == 0.25


# --- settings ---------------------------------------------------------------------------


def test_configure_queue_sets_keeps_and_removes(app: pgqueue.App) -> None:
    s = app.configure_queue("exports", concurrency=5, rate="20/s", max_depth=100)
    assert (s.concurrency, s.rate, s.max_depth, s.fair) == (5, "20/s", 100, False)
    s = app.configure_queue("exports", group_rate="5/s", fair=True)  # the rest stays
    assert (s.concurrency, s.rate, s.group_rate, s.fair) == (5, "20/s", "5/s", True)
    s = app.configure_queue("exports", concurrency=None, rate="100/10s")
    assert (s.concurrency, s.rate, s.max_depth) == (None, "100/10s", 100)
    assert app.queue_settings("exports") == s
    assert app.queue_settings("nothing-here") == pgqueue.QueueSettings("nothing-here")


def test_configure_queue_async_twin(app: pgqueue.App) -> None:
    async def go() -> pgqueue.QueueSettings:
        await app.configure_queue_async("a", group_concurrency=2)
        assert (await app.queue_settings_async("a")).group_concurrency == 2
        assert (await app.queue_limits_async("a"))[0].queue == "a"
        assert await app.rejected_enqueues_async() == 0
        return await app.configure_queue_async("a", group_concurrency=None)

    assert asyncio.run(go()).group_concurrency is None
    asyncio.run(app.aclose())


@pytest.mark.parametrize(
    "bad",
    [
        {"rate": "20/x"},
        {"rate": "0/s"},
        {"rate": "-1/s"},
        {"concurrency": 0},
        {"concurrency": -3},
        {"max_depth": 0},
        {"group_concurrency": 1.5},
        {"group_rate": "5"},
    ],
)
def test_bad_settings_change_nothing(app: pgqueue.App, bad: dict[str, Any]) -> None:
    before = app.configure_queue("q", concurrency=2, rate="3/s", max_depth=10)
    with pytest.raises(ValidationError):
        app.configure_queue("q", fair=True, **bad)
    assert app.queue_settings("q") == before


def test_settings_for_a_bad_queue_name_are_refused(app: pgqueue.App) -> None:
    for name in ("", "-x", "a b", "x" * 129):
        with pytest.raises(ValidationError):
            app.configure_queue(name, concurrency=1)


def test_the_sql_function_refuses_bad_input_too(db: Conn) -> None:
    for settings in ('{"rate": "20/x"}', '{"concurrency": 0}', '{"colour": 1}', "[]"):
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            db.execute("SELECT * FROM pgqueue.configure_queue('q', %s)", [settings])
    row = db.execute(
        "SELECT concurrency, rate FROM pgqueue.configure_queue('q', '{\"concurrency\": 4,"
        ' "rate": "9/m"}\')'
    ).fetchone()
    assert row == (4, "9/m")


# --- group_key --------------------------------------------------------------------------


def test_group_key_everywhere(app: pgqueue.App, db: Conn) -> None:
    one = app.enqueue("t.a", {}, group_key="customer-1")
    many = app.enqueue_many("t.a", [{}, {}], group_key="customer-2")
    (sql_id,) = db.execute(
        "SELECT pgqueue.enqueue('t.a', group_key => 'customer-3')"
    ).fetchone() or (None,)
    rows = dict(db.execute("SELECT id, group_key FROM pgqueue.job_status").fetchall())
    assert rows == {
        one.id: "customer-1",
        many[0].id: "customer-2",
        many[1].id: "customer-2",
        sql_id: "customer-3",
    }
    assert app.get_job(one.id).group_key == "customer-1"
    assert [r["id"] for r in app.list_jobs(group_key="customer-2")] == [
        many[1].id,
        many[0].id,
    ]


@pytest.mark.parametrize("bad", ["", "x" * 256, "a\x00b", 42])
def test_bad_group_keys_are_refused(app: pgqueue.App, db: Conn, bad: object) -> None:
    with pytest.raises(ValidationError, match="group_key"):
        app.enqueue("t.a", {}, group_key=bad)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_the_old_sql_call_forms_still_work(db: Conn) -> None:
    """Callers of the functions of 005 (positional and named) are unaffected."""
    db.execute("SELECT pgqueue.enqueue('t.a', '{}', 'q', 1, NULL, 'k', 2)")
    db.execute("SELECT * FROM pgqueue.enqueue_job('t.a', '{}', 'q', 0, NULL, NULL, NULL, NULL)")
    db.execute("SELECT * FROM pgqueue.enqueue_many(p_task => 't.a', p_args => '[{}]')")
    db.execute("SELECT pgqueue.enqueue(task => 't.b', queue => 'q', max_attempts => 4)")
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (4,)


# --- back pressure ----------------------------------------------------------------------


def test_queue_full_from_python_with_nothing_written(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", max_depth=3)
    for _ in range(3):
        app.enqueue("t.a", {}, queue="q")
    with pytest.raises(QueueFull) as info:
        app.enqueue("t.a", {}, queue="q")
    assert (info.value.queue, info.value.depth, info.value.max_depth) == ("q", 3, 3)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (3,)
    assert app.rejected_enqueues() == 1
    with pytest.raises(QueueFull):
        asyncio.run(app.enqueue_async("t.a", {}, queue="q"))
    assert app.rejected_enqueues() == 2
    app.enqueue("t.a", {}, queue="other")  # another queue is not full


def test_enqueue_many_is_all_or_nothing(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", max_depth=10)
    app.enqueue_many("t.a", [{}] * 8, queue="q")
    with pytest.raises(QueueFull) as info:
        app.enqueue_many("t.a", [{}] * 3, queue="q")
    assert info.value.depth == 8
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (8,)
    # In the caller's transaction: the refusal aborts it, and nothing of it is written.
    with psycopg.connect(app.dsn) as conn:
        conn.execute("CREATE TABLE orders (id int)")
        conn.commit()
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(QueueFull):
            app.enqueue_many("t.a", [{}] * 3, queue="q", conn=conn)
        conn.rollback()
    assert db.execute("SELECT count(*) FROM orders").fetchone() == (0,)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (8,)
    assert len(app.enqueue_many("t.a", [{}] * 2, queue="q")) == 2  # exactly to the limit


def test_queue_full_from_sql_aborts_a_triggers_transaction(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", max_depth=1)
    db.execute("CREATE TABLE orders (id int)")
    db.execute(
        "CREATE FUNCTION order_job() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pgqueue.enqueue('t.ship', jsonb_build_object('id', NEW.id), 'q');"
        " RETURN NEW; END $$"
    )
    db.execute(
        "CREATE TRIGGER ship AFTER INSERT ON orders FOR EACH ROW EXECUTE FUNCTION order_job()"
    )
    db.execute("INSERT INTO orders VALUES (1)")
    with pytest.raises(psycopg.Error) as info:
        db.execute("INSERT INTO orders VALUES (2)")
    assert info.value.sqlstate == "PGQ01"
    detail = json.loads(info.value.diag.message_detail or "")
    assert detail == {"queue": "q", "depth": 1, "max_depth": 1}
    assert db.execute("SELECT array_agg(id) FROM orders").fetchone() == ([1],)
    assert db.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (1,)


def test_depth_counts_scheduled_and_retrying(app: pgqueue.App) -> None:
    app.configure_queue("q", max_depth=2)
    app.enqueue("t.a", {}, queue="q", delay=3600)
    app.enqueue("t.a", {}, queue="q")
    with pytest.raises(QueueFull):
        app.enqueue("t.a", {}, queue="q", delay=60)
    stats = {s.queue: s for s in app.queue_stats()}["q"]
    assert (stats.depth, stats.max_depth) == (2, 2)


def test_overshoot_is_bounded_by_concurrent_enqueuers(app: pgqueue.App, db: Conn) -> None:
    """Each enqueue counts what is committed: N transactions open at once near the limit
    can each add their job, so the depth passes max_depth by at most N - 1 (documented in
    docs/flow-control.md), and the next enqueue is refused."""
    app.configure_queue("q", max_depth=10)
    app.enqueue_many("t.a", [{}] * 9, queue="q")
    n = 6

    def enqueue(go: Any) -> bool:
        with psycopg.connect(app.dsn) as conn:
            try:
                app.enqueue("t.a", {}, queue="q", conn=conn)
                ok = True
            except QueueFull:
                ok = False
                conn.rollback()
            go()  # every transaction is open (uncommitted) at this point
            conn.commit()
            return ok

    accepted = sum(race(n, enqueue))
    depth = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE queue = 'q'").fetchone()
    assert depth is not None and accepted >= 1
    assert 10 <= depth[0] <= 10 + n - 1
    with pytest.raises(QueueFull):
        app.enqueue("t.a", {}, queue="q")


def test_far_from_full_trusts_the_estimate(app: pgqueue.App, db: Conn) -> None:
    """Below 80% of max_depth a fresh estimate is trusted, so the enqueue reads nothing but
    the queue's row; a stale one (no leader) falls back to the exact count."""
    app.configure_queue("q", max_depth=100)
    db.execute("SELECT * FROM pgqueue.flow_maintain()")
    app.enqueue("t.a", {}, queue="q")
    # A lying estimate is believed while fresh...
    db.execute("UPDATE pgqueue.queues SET depth_estimate = 0, depth_at = now() WHERE name = 'q'")
    app.enqueue_many("t.a", [{}] * 79, queue="q")
    app.enqueue("t.a", {}, queue="q")
    # ... and distrusted once old: 81 + 20 > 100 by count.
    db.execute(
        "UPDATE pgqueue.queues SET depth_estimate = 0, depth_at = now() - interval '1 min'"
        " WHERE name = 'q'"
    )
    with pytest.raises(QueueFull):
        app.enqueue_many("t.a", [{}] * 20, queue="q")


# --- the limited claim ------------------------------------------------------------------


def test_concurrency_slots_are_never_exceeded(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", concurrency=3)
    app.enqueue_many("t.a", [{}] * 10, queue="q")
    first, wait = claim(db, ["q"], 10)
    assert len(first) == 3 and wait == pytest.approx(0.2)
    assert claim(db, ["q"], 10)[0] == []  # another worker: nothing, the slots are held
    finish(db, first[:2])
    assert len(claim(db, ["q"], 10)[0]) == 2
    held = db.execute("SELECT state, attempt FROM pgqueue.jobs ORDER BY id").fetchall()
    # A job a limit holds back stays available, its attempt unspent.
    assert held.count(("available", 0)) == 5


def test_slots_are_rewritten_in_place_and_maintenance_forgets_idle_ones(
    app: pgqueue.App, db: Conn
) -> None:
    """The slots live in the queue's queue_flow row (016): a claim keeps the held ones and
    adds its own, so they never pile up; the leader's pass prunes those of a queue no claim
    visits, and once none is left (and nothing else needs it) it reports not busy."""

    def held() -> list[int]:
        row = db.execute("SELECT held_ids FROM pgqueue.queue_flow WHERE queue = 'q'").fetchone()
        return sorted(row[0]) if row else []

    app.configure_queue("q", concurrency=2)
    app.enqueue_many("t.a", [{}] * 5, queue="q")
    first, _ = claim(db, ["q"], 5)
    assert held() == sorted(first)
    finish(db, first[:1])
    second, _ = claim(db, ["q"], 5)
    assert len(second) == 1 and held() == sorted([first[1], *second])
    finish(db, [first[1], *second])
    assert db.execute("SELECT busy FROM pgqueue.flow_maintain()").fetchall() == [(True,)]
    assert held() == []
    assert db.execute("SELECT * FROM pgqueue.flow_maintain()").fetchall() == []
    # A queue whose limit is removed keeps no slots, even of jobs still running.
    (third,), _ = claim(db, ["q"], 1)
    assert held() == [third]
    app.configure_queue("q", concurrency=None)
    db.execute("SELECT * FROM pgqueue.flow_maintain()")
    assert held() == []
    # Set again, the limit counts the jobs running now.
    app.configure_queue("q", concurrency=1)
    assert held() == [third]
    assert claim(db, ["q"], 5)[0] == []


def test_a_stale_outcome_frees_no_slot_and_rescue_does(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", concurrency=1)
    app.enqueue_many("t.a", [{}] * 3, queue="q")
    dead = uuid.uuid4()
    db.execute(
        "INSERT INTO pgqueue.workers (id, hostname, pid, concurrency, heartbeat_at)"
        " VALUES (%s, 'h', 1, 1, now())",
        [dead],
    )
    (job,), _ = claim(db, ["q"], 5, dead)
    (lease,) = db.execute("SELECT lease FROM pgqueue.jobs WHERE id = %s", [job]).fetchone() or ()
    # The worker goes silent: nothing frees its slot until rescue.
    db.execute(
        "UPDATE pgqueue.workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        [dead],
    )
    assert claim(db, ["q"], 5)[0] == []
    db.execute(f"{app.queries['job_rescue']}", {"max_rescues": 3})
    (second,), _ = claim(db, ["q"], 5)
    assert second != job
    # The dead worker's late success matches no lease: nothing changes, no slot is freed.
    done = db.execute(
        "SELECT claimed, id FROM pgqueue.claim_limited('{q}', %s, 5, %s, %s, '[null]', 'x')",
        [dead, [job], [lease]],
    ).fetchall()
    assert [r for r in done if r[0] is not None] == []  # no job claimed, no success accepted
    assert db.execute("SELECT state FROM pgqueue.jobs WHERE id = %s", [job]).fetchone() == (
        "retrying",
    )


def test_group_concurrency_and_fair_round_robin(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", group_concurrency=1, fair=True)
    for g in ("a", "b", "c"):
        app.enqueue_many("t.a", [{}] * 3, queue="q", group_key=g)
    ids, _ = claim(db, ["q"], 10)
    groups = db.execute(
        "SELECT group_key FROM pgqueue.jobs WHERE id = ANY(%s) ORDER BY id", [ids]
    ).fetchall()
    assert sorted(g for (g,) in groups) == ["a", "b", "c"]  # one per group, no more
    assert claim(db, ["q"], 10)[0] == []


def test_fairness_does_not_let_a_big_group_starve_the_small(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", fair=True)
    app.enqueue_many("t.a", [{}] * 300, queue="q", group_key="big")
    for g in range(20):
        app.enqueue_many("t.a", [{}] * 2, queue="q", group_key=f"small-{g:02}")
    order: list[int] = []
    while len(order) < 80:
        ids, _ = claim(db, ["q"], 10)
        assert ids
        order += ids
        finish(db, ids)
    small = {
        i for (i,) in db.execute("SELECT id FROM pgqueue.jobs WHERE group_key <> 'big'").fetchall()
    }
    # 21 groups, claims of 10: every small job is claimed within the first 2 rounds.
    last_small = max(order.index(i) for i in small)
    assert last_small < 50, last_small
    assert sum(1 for i in order[:42] if i not in small) <= 4  # the big group: its turn only


def test_fairness_respects_priority(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", fair=True)
    low = app.enqueue_many("t.a", [{}] * 5, queue="q", group_key="a")
    high = app.enqueue_many("t.a", [{}] * 2, queue="q", group_key="b", priority=5)
    ids, _ = claim(db, ["q"], 3)
    assert ids[:2] == [j.id for j in high] and ids[2] == low[0].id


def _claim_buffers(db: Conn, queue: str, limit: int) -> int:
    """Buffers one claim_limited call reads (its nested statements included), and finish
    what it claimed."""
    rows = db.execute(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM pgqueue.claim_limited("
        "%s, %s, %s, '{}', '{}', '[]', 'x')",
        [[queue], uuid.uuid4(), limit],
    ).fetchone()
    assert rows is not None
    plan = rows[0][0]["Plan"]
    db.execute("UPDATE pgqueue.jobs SET state = 'completed', lease = NULL WHERE state = 'running'")
    return int(plan["Shared Hit Blocks"]) + int(plan["Shared Read Blocks"])


def test_a_fair_claim_does_not_step_over_the_jobs_claimed_before(
    app: pgqueue.App, db: Conn
) -> None:
    """A claimed job's entries in the claim indexes stay until VACUUM. The fair claim
    stepped over those of every job claimed before it, in up to four seeks per claim (the
    level, the walk's wrap to the front, the hot group's jobs found and then read from its
    start): 555 buffers each 80,000 jobs into a drain of one hot group, so a claim's cost
    grew with the drain. It now reads each group from its first waiting job as the walk
    found it, the level from above the previous claim's, and the hot group from where the
    previous claim left it."""
    db.execute("ALTER TABLE pgqueue.jobs SET (autovacuum_enabled = false)")
    app.configure_queue("q", fair=True)
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue, group_key)"
        " SELECT 't', 'q', 'hot' FROM generate_series(1, 16000)"
    )
    for g in range(5):
        app.enqueue_many("t.a", [{}] * 20, queue="q", group_key=f"small-{g}")
    db.execute("ANALYZE pgqueue.jobs")

    def drain_to(done: int) -> None:
        count = "SELECT count(*) FROM pgqueue.jobs WHERE state = 'completed'"
        while (db.execute(count).fetchone() or (0,))[0] < done:
            finish(db, claim(db, ["q"], 500)[0])

    drain_to(2000)
    # The least of three: at most one of them walks from the front (once a second).
    early = min(_claim_buffers(db, "q", 10) for _ in range(3))
    drain_to(14000)
    late = min(_claim_buffers(db, "q", 10) for _ in range(3))
    # Before: about 60 more buffers per seek, three or four seeks.
    assert late < early + 40, (early, late)


def test_a_job_released_behind_the_fair_position_is_claimed_within_a_second(
    app: pgqueue.App, db: Conn
) -> None:
    """The position a fair claim resumes from is trusted for a second at a time: a job that
    reappears before it (a claim given back) is found by the next walk from the front, while
    its group still has a backlog after the position."""
    app.configure_queue("q", fair=True)
    app.enqueue_many("t.a", [{}] * 5000, queue="q", group_key="a")
    first, _ = claim(db, ["q"], 5)
    claim(db, ["q"], 5)
    lease = db.execute("SELECT lease FROM pgqueue.jobs WHERE id = %s", [first[0]]).fetchone()
    assert lease is not None
    released = db.execute(
        app.queries["job_release_many"], {"ids": [first[0]], "leases": [lease[0]]}
    ).fetchall()
    assert [r[0] for r in released] == [first[0]]
    taken: list[int] = []

    def claimed_again() -> bool:
        taken.extend(claim(db, ["q"], 1)[0])
        return first[0] in taken

    wait_until(claimed_again, 5, "the released job claimed again")
    assert len(taken) < 4990  # found by a walk from the front, not once the group ran dry


def test_rate_limit_counts_starts_in_any_window(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", rate="4/2s")
    app.enqueue_many("t.a", [{}] * 10, queue="q")
    ids, wait = claim(db, ["q"], 10)
    assert len(ids) == 4 and 1.9 < wait <= 2.01
    again, wait2 = claim(db, ["q"], 10)
    assert again == [] and 0 < wait2 <= wait
    held = db.execute(
        "SELECT count(*) FROM pgqueue.jobs WHERE state = 'available' AND attempt = 0"
    ).fetchone()
    assert held == (6,)
    limits = app.queue_limits("q")
    assert (limits[0].rate, limits[0].starts, limits[0].tokens) == ("4/2s", 4, 0)


def test_group_rate_holds_one_group_and_not_the_others(app: pgqueue.App, db: Conn) -> None:
    app.configure_queue("q", group_rate="2/m")
    app.enqueue_many("t.a", [{}] * 5, queue="q", group_key="a")
    app.enqueue_many("t.a", [{}] * 5, queue="q", group_key="b")
    ids, wait = claim(db, ["q"], 10)
    assert len(ids) == 4 and wait is not None and 59 < wait <= 60.01
    assert claim(db, ["q"], 10)[0] == []
    app.enqueue("t.a", {}, queue="q", group_key="c")
    assert len(claim(db, ["q"], 10)[0]) == 1
    rows = {(r.group_key, r.starts, r.tokens) for r in app.queue_limits("q") if r.group_key}
    assert rows == {("a", 2, 0), ("b", 2, 0), ("c", 1, 1)}


def test_a_paused_or_unlimited_queue_is_not_claimed_by_the_limited_claim(
    app: pgqueue.App, db: Conn
) -> None:
    app.configure_queue("q", concurrency=5)
    app.enqueue_many("t.a", [{}] * 2, queue="q")
    app.enqueue_many("t.a", [{}] * 2, queue="plain")
    app.pause("q")
    assert claim(db, ["q", "plain"], 10)[0] == []
    app.resume("q")
    assert len(claim(db, ["q", "plain"], 10)[0]) == 2


def test_the_plain_claim_skips_limited_queues(app: pgqueue.App, db: Conn) -> None:
    """A limit set now applies to the next claim of every worker, even one whose route is
    a second stale: the plain statement itself leaves a limited queue alone."""
    app.enqueue_many("t.a", [{}] * 3, queue="q")
    app.configure_queue("q", concurrency=1)
    rows = db.execute(
        app.queries["job_claim_all"],
        {
            "limit": 10,
            "worker_id": uuid.uuid4(),
            "ids": "{}",
            "leases": "{}",
            "results": "[]",
            "began": "{}",
            "start": 10,
            "done_channel": "x",
            "queues": None,
            "queue": None,
            "excluded": None,
        },
    ).fetchall()
    assert rows == []


# --- expiry -----------------------------------------------------------------------------


def test_an_expired_job_is_cancelled_not_run(app: pgqueue.App, db: Conn) -> None:
    ran: list[int] = []

    @app.task(name="t.exp")
    def exp(n: int) -> None:
        ran.append(n)

    late = exp.options(expires_in=0.2).enqueue(n=1)
    at = exp.options(expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)).enqueue(n=2)
    fine = exp.options(expires_in=3600).enqueue(n=3)
    time.sleep(0.3)
    with worker_thread(app, concurrency=2, poll_interval=0.1, heartbeat_interval=0.2):
        wait_until(
            lambda: (
                app.get_job(late.id).state == "cancelled"
                and app.get_job(at.id).state == "cancelled"
                and app.get_job(fine.id).state == "completed"
            ),
            10,
            "expiry",
        )
    assert ran == [3]
    info = app.get_job(late.id)
    assert info.last_error is not None and info.last_error["type"] == "Expired"
    assert info.expires_at is not None
    (last_error,) = db.execute(
        "SELECT last_error FROM pgqueue.job_status WHERE id = %s", [late.id]
    ).fetchone() or ("",)
    assert "expired" in last_error


def test_bad_expiry_options_are_refused(app: pgqueue.App) -> None:
    for opts in (
        {"expires_in": 0},
        {"expires_in": -1},
        {"expires_in": "soon"},
        {"expires_at": datetime.now()},  # naive
        {"expires_in": 5, "expires_at": datetime.now(timezone.utc)},
    ):
        with pytest.raises(ValidationError):
            app.enqueue("t.a", {}, **opts)


# --- a worker in this process -----------------------------------------------------------


def test_a_worker_drains_a_limited_fair_queue(app: pgqueue.App, db: Conn) -> None:
    """The Producer routes limited queues through claim_limited and the rest through the
    plain claim, and a held-back burst worker waits instead of exiting."""
    running = 0
    peak = 0
    lock = threading.Lock()

    @app.task(name="t.w")
    def w() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    app.configure_queue("lim", concurrency=2, rate="40/s", fair=True)
    for g in range(4):
        app.enqueue_many("t.w", [{}] * 5, queue="lim", group_key=f"g{g}")
    app.enqueue_many("t.w", [{}] * 20, queue="plain")
    with worker_thread(app, concurrency=8, burst=True, poll_interval=0.2) as worker:
        pass
    assert worker.stats["completed"] == 40
    left = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE state <> 'completed'").fetchone()
    assert left == (0,)
    (limit_peak,) = db.execute(
        """SELECT max(c) FROM (SELECT count(*) OVER (ORDER BY started_at
                  RANGE BETWEEN CURRENT ROW AND '0.999 s' FOLLOWING) AS c
             FROM pgqueue.jobs WHERE queue = 'lim') s"""
    ).fetchone() or (None,)
    assert limit_peak <= 40


def test_jobs_without_a_group_are_not_stuck_behind_a_held_group(app: pgqueue.App, db: Conn) -> None:
    """In a queue with group limits, jobs without a group_key are one group of their own
    with no group limits, reached by the index like any group: a throttled group's backlog
    in front of them does not hold them back (enqueued before the setting, or after)."""
    before = app.enqueue_many("t.a", [{}] * 3, queue="q")
    app.configure_queue("q", group_rate="2/m")
    app.enqueue_many("t.a", [{}] * 50, queue="q", group_key="a")
    after = app.enqueue_many("t.a", [{}] * 3, queue="q")
    ids, wait = claim(db, ["q"], 10)
    assert wait == 0  # each group's share of one claim: more at once, in the next
    ids += claim(db, ["q"], 10)[0]
    ungrouped = {j.id for j in [*before, *after]}
    assert ungrouped <= set(ids) and len(ids) == 8  # all six, and group a's two
    assert app.get_job(after[0].id).group_key is None
    shown = db.execute("SELECT count(*) FROM pgqueue.job_status WHERE group_key IS NULL").fetchone()
    assert shown == (6,)
