"""Log records that name their job, a JSON formatter, and argument redaction.

Every log line about a job carries `job_id`, `task`, `queue` and `attempt` as record
attributes (and in the text), so a log pipeline can filter by them without parsing messages.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from .errors import ValidationError

#: Argument keys masked by default wherever pgqueue shows arguments (logs, CLI output).
DEFAULT_REDACT_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "authorization",
        "access_token",
        "refresh_token",
    }
)
MASK = "***"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact_keys_from_env(default: Iterable[str] = DEFAULT_REDACT_KEYS) -> frozenset[str]:
    """`PGQUEUE_REDACT_KEYS=a,b` replaces the default set; an empty value turns it off."""
    raw = os.environ.get("PGQUEUE_REDACT_KEYS")
    if raw is None:
        return frozenset(k.lower() for k in default)
    return frozenset(k.strip().lower() for k in raw.split(",") if k.strip())


def redact(value: Any, keys: frozenset[str]) -> Any:
    """A copy of `value` with the values of sensitive keys masked, at any depth."""
    if not keys:
        return value
    if isinstance(value, dict):
        return {k: MASK if str(k).lower() in keys else redact(v, keys) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, keys) for v in value]
    return value


def job_extra(job_id: int, task: str, queue: str, attempt: int) -> dict[str, Any]:
    return {"job_id": job_id, "task": task, "queue": queue, "attempt": attempt}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every extra attribute."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Logging for the `pgqueue worker` command: text for people, JSON for pipelines."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    name = level.upper() if isinstance(level, str) else level
    if name not in LEVELS:
        raise ValidationError(f"unknown log level {level!r}: use one of {', '.join(LEVELS)}")
    # The level is pgqueue's own: other libraries' INFO lines (HTTP clients, drivers) stay at
    # WARNING. Records propagate to the root's handler whatever the root's level, so
    # pgqueue's INFO lines still print.
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("pgqueue").setLevel(name)
