"""SQLite tables for the sandbox org, derived from :mod:`salesforce_sandbox.schema`."""

from __future__ import annotations

import sqlite3

from .schema import Schema


def quote_ident(name: str) -> str:
    """Double-quote an SQL identifier (names come from the schema, never from requests)."""
    return '"' + name.replace('"', '""') + '"'


def create_tables(conn: sqlite3.Connection, schema: Schema) -> None:
    """Create one table per object (idempotent), with the indexes queries and paging rely on."""
    for obj in schema.objects.values():
        cols = []
        for f in obj.fields:
            col = f"{quote_ident(f.name)} {f.sql_type}"
            if f.name == "Id":
                col += " PRIMARY KEY"
            cols.append(col)
        table = quote_ident(obj.name)
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})")
        # No index on IsDeleted: it matches almost every row, and without statistics SQLite's
        # planner would prefer it to a selective index such as OrderId.
        indexed = ["SystemModstamp"]
        indexed += [f.name for f in obj.fields if f.type == "reference" and f.name not in ("CreatedById", "LastModifiedById", "OwnerId")]
        indexed += [f.name for f in obj.fields if f.external_id or f.auto_number]
        for name in dict.fromkeys(indexed):
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {quote_ident(f'ix_{obj.name}_{name}')} ON {table} ({quote_ident(name)})"
            )
        # Unique and external id values match case-insensitively (duplicate checks, upsert): only an
        # index with the same collation serves `= ? COLLATE NOCASE`; without it each lookup scans the table.
        for f in obj.fields:
            if (f.unique or f.external_id) and f.sql_type == "TEXT":
                conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {quote_ident(f'ix_{obj.name}_{f.name}_nocase')} "
                    f"ON {table} ({quote_ident(f.name)} COLLATE NOCASE)"
                )
    conn.commit()
