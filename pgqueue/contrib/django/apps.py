"""The Django app: its migration creates pgqueue's schema, and every later `migrate` applies
the SQL migrations a newer pgqueue brings (so an upgrade needs no new Django migration)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

#: This app's migration that creates the schema; the catch-up runs only once it is applied
#: (after `migrate pgqueue zero` the schema stays dropped).
INITIAL = ("pgqueue", "0001_initial")


def _catch_up(sender: Any, using: str, plan: Any = None, **kwargs: Any) -> None:
    from django.db import connections
    from django.db.migrations.recorder import MigrationRecorder

    from ..._db.django import migrate
    from ._schemas import schemas_for

    if INITIAL not in MigrationRecorder(connections[using]).applied_migrations():
        return
    for schema in schemas_for(using):
        migrate(using, schema)


class PgQueueConfig(AppConfig):  # type: ignore[misc]
    name = "pgqueue.contrib.django"
    label = "pgqueue"
    verbose_name = "pgqueue"

    def ready(self) -> None:
        post_migrate.connect(_catch_up, sender=self, dispatch_uid="pgqueue.catch_up")
