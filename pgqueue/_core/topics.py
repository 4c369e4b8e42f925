"""Topics: publish once, and every subscription whose pattern matches gets a job.

Topic names are dot-separated segments of the queue-name characters (letters, digits,
`_ : -`), 128 characters at most. A pattern may also use `*` (exactly one segment) and `#`
(zero or more) as whole segments: `orders.*` matches `orders.created`, not `orders` nor
`orders.eu.created`; `orders.#` matches all three. Matching happens in SQL (sql/011: a
pattern without wildcards by equality through the primary key, a wildcard one by a regular
expression compiled when it is subscribed), so SQL publishers and triggers match exactly
as Python does; the same rules are checked here first, so bad input fails before any SQL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, NamedTuple

from ..errors import ValidationError
from .plan import Plan, Query
from .validate import check_int, check_name

_SEGMENT = r"[A-Za-z0-9_:-]+"
TOPIC_PATTERN = re.compile(rf"{_SEGMENT}(\.{_SEGMENT})*")
SUBSCRIPTION_PATTERN = re.compile(rf"({_SEGMENT}|\*|#)(\.({_SEGMENT}|\*|#))*")
MAX_LENGTH = 128

#: Argument objects per publish statement. Each makes one job per subscription, so a chunk
#: of 1,000 to 100 subscriptions is one statement inserting 100,000 rows.
PUBLISH_CHUNK = 1000


def check_topic(topic: object) -> str:
    if isinstance(topic, str) and ("*" in topic or "#" in topic):
        raise ValidationError(
            f"cannot publish to {topic!r}: it is a pattern; publish to a topic such as"
            " 'orders.created' (patterns are for subscribe)"
        )
    if not isinstance(topic, str) or len(topic) > MAX_LENGTH or not TOPIC_PATTERN.fullmatch(topic):
        raise ValidationError(
            f"invalid topic {topic!r}: use dot-separated segments of letters, digits, '_', ':'"
            f" or '-', {MAX_LENGTH} characters at most"
        )
    return topic


def check_pattern(pattern: object) -> str:
    if (
        not isinstance(pattern, str)
        or len(pattern) > MAX_LENGTH
        or not SUBSCRIPTION_PATTERN.fullmatch(pattern)
    ):
        raise ValidationError(
            f"invalid topic pattern {pattern!r}: use dot-separated segments of letters, digits,"
            f" '_', ':' or '-', or '*' (one segment) or '#' (any number), {MAX_LENGTH}"
            " characters at most"
        )
    return pattern


class Subscription(NamedTuple):
    pattern: str
    task: str
    queue: str | None = None
    priority: int | None = None
    max_attempts: int | None = None

    @classmethod
    def build(
        cls,
        pattern: str,
        task: str,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
    ) -> Subscription:
        check_pattern(pattern)
        check_name("task", task)
        if queue is not None:
            check_name("queue", queue)
        if priority is not None:
            check_int("priority", priority)
        if max_attempts is not None:
            check_int("max_attempts", max_attempts, minimum=1)
        return cls(pattern, task, queue, priority, max_attempts)


def subscribe(subscriptions: Sequence[Subscription]) -> Plan[None]:
    """Idempotent: subscribing again changes nothing, or only the options given."""
    yield Query(
        "topic_subscribe",
        {
            "patterns": [s.pattern for s in subscriptions],
            "tasks": [s.task for s in subscriptions],
            "queues": [s.queue for s in subscriptions],
            "priorities": [s.priority for s in subscriptions],
            "max_attempts": [s.max_attempts for s in subscriptions],
        },
    )


def unsubscribe(pattern: str, task: str) -> Plan[bool]:
    """Jobs already published stay; returns whether the subscription existed."""
    rows = yield Query("topic_unsubscribe", {"pattern": check_pattern(pattern), "task": task})
    return bool(rows)


def publish(topic: str, args: Sequence[str]) -> Plan[list[int]]:
    """One statement per chunk of argument objects (JSON texts); the ids of the jobs made,
    each chunk's in subscription order, then argument order."""
    check_topic(topic)
    ids: list[int] = []
    for start in range(0, max(len(args), 1), PUBLISH_CHUNK):
        chunk = args[start : start + PUBLISH_CHUNK]
        if not chunk:
            break
        rows = yield Query("topic_publish", {"topic": topic, "args": "[" + ",".join(chunk) + "]"})
        ids.extend(r[0] for r in rows)
    return ids


def list_subscriptions() -> Plan[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = yield Query("subscription_list", None, columns=True)
    return rows
