"""Cron arithmetic and the topic and schedule rules, pure: no database, no sleeping. Time is
whatever instant the test passes in (a fake clock)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from pgqueue._core import cron, schedules, topics
from pgqueue._core.cron import MAX_CATCH_UP, Cron, due
from pgqueue.errors import ValidationError

UTC = timezone.utc
CPH = "Europe/Copenhagen"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def run_clock(c: Cron, start: datetime, end: datetime, step: timedelta) -> list[datetime]:
    """What a scheduler waking every `step` fires between two instants (catch_up latest)."""
    fired: list[datetime] = []
    last, now = start, start
    while now <= end:
        plan = due(c, "latest", last, now)
        fired += plan.fire
        if plan.fire:
            last = plan.fire[-1]
        now += step
    return fired


def test_five_fields_aliases_and_seconds() -> None:
    assert Cron("*/15 * * * *").after(utc(2026, 1, 1, 10, 7)) == utc(2026, 1, 1, 10, 15)
    assert Cron("@hourly").after(utc(2026, 1, 1, 10, 7)) == utc(2026, 1, 1, 11)
    assert Cron("@daily").after(utc(2026, 1, 1, 10)) == utc(2026, 1, 2)
    assert Cron("@weekly").after(utc(2026, 1, 1)) == utc(2026, 1, 4)  # a Sunday
    assert Cron("@monthly").after(utc(2026, 1, 1)) == utc(2026, 2, 1)
    assert Cron("@yearly").after(utc(2026, 1, 1)) == utc(2027, 1, 1)
    assert Cron("*/5 * * * * *").after(utc(2026, 1, 1, 0, 0, 3)) == utc(2026, 1, 1, 0, 0, 5)
    # strictly after: a slot is never its own successor
    assert Cron("0 * * * *").after(utc(2026, 1, 1, 11)) == utc(2026, 1, 1, 12)


def test_time_zone_is_the_schedules_own() -> None:
    c = Cron("0 3 * * *", CPH)
    assert c.after(utc(2026, 1, 10)) == utc(2026, 1, 10, 2)  # CET, UTC+1
    assert c.after(utc(2026, 7, 10)) == utc(2026, 7, 10, 1)  # CEST, UTC+2


@pytest.mark.parametrize(
    ("expr", "tz", "message"),
    [
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *'"),
        ("* * *", "UTC", "expected 5 fields"),
        ("@reboot", "UTC", "unknown alias"),
        ("", "UTC", "invalid cron expression"),
        ("* * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("* * * * *", "", "invalid time zone"),
    ],
)
def test_bad_expressions_and_zones_are_refused(expr: str, tz: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("*", r"\*")):
        Cron(expr, tz)


def test_catch_up_modes_after_a_downtime() -> None:
    hourly = Cron("0 * * * *")
    back = utc(2026, 1, 1, 12, 30)
    down_since = utc(2026, 1, 1, 7, 30)  # missed 08:00 .. 12:00
    latest = due(hourly, "latest", down_since, back)
    assert latest.fire == [utc(2026, 1, 1, 12)] and latest.skipped
    everything = due(hourly, "all", down_since, back)
    assert everything.fire == [utc(2026, 1, 1, h) for h in range(8, 13)]
    assert not everything.skipped
    nothing = due(hourly, "none", down_since, back)
    assert nothing.fire == [] and nothing.skipped
    for plan in (latest, everything, nothing):
        assert plan.next_run_at == utc(2026, 1, 1, 13)
    # "none" still fires the slot that is due now (the scheduler wakes just after it)
    assert due(hourly, "none", down_since, utc(2026, 1, 1, 12, 0, 0, 10)).fire == [
        utc(2026, 1, 1, 12)
    ]
    with pytest.raises(ValidationError, match="unknown catch_up 'some'"):
        due(hourly, "some", down_since, back)


def test_catch_up_all_is_bounded() -> None:
    minutely = Cron("* * * * *")
    now = utc(2026, 1, 2)
    plan = due(minutely, "all", now - timedelta(days=1), now)
    assert len(plan.fire) == MAX_CATCH_UP
    assert plan.fire[-1] == now and plan.fire[0] == now - timedelta(minutes=MAX_CATCH_UP - 1)
    assert plan.skipped


def test_nothing_is_due_twice() -> None:
    c = Cron("*/10 * * * *")
    plan = due(c, "all", utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 25))
    assert plan.fire == [utc(2026, 1, 1, 10, 10), utc(2026, 1, 1, 10, 20)]
    again = due(c, "all", plan.fire[-1], utc(2026, 1, 1, 10, 25))
    assert again.fire == []


def test_spring_forward_gap_runs_once_at_the_transition() -> None:
    # 2026-03-29: Copenhagen jumps from 02:00 to 03:00 (01:00 UTC); 02:30 does not exist.
    fired = run_clock(
        Cron("30 2 * * *", CPH), utc(2026, 3, 27, 12), utc(2026, 3, 30, 12), timedelta(minutes=1)
    )
    assert fired == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]


def test_fall_back_repeat_runs_once() -> None:
    # 2026-10-25: Copenhagen goes from 03:00 back to 02:00 (01:00 UTC); 02:30 happens twice.
    start, end, step = utc(2026, 10, 24, 12), utc(2026, 10, 26, 12), timedelta(minutes=1)
    assert run_clock(Cron("30 2 * * *", CPH), start, end, step) == [
        utc(2026, 10, 25, 0, 30),  # 02:30 CEST, the first occurrence only
        utc(2026, 10, 26, 1, 30),
    ]
    # A schedule that names its hour runs once in the repeated hour...
    twice_an_hour = run_clock(Cron("*/30 2 * * *", CPH), start, end, step)
    assert twice_an_hour[:2] == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 0, 30)]
    assert twice_an_hour[2] == utc(2026, 10, 26, 1)
    # ...one that runs every hour follows the real clock: both 02:00s are distinct hours.
    hourly = run_clock(Cron("@hourly", CPH), utc(2026, 10, 24, 23), utc(2026, 10, 25, 3), step)
    assert hourly == [utc(2026, 10, 25, h) for h in range(0, 4)]


def test_naive_instants_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Cron("* * * * *").after(datetime(2026, 1, 1))


def test_schedule_declarations_are_validated_before_anything_is_written() -> None:
    def build(**overrides: object) -> schedules.Schedule:
        settings: dict[str, object] = {
            "name": "nightly",
            "task": "reports.nightly",
            "cron": "0 3 * * *",
            "tz": CPH,
            "args": {"region": "eu"},
            "queue": None,
            "priority": None,
            "catch_up": "latest",
        }
        settings.update(overrides)
        return schedules.Schedule.build(**settings)  # type: ignore[arg-type]

    build()
    for bad, message in [
        ({"name": "bad name"}, "invalid schedule name"),
        ({"cron": "every day"}, "invalid cron expression"),
        ({"tz": "Europe/Atlantis"}, "unknown time zone"),
        ({"catch_up": "most"}, "unknown catch_up"),
        ({"args": {"when": object()}}, "not JSON-serializable"),
        ({"queue": "no spaces"}, "invalid queue name"),
    ]:
        with pytest.raises(ValidationError, match=message):
            build(**bad)
    declared = [build()]
    schedules.check_unique(declared, build())  # the same declaration again is fine
    with pytest.raises(ValidationError, match="already declared for task 'other'"):
        schedules.check_unique([build(task="other")], build())


def test_topic_and_pattern_rules() -> None:
    for good in ("orders", "orders.created", "eu:orders.created-v2", "a_b.c"):
        assert topics.check_topic(good) == good
        assert topics.check_pattern(good) == good
    for pattern in ("orders.*", "#", "orders.#", "*.created", "#.created.*"):
        assert topics.check_pattern(pattern) == pattern
        with pytest.raises(ValidationError, match="it is a pattern"):
            topics.check_topic(pattern)
    for bad in ("", "orders..created", ".orders", "orders.", "orders created", "a" * 129, 42):
        with pytest.raises(ValidationError, match="invalid topic"):
            topics.check_topic(bad)
        with pytest.raises(ValidationError, match="invalid topic pattern"):
            topics.check_pattern(bad)
    for bad in ("orders.cre*", "ord#", "**", "orders.*x"):
        with pytest.raises(ValidationError, match="invalid topic pattern"):
            topics.check_pattern(bad)


def test_publish_plan_chunks_and_refuses_a_pattern() -> None:
    from pgqueue._core.plan import run_pure

    args = ["{}"] * (topics.PUBLISH_CHUNK + 1)
    steps, ids = run_pure(topics.publish("a.b", args), [[(1, "t")], [(2, "t")]])
    assert [s.name for s in steps] == ["topic_publish", "topic_publish"]  # type: ignore[union-attr]
    assert ids == [1, 2]
    with pytest.raises(ValidationError):
        next(topics.publish("a.*", ["{}"]))


def test_cron_module_documents_its_bounds() -> None:
    assert cron.MAX_CATCH_UP == 100 and cron.ON_TIME == 60.0
