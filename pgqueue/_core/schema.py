"""Is the database's pgqueue schema there, and recent enough? One plan for every client."""

from __future__ import annotations

from ..errors import SchemaNotMigrated
from .plan import Plan, Query


def not_migrated_error(schema: str, found: int | None, need: int) -> SchemaNotMigrated:
    if found is None:
        return SchemaNotMigrated(
            f'the database has no pgqueue schema "{schema}": run `pgqueue migrate`'
        )
    return SchemaNotMigrated(
        f'pgqueue schema "{schema}" is at version {found} but this pgqueue needs {need}:'
        " run `pgqueue migrate`"
    )


def check_schema(schema: str, need: int) -> Plan[None]:
    """Raise SchemaNotMigrated unless the schema is at version `need` or later.

    Asks the catalog first so that, inside a caller's transaction, a missing schema is
    reported by us instead of aborting their transaction with an undefined-table error.
    """
    rows = yield Query("schema_exists", {"schema": schema})
    if not rows[0][0]:
        raise not_migrated_error(schema, None, need)
    version = (yield Query("schema_version"))[0][0] or 0
    if version < need:
        raise not_migrated_error(schema, version, need)
