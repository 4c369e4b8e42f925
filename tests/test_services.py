"""The runtime's service shapes and the core's plans, tested without a database or sleeping:
an injected clock drives time, canned rows drive plans."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest

from pgqueue._core import admin, waiting
from pgqueue._core.claiming import ClaimCursor, Ledger, last_in_claim_order
from pgqueue._core.enqueue import enqueue_many
from pgqueue._core.plan import AwaitNotify, DuplicateKey, Listen, Pipeline, Query
from pgqueue._core.spec import ENQUEUE_CHUNK, JobSpec
from pgqueue._db.errors import DatabaseError
from pgqueue._runtime.service import Clock, LeaderGroup, PeriodicService, Service
from pgqueue.errors import JobFailed, ValidationError


class FakeClock(Clock):
    """Time moves only when the test says so; sleepers wake when their time comes."""

    def __init__(self) -> None:
        self.t = 0.0
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self.sleepers.append((self.t + seconds, future))
        await future

    async def advance(self, seconds: float) -> None:
        self.t += seconds
        for due, future in list(self.sleepers):
            if due <= self.t and not future.done():
                future.set_result(None)
                self.sleepers.remove((due, future))
        for _ in range(5):  # let woken services run their pass
            await asyncio.sleep(0)


class Counting(PeriodicService):
    name = "counting"
    interval = 10.0

    def __init__(self, clock: Clock, fail_first: int = 0) -> None:
        super().__init__(clock)
        self.passes = 0
        self.fail_first = fail_first

    async def run_once(self) -> None:
        self.passes += 1
        if self.passes <= self.fail_first:
            raise DatabaseError("the database is away")


def test_periodic_service_runs_each_interval_and_survives_its_failures() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        service = Counting(clock, fail_first=2)
        await service.start()
        await clock.advance(0)
        assert service.passes == 0  # sleeps first unless `immediate`
        for expected in (1, 2, 3, 4):
            await clock.advance(10)
            assert service.passes == expected
        assert service.running and service.failures == 0  # two failures, then recovered
        await service.stop()
        await service.stop()  # idempotent
        assert not service.running

    asyncio.run(scenario())


def test_stop_is_safe_for_a_service_never_started() -> None:
    asyncio.run(Service().stop())


def test_leader_group_starts_on_election_and_stops_the_moment_it_is_lost() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        rescuer = Counting(clock)
        rescuer.immediate = True
        group = LeaderGroup([rescuer])
        await group.leadership(True)
        await clock.advance(0)
        assert rescuer.running and rescuer.passes == 1
        await clock.advance(10)
        assert rescuer.passes == 2
        await group.leadership(False)
        assert not rescuer.running
        await clock.advance(100)
        assert rescuer.passes == 2  # nothing runs once leadership is gone
        await group.leadership(True)
        await clock.advance(0)
        assert rescuer.passes == 3
        await group.stop()
        assert not rescuer.running

    asyncio.run(scenario())


def test_claim_cursor_expires_and_restarts() -> None:
    cursor = ClaimCursor(ttl=1.0)
    assert not cursor.fresh(0.0)
    cursor.advance((5, 1, 10), restarted=True, now=0.0)
    assert cursor.fresh(0.5) and not cursor.fresh(1.0)
    cursor.advance((5, 2, 11), restarted=False, now=0.9)
    assert cursor.position == (5, 2, 11) and not cursor.fresh(1.0)  # ttl counts from restart
    cursor.advance(None, restarted=True, now=2.0)
    assert cursor.position is None
    cursor.advance((5, 3, 12), restarted=True, now=3.0, dry=True)  # fewer rows than asked
    assert cursor.position is None and not cursor.fresh(3.1)


def test_last_in_claim_order_is_priority_desc_then_run_at_then_id() -> None:
    assert last_in_claim_order([(10, 5, 1), (0, 1, 2), (0, 1, 3), (5, 0, 9)]) == (0, 1, 3)
    assert last_in_claim_order([]) is None


def test_ledger_bounds_unwritten_outcomes_to_twice_the_concurrency() -> None:
    from pgqueue._core.claiming import ClaimedJob

    ledger = Ledger(concurrency=2, prefetch=2)
    jobs = [ClaimedJob(i, "t", "q", {}, 1, 3, "l", None) for i in range(8)]
    ledger.add(jobs[:4])
    assert ledger.room() == 0
    started = [ledger.start_next(), ledger.start_next()]
    assert not ledger.can_start()  # both slots taken
    for job in started:
        ledger.finished(job.id)  # runs over, outcomes not yet written
    started = [ledger.start_next(), ledger.start_next()]
    for job in started:
        ledger.finished(job.id)
    ledger.add(jobs[4:6])
    assert not ledger.can_start()  # four outcomes wait: 2 x concurrency
    ledger.written([0, 1])
    assert ledger.can_start()
    assert [j.id for j in ledger.unrecorded({2})] == [3, 4, 5]


def test_adaptive_prefetch_follows_the_pace_between_floor_and_ceiling() -> None:
    from pgqueue._core.claiming import Pace

    fixed = Ledger(concurrency=10, prefetch=10)
    fixed.tune(rate=50_000.0, latency=0.01)
    assert not fixed.adaptive and fixed.prefetch == 10  # a fixed prefetch stays put
    ledger = Ledger(concurrency=10, prefetch=10, ceiling=1000)
    # 20,000 starts/s and a 5 ms round trip: three round trips' worth is 300 jobs.
    ledger.tune(rate=20_000.0, latency=0.005)
    assert ledger.prefetch == 300
    assert ledger.room() == 310 and ledger.unwritten_cap == 310
    ledger.tune(rate=1e9, latency=1.0)
    assert ledger.prefetch == 1000  # the ceiling
    ledger.tune(rate=5.0, latency=0.005)
    assert ledger.prefetch == 10  # a slow queue: back to the floor
    assert ledger.unwritten_cap == 20  # twice the concurrency, as with a fixed prefetch

    pace = Pace()
    pace.claimed(now=0.0, starts=0, took=0.004)
    pace.claimed(now=0.1, starts=1000, took=0.006)
    assert pace.rate == pytest.approx(10_000.0)
    assert pace.latency == pytest.approx(0.7 * 0.004 + 0.3 * 0.006)
    pace.claimed(now=10.1, starts=1000, took=0.004)  # an idle spell: no starts for 10 s
    assert pace.rate == pytest.approx(5_000.0)  # halved at once


def test_enqueue_many_plan_cuts_chunks_and_keeps_input_order() -> None:
    specs = [JobSpec("t", f'{{"n":{i}}}') for i in range(ENQUEUE_CHUNK + 3)]
    first = [(i,) for i in reversed(range(ENQUEUE_CHUNK))]
    second = [(i,) for i in range(ENQUEUE_CHUNK, ENQUEUE_CHUNK + 3)]
    plan = enqueue_many(specs)
    step = next(plan)
    # One pipeline of statements: one chunk of ENQUEUE_CHUNK, then the rest.
    assert isinstance(step, Pipeline)
    queries = list(step.queries)
    assert [q.name for q in queries] == ["job_enqueue_many"] * 2
    assert [len(json.loads(q.params["args"])) for q in queries] == [ENQUEUE_CHUNK, 3]
    # Ids come back in whatever order the statement returns them and are matched to inputs
    # by their (ascending) identity order.
    with pytest.raises(StopIteration) as done:
        plan.send([first, second])
    assert done.value.value == list(range(ENQUEUE_CHUNK + 3))


def test_plans_validate_before_their_first_query() -> None:
    with pytest.raises(ValidationError):
        next(admin.get_job("seven"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonsense"):
        next(admin.list_jobs(state="nonsense", queue=None, task=None, older_than=None,
                             newer_than=None, limit=5))  # fmt: skip


def test_retry_plan_turns_a_duplicate_key_into_a_validation_error() -> None:
    plan = admin.retry(7)
    assert isinstance(next(plan), Query)
    with pytest.raises(ValidationError, match="unique_key"):
        plan.throw(DuplicateKey("dup"))


def _job_row(state: str, **extra: Any) -> dict[str, Any]:
    row = dict.fromkeys(
        ["task", "queue", "result", "unique_key", "created_at", "run_at", "started_at",
         "finished_at", "worker"]
    )  # fmt: skip
    row.update(id=1, state=state, priority=0, attempt=1, max_attempts=3, args={},
               errors=[], rescue_count=0)  # fmt: skip
    row.update(extra)
    return row


def test_wait_plan_listens_rechecks_and_returns_the_result() -> None:
    now = [0.0]
    plan = waiting.wait(1, None, "s_done", lambda: now[0])
    assert next(plan) == Listen("s_done")
    assert isinstance(plan.send(True), Query)  # listening: read the row
    assert plan.send([_job_row("running")]) == AwaitNotify(waiting.RECHECK_LISTENING)
    assert isinstance(plan.send(None), Query)
    with pytest.raises(StopIteration) as done:
        plan.send([_job_row("completed", result={"ok": 1})])
    assert done.value.value == {"ok": 1}


def test_wait_plan_polls_with_backoff_without_a_listener_and_times_out() -> None:
    now = [0.0]
    plan = waiting.wait(1, 0.5, "s_done", lambda: now[0])
    next(plan)
    plan.send(False)  # no listening connection (behind a pooler)
    pauses = []
    with pytest.raises(TimeoutError):
        while True:
            step = plan.send([_job_row("available")])
            assert isinstance(step, AwaitNotify)
            pauses.append(step.timeout)
            now[0] += step.timeout
            plan.send(None)
    assert pauses[0] == waiting.RECHECK_POLLING[0] and pauses[1] == 2 * pauses[0]


def test_wait_plan_raises_job_failed() -> None:
    plan = waiting.wait(1, None, "s_done", lambda: 0.0)
    next(plan)
    plan.send(True)
    with pytest.raises(JobFailed):
        plan.send([_job_row("failed", errors=[{"type": "E", "message": "m"}])])


def test_a_worker_excluding_queues_is_not_woken_by_them() -> None:
    """The Notifier's filter, as the Worker wires it: wake-ups of excluded queues would cost
    an empty claim each (the claim itself filters them, so only this shows the difference)."""
    import pgqueue
    from pgqueue._runtime.worker import Worker

    app = pgqueue.App("postgresql://unused@127.0.0.1:1/none")
    worker = Worker(app, exclude_queues=["crm"], handle_signals=False)
    assert not worker.notifier.wants("crm")
    assert worker.notifier.wants("mail") and worker.notifier.wants("added-later")
    only = Worker(app, queues=["mail"], handle_signals=False)
    assert only.notifier.wants("mail") and not only.notifier.wants("crm")


# --- the Scheduler, on a fake clock and an in-memory schedule table ----------------------


class FakeScheduleDb:
    """Answers the Scheduler's plans like sql/011 would: the database clock is `epoch` plus
    the fake clock's time, and `fire_schedule` keeps its guard (only slots later than
    `last_slot` make a job), so two schedulers on one of these behave like two leaders."""

    def __init__(self, clock: FakeClock, epoch: Any) -> None:
        self.clock = clock
        self.epoch = epoch
        self.rows: dict[str, dict[str, Any]] = {}
        self.jobs: list[tuple[str, Any]] = []
        self.queries: list[str] = []

    def now(self) -> Any:
        from datetime import timedelta

        return self.epoch + timedelta(seconds=self.clock.t)

    def add(self, name: str, cron: str, tz: str = "UTC", catch_up: str = "latest") -> None:
        self.rows[name] = {
            "cron": cron, "tz": tz, "catch_up": catch_up, "last_slot": self.now(),
            "next_run_at": None, "paused": False,
        }  # fmt: skip

    def answer(self, step: Any) -> Any:
        self.queries.append(step.name)
        if step.name == "schedule_active":
            return [
                (n, r["cron"], r["tz"], r["catch_up"], r["last_slot"], r["next_run_at"], self.now())
                for n, r in sorted(self.rows.items())
                if not r["paused"]
            ]
        if step.name == "db_now":
            return [(self.now(),)]
        if step.name == "schedule_fire":
            row = self.rows[step.params["name"]]
            made = []
            for slot in step.params["slots"]:
                if row["last_slot"] is None or slot > row["last_slot"]:
                    self.jobs.append((step.params["name"], slot))
                    made.append((slot, len(self.jobs)))
                    row["last_slot"] = slot
            row["next_run_at"] = step.params["next_run_at"]
            return made
        raise AssertionError(f"unexpected query {step.name}")

    async def run(self, plan: Any) -> Any:
        step = next(plan)
        try:
            while True:
                step = plan.send(self.answer(step))
        except StopIteration as done:
            return done.value


async def _run_until(clock: FakeClock, seconds: float) -> int:
    """Advance the fake clock to `seconds`, waking each sleeper at its own time; returns how
    many times a sleeper woke (a poll loop would wake often)."""
    wakes = 0
    while True:
        for _ in range(10):  # let the woken service run its pass and go back to sleep
            await asyncio.sleep(0)
        pending = [due for due, f in clock.sleepers if not f.done()]
        if not pending or min(pending) > seconds:
            await clock.advance(seconds - clock.t)
            return wakes
        await clock.advance(max(0.0, min(pending) - clock.t))
        wakes += 1


def _scheduler(db: FakeScheduleDb, clock: FakeClock) -> Any:
    from pgqueue._runtime.scheduler import Scheduler

    return Scheduler(db, clock)  # type: ignore[arg-type]


def test_scheduler_sleeps_until_the_next_slot_and_fires_each_once() -> None:
    from datetime import datetime, timezone

    async def scenario() -> None:
        clock = FakeClock()
        db = FakeScheduleDb(clock, datetime(2026, 1, 1, 11, 59, 30, tzinfo=timezone.utc))
        db.add("hourly", "0 * * * *")
        db.add("fast", "*/10 * * * * *")
        scheduler = _scheduler(db, clock)
        await scheduler.start()
        wakes = await _run_until(clock, 3 * 3600)
        await scheduler.stop()
        hourly = [slot for name, slot in db.jobs if name == "hourly"]
        fast = [slot for name, slot in db.jobs if name == "fast"]
        assert [s.hour for s in hourly] == [12, 13, 14]
        # every 10-second slot in the three hours (the last one is due a moment after), once
        assert len(fast) == len(set(fast)) == 3 * 360 - 1
        assert all((b - a).total_seconds() == 10 for a, b in itertools.pairwise(fast))
        # It woke once per slot (the 10-second one), not in a poll loop of its own.
        assert wakes <= len(fast) + 2
        assert db.queries.count("schedule_active") <= len(fast) + 3


# --- the Producer's flow-control decisions (issue 12) ------------------------------------


class _FlowDb:
    """What the Producer asks of the database for flow control, answered from memory."""

    def __init__(self, limited: list[str], wait: float | None, jobs: int = 0) -> None:
        self.limited = limited
        self.wait = wait
        self.jobs = jobs
        self.fetches = 0
        self.limits: list[int] = []

    async def fetch(self, name: str, params: Any = None) -> list[Any]:
        assert name == "queue_flow_settings"
        self.fetches += 1
        return [(q, True) for q in self.limited]

    async def claim_limited(
        self, statement: Any, limit: int, done: Any, *, suspects: bool, **_starts: Any
    ) -> Any:
        from pgqueue._core.claiming import ClaimedJob
        from pgqueue._db.claim import ClaimResult

        self.limits.append(limit)
        jobs = [ClaimedJob(i, "t", "q", {}, 1, 3, "l", None) for i in range(min(limit, self.jobs))]
        return ClaimResult(jobs, [], set(), self.wait)


def _producer(db: _FlowDb, clock: FakeClock, concurrency: int = 4) -> Any:
    import uuid
    from types import SimpleNamespace

    from pgqueue._db.claim import ClaimStatement
    from pgqueue._db.queries import Queries
    from pgqueue._runtime.events import Events
    from pgqueue._runtime.producer import Producer
    from pgqueue._runtime.settings import WorkerSettings

    completer = SimpleNamespace(
        take_successes=lambda: [],
        restore=lambda done: None,
        claim_finished=lambda: None,
        accepted=lambda done, ok: None,
        claim_in_flight=False,
        began={},
    )
    statement = ClaimStatement(Queries("pgqueue"), uuid.uuid4(), ["lim"])
    return Producer(
        db,  # type: ignore[arg-type]
        statement,
        Ledger(concurrency, concurrency),
        SimpleNamespace(),  # type: ignore[arg-type]
        completer,  # type: ignore[arg-type]
        Events(),
        WorkerSettings(queues=["lim"], concurrency=concurrency, poll_interval=2.0),
        clock,
    )


def test_producer_reads_flow_settings_once_a_second_and_sooner_after_a_nudge() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        db = _FlowDb(["lim"], None)
        producer = _producer(db, clock)
        await producer.refresh_flow()
        assert db.fetches == 1 and producer.route.plain is None
        assert producer.route.limited.queues == ["lim"]
        await clock.advance(0.5)
        await producer.refresh_flow()
        assert db.fetches == 1  # not yet
        producer.nudge()  # a NOTIFY: configure_queue sends one
        await producer.refresh_flow()
        assert db.fetches == 2
        await clock.advance(0.05)
        producer.nudge()
        await producer.refresh_flow()
        assert db.fetches == 2  # at most every 0.1 s however often it is woken
        await clock.advance(1.0)
        db.limited = []
        await producer.refresh_flow()
        assert db.fetches == 3 and producer.route.limited is None  # the limit was removed

    asyncio.run(scenario())


def test_scheduler_with_nothing_due_soon_sleeps_long_and_wakes_on_a_change() -> None:
    from datetime import datetime, timezone

    from pgqueue._runtime.scheduler import MAX_SLEEP

    async def scenario() -> None:
        clock = FakeClock()
        db = FakeScheduleDb(clock, datetime(2026, 1, 1, tzinfo=timezone.utc))
        db.add("nightly", "0 3 * * *", "Europe/Copenhagen")
        scheduler = _scheduler(db, clock)
        await scheduler.start()
        wakes = await _run_until(clock, 3600)
        assert wakes == 3600 // MAX_SLEEP  # the safety net only: once per MAX_SLEEP
        db.add("soon", "*/5 * * * *")  # another worker declared it...
        scheduler.changed()  # ...and its notification arrived
        for _ in range(20):
            await asyncio.sleep(0)
        assert db.rows["soon"]["next_run_at"] is not None  # read at once, not after a sleep
        await _run_until(clock, 3600 + 301)
        assert [name for name, _ in db.jobs] == ["soon"]
        await scheduler.stop()

    asyncio.run(scenario())


def test_two_schedulers_overlapping_fire_each_slot_once() -> None:
    from datetime import datetime, timedelta, timezone

    async def scenario() -> None:
        clock = FakeClock()
        db = FakeScheduleDb(clock, datetime(2026, 1, 1, tzinfo=timezone.utc))
        db.add("every-second", "* * * * * *", catch_up="all")
        first, second = _scheduler(db, clock), _scheduler(db, clock)
        await first.start()
        await _run_until(clock, 20)
        await second.start()  # a second leader before the first noticed it lost the lease
        await _run_until(clock, 40)
        await first.stop()  # the old leader is gone
        await _run_until(clock, 45)
        await second.stop()
        await _run_until(clock, 50)  # an election gap: nobody leads
        third = _scheduler(db, clock)
        await third.start()  # the next leader catches up on the gap (catch_up="all")
        await _run_until(clock, 60)
        await third.stop()
        slots = [slot for _, slot in db.jobs]
        # every second from 00:00:01 to 00:00:59 (00:01:00 is due a moment after the end)
        assert slots == [db.epoch + timedelta(seconds=i) for i in range(1, 60)]
        assert first.fired and second.fired and third.fired

    asyncio.run(scenario())


def test_scheduler_survives_a_failing_pass() -> None:
    from datetime import datetime, timezone

    from pgqueue._runtime.scheduler import RETRY_AFTER

    async def scenario() -> None:
        clock = FakeClock()
        db = FakeScheduleDb(clock, datetime(2026, 1, 1, tzinfo=timezone.utc))
        db.add("minutely", "* * * * *")
        answer = db.answer
        failing = [True]

        def flaky(step: Any) -> Any:
            if failing[0]:
                raise DatabaseError("the database is away")
            return answer(step)

        db.answer = flaky  # type: ignore[method-assign]
        scheduler = _scheduler(db, clock)
        await scheduler.start()
        await _run_until(clock, 10 * RETRY_AFTER)
        assert scheduler.running and scheduler.failures >= 5
        failing[0] = False
        await _run_until(clock, 130)
        assert [slot.minute for _, slot in db.jobs] == [1, 2] and scheduler.failures == 0
        await scheduler.stop()


def test_a_held_back_producer_sleeps_until_the_next_permitted_start() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        db = _FlowDb(["lim"], 0.7)
        producer = _producer(db, clock)
        await producer.refresh_flow()
        assert producer.room() == 4  # a limited queue: free slots only, no prefetch
        assert await producer.claim(producer.room()) == []
        assert db.limits == [4]
        assert producer.flow_wait == 0.7 and not producer.flow_more
        assert producer._sleep_seconds() == 0.7  # not the 2 s poll, not a hot loop
        db.wait = 30.0
        await producer.claim(4)
        assert producer._sleep_seconds() == 2.0  # the poll interval still bounds a sleep
        db.wait, db.jobs = None, 9
        jobs = await producer.claim(4)
        assert len(jobs) == 4 and producer.flow_more  # got all it asked: claim again
        producer.ledger.add(jobs)
        assert producer.room() == 0

    asyncio.run(scenario())


def test_a_free_slots_only_producer_gathers_freed_slots_and_takes_the_successes() -> None:
    """Jobs ending together refill in one claim (issue 17): the first freed slot waits up to
    LIMITED_BATCH_WAIT for half the slots, and meanwhile the completer leaves the successes
    to that claim, whose write is what frees the slots in the database."""
    from pgqueue._runtime.producer import LIMITED_BATCH_WAIT

    async def scenario() -> None:
        clock = FakeClock()
        db = _FlowDb(["lim"], None, jobs=4)
        producer = _producer(db, clock)
        await producer.refresh_flow()
        ledger = producer.ledger
        ledger.add(await producer.claim(producer.room()))
        for _ in range(4):
            ledger.start_next()
        assert producer.room() == 0 and not producer.carries_successes()  # nothing to claim for
        ledger.finished(0)
        assert producer.room() == 1 and producer.carries_successes()
        assert producer._batch_wait(1) == LIMITED_BATCH_WAIT  # one of four: gather more
        await clock.advance(LIMITED_BATCH_WAIT / 2)
        assert producer._batch_wait(1) == LIMITED_BATCH_WAIT / 2  # from the first one freed
        ledger.finished(1)
        assert producer._batch_wait(2) == 0  # half the slots: claim now
        ledger.running.update({0, 1})
        ledger.finished(0)
        assert producer._batch_wait(1) == LIMITED_BATCH_WAIT  # a new wait starts afresh
        await clock.advance(LIMITED_BATCH_WAIT)
        assert producer._batch_wait(1) == 0  # never longer than that
        for job_id in (1, 2, 3):
            ledger.finished(job_id)
        assert producer._batch_wait(4) == 0  # nothing running: nothing to wait for
        producer.stop()
        assert not producer.carries_successes()  # a stopping worker claims no more: write them
        # A queue that is only fair prefetches: its claims never wait, nor do successes.
        producer = _producer(_FlowDb(["lim"], None), clock)
        producer.db.fetch = _fair_only
        await producer.refresh_flow()
        assert producer.route.limited is not None and not producer.carries_successes()
        assert producer._batch_wait(1) == 0

    async def _fair_only(name: str, params: Any = None) -> list[Any]:
        return [("lim", False)]

    asyncio.run(scenario())
