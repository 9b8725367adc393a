"""Alembic migrations of the warehouse schema (see README.md here, and ``schema_versions``).

Helpers for the migration scripts in ``versions/``: which schema they work in, and what is
already there. Warehouses created before schema versions existed may already hold what a
migration adds (``create_all`` of a later release added new tables to older warehouses), so
migrations check before they add or drop.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op


def warehouse_schema() -> str | None:
    """The schema being migrated (None: the connection's default schema)."""
    return context.config.attributes["schema"]


def has_table(name: str) -> bool:
    return sa.inspect(op.get_bind()).has_table(name, schema=warehouse_schema())


def has_column(table: str, column: str) -> bool:
    columns = sa.inspect(op.get_bind()).get_columns(table, schema=warehouse_schema())
    return any(c["name"] == column for c in columns)


def has_index(table: str, name: str) -> bool:
    indexes = sa.inspect(op.get_bind()).get_indexes(table, schema=warehouse_schema())
    return any(ix["name"] == name for ix in indexes)


def irreversible(revision: str) -> None:
    """The downgrade of every migration: going back means restoring a backup taken before the upgrade."""
    raise NotImplementedError(
        f"warehouse migration {revision} cannot be undone: restore the backup taken before the upgrade "
        "(docs/runbook.md, 'Upgrading the warehouse')"
    )


__all__ = ["has_column", "has_index", "has_table", "irreversible", "warehouse_schema"]
