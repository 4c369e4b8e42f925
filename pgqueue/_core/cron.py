"""Cron arithmetic, pure: which slots of a schedule are due between two instants, and when
the next one comes. No clock of its own: every instant is passed in (the database's `now()`
in a worker, a fake clock in tests).

Expressions are parsed and evaluated by `cronsim` (the evaluator Healthchecks.io runs its
cron monitoring on: small, typed, no dependencies, kept up to date, and written to match
Debian's cron, daylight-saving quirks included). Accepted:

- the standard 5 fields (minute hour day-of-month month day-of-week), with cronsim's
  extensions (`L`, `W`, `#`, names of months and days);
- a 6-field form whose first field is the second (`*/5 * * * * *`: every 5 seconds);
- `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly`, `@yearly` (`@annually`),
  translated here to the fields crontab(5) defines for them (cronsim has no aliases).

Slots are instants (UTC-aware datetimes). A schedule is evaluated in its IANA time zone
(`zoneinfo`), so `0 3 * * *` in Europe/Copenhagen is 03:00 there in winter and in summer.
Daylight saving:

- spring forward: a local time that does not exist (02:30 on the night the clocks jump from
  02:00 to 03:00) runs once, at the transition (03:00);
- fall back: a local time that happens twice runs once, at its first occurrence, for a
  schedule that names its hours (`30 2 * * *`, `*/15 2 * * *`). A schedule whose hour field
  is `*` (`@hourly`, `*/10 * * * *`) follows the real clock and runs in both hours.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from ..errors import ValidationError

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

CATCH_UP = ("latest", "all", "none")

#: `catch_up="all"` makes at most this many jobs after a downtime: the most recent missed
#: slots (older ones are skipped), so a minutely schedule down for a week does not flood
#: its queue with 10,000 jobs.
MAX_CATCH_UP = 100

#: With `catch_up="none"`, a slot this late (seconds) still counts as on time rather than
#: missed: the leader wakes a moment after each slot, and a leader change takes a heartbeat
#: timeout (30 s by default).
ON_TIME = 60.0

#: How far back a catch-up looks at most (a yearly schedule's last slot is within it).
LOOKBACK = timedelta(days=400)


def expand(expr: object) -> str:
    """The fields of a cron expression (aliases expanded); ValidationError if it does not
    parse."""
    if not isinstance(expr, str) or not expr.strip():
        raise ValidationError(f"invalid cron expression {expr!r}: expected a string")
    text = " ".join(expr.split())
    fields = ALIASES.get(text.lower(), text)
    if fields.startswith("@"):
        raise ValidationError(
            f"invalid cron expression {expr!r}: unknown alias (use one of"
            f" {', '.join(sorted(ALIASES))})"
        )
    if len(fields.split()) not in (5, 6):
        raise ValidationError(
            f"invalid cron expression {expr!r}: expected 5 fields (minute hour day month"
            " weekday), 6 with seconds first, or an alias such as @daily"
        )
    try:
        CronSim(fields, datetime(2000, 1, 1, tzinfo=timezone.utc))
    except CronSimError as exc:
        raise ValidationError(f"invalid cron expression {expr!r}: {exc}") from None
    return fields


def zone(tz: object) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ValidationError(f"invalid time zone {tz!r}: expected an IANA name such as 'UTC'")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Copenhagen' or 'UTC'"
        ) from None


def check_catch_up(value: object) -> str:
    if value not in CATCH_UP:
        raise ValidationError(f"unknown catch_up {value!r}: use 'latest', 'all' or 'none'")
    return str(value)


class Cron:
    """A parsed expression in a time zone (ValidationError if either is bad)."""

    __slots__ = ("_once_in_repeat", "_zone", "expr", "fields", "tz")

    def __init__(self, expr: str, tz: str = "UTC") -> None:
        self.expr = expr
        self.tz = tz
        self.fields = expand(expr)
        self._zone = zone(tz)
        parts = self.fields.split()
        hour = parts[2] if len(parts) == 6 else parts[1]
        # A schedule that names its hours runs once in a repeated (fall-back) hour.
        self._once_in_repeat = hour != "*"

    def __repr__(self) -> str:
        return f"Cron({self.expr!r}, {self.tz!r})"

    def _keep(self, slot: datetime) -> bool:
        return not (slot.fold and self._once_in_repeat)

    def _local(self, instant: datetime) -> datetime:
        _aware(instant)
        return instant.astimezone(self._zone)

    def after(self, instant: datetime) -> datetime | None:
        """The first slot strictly after `instant` (None if none in cronsim's horizon)."""
        for slot in self._forward(instant):
            return slot
        return None

    def _forward(self, instant: datetime) -> Iterator[datetime]:
        it = CronSim(self.fields, self._local(instant))
        while True:
            try:
                slot = next(it)
            except StopIteration:
                return
            if self._keep(slot):
                yield slot.astimezone(timezone.utc)

    def _backward(self, instant: datetime) -> Iterator[datetime]:
        """Slots at or before `instant`, latest first."""
        local = self._local(instant)
        # cronsim's reverse iteration takes a start with microseconds as a candidate itself
        # (truncated), so a slot exactly at `instant` is included.
        it = CronSim(self.fields, local.replace(microsecond=local.microsecond or 1), reverse=True)
        while True:
            try:
                slot = next(it)
            except StopIteration:
                return
            if self._keep(slot):
                yield slot.astimezone(timezone.utc)

    def between(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """The latest `limit` slots in (start, end], oldest first."""
        found: list[datetime] = []
        for slot in self._backward(end):
            if slot <= start or len(found) >= limit:
                break
            found.append(slot)
        found.reverse()
        return found


def _aware(instant: datetime) -> None:
    if instant.tzinfo is None:
        raise ValueError("cron arithmetic takes timezone-aware instants")


@dataclass(frozen=True)
class Due:
    """What one pass of the scheduler does for one schedule."""

    fire: list[datetime]
    #: Missed slots that the catch-up policy skips.
    skipped: int
    #: The first slot after `now`: when the schedule is due next.
    next_run_at: datetime | None


def due(cron: Cron, catch_up: str, last_slot: datetime | None, now: datetime) -> Due:
    """The slots to fire now: those in (last_slot, now], per the catch-up policy.

    `latest` fires the most recent one (on time, that is the only one); `all` every one, up
    to MAX_CATCH_UP (the most recent); `none` only one that is on time (at most ON_TIME
    seconds late), so after a downtime the schedule simply waits for its next slot.
    """
    check_catch_up(catch_up)
    start = now - LOOKBACK if last_slot is None or last_slot < now - LOOKBACK else last_slot
    limit = MAX_CATCH_UP if catch_up == "all" else 1
    found = cron.between(start, now, limit + 1)
    # One more than kept tells whether slots were skipped (how many is not worth counting).
    kept = found[-limit:] if found else []
    skipped = len(found) - len(kept)
    if catch_up == "none" and kept and (now - kept[-1]).total_seconds() > ON_TIME:
        skipped += len(kept)
        kept = []
    return Due(kept, skipped, cron.after(now))
