"""History mode (config ``history_mode``, off by default): every version of an order and of its
products kept in ``external_order_versions`` and ``external_order_item_versions``.

A version holds the order's content as one load wrote it, valid from that load (``valid_from``)
until the next load of a changed version or the order leaving Activated (``valid_to``, exclusive);
``is_current`` marks the warehouse's present one. Written in the load's transaction, so versions
and orders never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .warehouse.definitions import VERSIONED_ITEM_COLUMNS, VERSIONED_ORDER_COLUMNS, Tables
from .warehouse.writes import in_batches, insert_rows, one_of


def seed(conn: sa.Connection, t: Tables) -> None:
    """Orders without a current version (loaded before history mode was on, or by a run with it
    off) get one of what the warehouse holds, valid from their last load; products likewise.
    Orders that left Activated are history already: they get none. A current version the order
    has moved past (loaded again while history mode was off) ends at that last load first."""
    o, i = t.external_orders, t.external_order_items
    ov, iv = t.external_order_versions, t.external_order_item_versions
    outdated = conn.execute(
        sa.select(ov.c.sf_order_id, o.c.last_imported_at)
        .select_from(ov.join(o, o.c.sf_order_id == ov.c.sf_order_id))
        .where(ov.c.is_current, ov.c.content_hash != o.c.content_hash)
    ).all()
    ended_at: dict[datetime, list[str]] = {}
    for order_id, last_loaded in outdated:
        ended_at.setdefault(last_loaded, []).append(order_id)
    for at, order_ids in ended_at.items():
        close(conn, t, order_ids, at)
    unversioned = sa.and_(
        o.c.sf_state == "active",
        ~sa.select(ov.c.sf_order_id).where(ov.c.sf_order_id == o.c.sf_order_id, ov.c.is_current).exists(),
    )
    items = (
        sa.select(*(i.c[name] for name in VERSIONED_ITEM_COLUMNS), o.c.last_imported_at, sa.true(), o.c.last_run_id)
        .select_from(i.join(o, o.c.sf_order_id == i.c.sf_order_id))
        .where(unversioned, ~i.c.is_deleted)
    )
    conn.execute(sa.insert(iv).from_select([*VERSIONED_ITEM_COLUMNS, "valid_from", "is_current", "run_id"], items))
    orders = sa.select(*(o.c[name] for name in VERSIONED_ORDER_COLUMNS), o.c.last_imported_at, sa.true(), o.c.last_run_id).where(unversioned)
    conn.execute(sa.insert(ov).from_select([*VERSIONED_ORDER_COLUMNS, "valid_from", "is_current", "run_id"], orders))


def close(conn: sa.Connection, t: Tables, order_ids: Iterable[str], now: datetime) -> None:
    """End the current versions of these orders and of their products at ``now``."""
    for table in (t.external_order_versions, t.external_order_item_versions):
        for batch in in_batches(sorted(set(order_ids))):
            conn.execute(
                sa.update(table)
                .where(one_of(conn, table.c.sf_order_id, batch), table.c.is_current)
                .values(valid_to=now, is_current=False)
            )


def add(
    conn: sa.Connection, t: Tables, order_rows: list[dict[str, Any]], item_rows: list[dict[str, Any]], run_id: str, now: datetime
) -> None:
    """The new versions of the orders a load wrote (``order_rows``, as written to external_orders)
    and of their present products (``item_rows``), valid from ``now``; the ones before end there."""
    close(conn, t, [row["sf_order_id"] for row in order_rows], now)
    validity = {"valid_from": now, "valid_to": None, "is_current": True, "run_id": run_id}
    insert_rows(conn, t.external_order_versions, [{**{c: row[c] for c in VERSIONED_ORDER_COLUMNS}, **validity} for row in order_rows])
    insert_rows(
        conn, t.external_order_item_versions,
        [{**{c: row[c] for c in VERSIONED_ITEM_COLUMNS}, **validity} for row in item_rows if not row["is_deleted"]],
    )
