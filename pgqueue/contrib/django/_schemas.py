"""Which pgqueue schemas live behind a Django database alias: the migration and the
`post_migrate` catch-up apply (and the reverse migration drops) exactly those."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS
from django.utils.module_loading import import_string


def _is_pgqueue_backend(path: Any) -> bool:
    if not isinstance(path, str):
        return False
    try:
        backend = import_string(path)
    except ImportError:
        return False
    from .backend import PgQueueBackend

    return isinstance(backend, type) and issubclass(backend, PgQueueBackend)


def schemas_for(alias: str) -> list[str]:
    """The schemas of every PgQueueBackend in `TASKS` whose OPTIONS name this alias (read from
    the settings; no backend is built). With no PgQueueBackend configured at all, the default
    database gets the default schema, so `migrate` works before `TASKS` is written."""
    configured = [
        params for params in getattr(settings, "TASKS", {}).values()
        if _is_pgqueue_backend(params.get("BACKEND"))
    ]  # fmt: skip
    if not configured:
        return ["pgqueue"] if alias == DEFAULT_DB_ALIAS else []
    found = []
    for params in configured:
        options = params.get("OPTIONS") or {}
        if options.get("DATABASE", DEFAULT_DB_ALIAS) == alias:
            schema = options.get("SCHEMA", "pgqueue")
            if schema not in found:
                found.append(schema)
    return found
