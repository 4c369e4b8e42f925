"""The task catalog and the stored redaction keys: what a process registers, written to the
database so that SQL clients, other processes and every reader apply the same defaults and
mask the same keys."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .plan import Plan, Query


@dataclass(frozen=True)
class TaskDefaults:
    """One task's declared defaults; None: the database's built-in default."""

    name: str
    queue: str | None
    priority: int | None
    max_attempts: int | None
    timeout: float | None


def register(
    tasks: Iterable[TaskDefaults], redact_keys: Iterable[str], registered_by: str
) -> Plan[None]:
    rows = list(tasks)
    yield Query(
        "task_register",
        {
            "names": [t.name for t in rows],
            "queues": [t.queue for t in rows],
            "priorities": [t.priority for t in rows],
            "max_attempts": [t.max_attempts for t in rows],
            "timeouts": [t.timeout for t in rows],
            "redact_keys": sorted({k.lower() for k in redact_keys if k}),
            "registered_by": registered_by,
        },
    )


class Registers(Protocol):
    def catalog_entry(self) -> TaskDefaults: ...


def register_all(
    tasks: Iterable[Registers], redact_keys: Iterable[str], registered_by: str
) -> Plan[None]:
    """What a process (an App, or a worker at start) writes to the catalog: every task it
    registered and its redaction keys."""
    return register([t.catalog_entry() for t in tasks], redact_keys, registered_by)


def list_tasks() -> Plan[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = yield Query("task_list", None, columns=True)
    return rows


def stored_redact_keys() -> Plan[frozenset[str]]:
    rows = yield Query("redact_key_list")
    return frozenset(r[0] for r in rows)
