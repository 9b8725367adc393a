"""The shipments of the orders on a page, with each one's sync status (one query function)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from salesforce_orders.shipments import SYNCED, superseding_rows, sync_status
from salesforce_orders.warehouse.definitions import Tables
from salesforce_orders.warehouse.writes import one_of

# The page's dots: synced green, failed or invalid red, the rest pending.
DOT = {SYNCED: "ok", "failed": "failed", "invalid": "failed"}


def shipments_of(conn: sa.Connection, t: Tables, order_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Per order id, its shipments (oldest shipped first) with ``status``, ``dot`` and ``message``
    (Salesforce's error, or why the shipment is invalid)."""
    if not order_ids:
        return {}
    s, w = t.order_shipments, t.writeback_outbox
    shipments = list(conn.execute(sa.select(s).where(one_of(conn, s.c.sf_order_id, list(order_ids))).order_by(s.c.shipped_date, s.c.shipment_key)))
    rows: dict[str, list[Any]] = defaultdict(list)
    if shipments:
        query = sa.select(w).where(one_of(conn, w.c.shipment_key, [r.shipment_key for r in shipments])).order_by(w.c.id)
        for row in conn.execute(query):
            rows[row.shipment_key].append(row)
    # A row superseded by a newer shipment's row: that row's outcome counts (pending until it is done).
    superseded_by = superseding_rows(conn, t, [row for of_shipment in rows.values() for row in of_shipment])
    by_order: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for shipment in shipments:
        status, message = sync_status(shipment.state, shipment.errors, rows[shipment.shipment_key], superseded_by)
        by_order[shipment.sf_order_id].append(
            {**shipment._asdict(), "status": status, "dot": DOT.get(status, "pending"), "message": message}
        )
    return dict(by_order)
