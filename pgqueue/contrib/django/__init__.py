"""pgqueue for Django: a `django.tasks` backend on Django's own database connection.

Add `"pgqueue.contrib.django"` to `INSTALLED_APPS` (it brings the migration that creates the
pgqueue schema and the `pgqueue_worker` command) and point a task backend at it::

    TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.PgQueueBackend"}}

The backend is imported on first use, so listing the app costs nothing until a task module
is imported. See docs/django.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PgQueueBackend"]


def __getattr__(name: str) -> Any:
    # Lazy: Django imports this package while it populates the app registry, and the backend
    # module needs `django.tasks` (or the `django_tasks` backport), which is only wanted once
    # a backend is built.
    if name == "PgQueueBackend":
        from .backend import PgQueueBackend

        return PgQueueBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
