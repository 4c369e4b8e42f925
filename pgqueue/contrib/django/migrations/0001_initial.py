"""Create the pgqueue schema of every PgQueueBackend on this database (pgqueue's own SQL
migrations, run on Django's connection); reversed, drop it with every job in it."""

from __future__ import annotations

from typing import Any

from django.db import migrations

from pgqueue._db.django import drop_schema, migrate
from pgqueue.contrib.django._schemas import schemas_for


def forwards(apps: Any, schema_editor: Any) -> None:
    alias = schema_editor.connection.alias
    for schema in schemas_for(alias):
        migrate(alias, schema)


def backwards(apps: Any, schema_editor: Any) -> None:
    alias = schema_editor.connection.alias
    for schema in schemas_for(alias):
        drop_schema(alias, schema)


class Migration(migrations.Migration):  # type: ignore[misc]
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [migrations.RunPython(forwards, backwards)]
