"""Flow control as plans (DESIGN.md section 8): a queue's settings, read and changed, and
the limits with their use now. Validation first, so bad input never reaches the database;
the database validates again (`configure_queue` in 012_flow_control.sql) for psql users."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..errors import ValidationError
from ..types import QueueLimit, QueueSettings
from .plan import Plan, Query
from .validate import check_int, check_name, format_rate, parse_rate

#: The settings `configure_queue` takes, in the order they are shown.
SETTINGS = ("concurrency", "rate", "group_concurrency", "group_rate", "fair", "max_depth")


def check_settings(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The changes as the database takes them: a value sets, None removes. Rates come back
    in their canonical text (`"20/s"`), integers checked to be at least 1."""
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in SETTINGS:
            raise ValidationError(f"unknown queue setting {key!r}: use {', '.join(SETTINGS)}")
        if value is None:
            checked[key] = None
        elif key in ("rate", "group_rate"):
            checked[key] = format_rate(*parse_rate(key, value))
        elif key == "fair":
            if not isinstance(value, bool):
                raise ValidationError(f"fair must be True or False, not {value!r}")
            checked[key] = value
        else:
            checked[key] = check_int(key, value, minimum=1)
    return checked


def configure(queue: str, changes: Mapping[str, Any]) -> Plan[QueueSettings]:
    """Change some settings of a queue (one statement) and return all of them."""
    params = {
        "queue": check_name("queue", queue),
        "settings": json.dumps(check_settings(changes)),
    }
    rows = yield Query("queue_configure", params, columns=True)
    return QueueSettings(**rows[0])


def settings(queue: str) -> Plan[QueueSettings]:
    """A queue's settings; a queue without any has them all unset."""
    rows = yield Query("queue_settings", {"queue": check_name("queue", queue)}, columns=True)
    return QueueSettings(**rows[0]) if rows else QueueSettings(queue)


def limits(queue: str | None = None) -> Plan[list[QueueLimit]]:
    """Rows of `pgqueue.queue_limits`: each queue with settings, then its busy groups."""
    params = {"queue": None if queue is None else check_name("queue", queue)}
    rows = yield Query("queue_limits", params, columns=True)
    return [QueueLimit(**row) for row in rows]


def rejected() -> Plan[int]:
    """Enqueues refused with QueueFull so far, by every client (a database counter)."""
    rows = yield Query("enqueue_rejected")
    return int(rows[0][0])
