"""Assembling SELECT statements from already-translated parts."""

from __future__ import annotations


def select_sql(
    columns: str,
    source: str,
    *,
    where: str | None = None,
    order_by: str | None = None,
    limit_offset: bool = False,
) -> str:
    """``SELECT columns FROM source [WHERE ...] [ORDER BY ...] [LIMIT ? OFFSET ?]``.

    Every identifier in the parts comes from the schema (quoted), and every value from the
    query text is a bound parameter, so nothing a client sends is spliced into SQL.
    """
    sql = f"SELECT {columns} FROM {source}"  # noqa: S608 - see the docstring
    if where:
        sql += f" WHERE {where}"
    if order_by:
        sql += f" ORDER BY {order_by}"
    if limit_offset:
        sql += " LIMIT ? OFFSET ?"
    return sql
