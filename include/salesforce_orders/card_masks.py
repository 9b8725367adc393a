"""Card fields X-ed out in Salesforce for orders the import reads but does not write back to.

The write-back X-es out the card fields of every order it loads, along with its other updates.
An order the import quarantines, skips (zero total) or stops writing back to (it went back to
Draft) would keep its card data in Salesforce. So where such an order is set aside (validate,
transform, mark_status_changes), an outbox row of its own is queued with only the card fields
(action ``x_out_card``), in the same transaction. The ``mask_card_fields`` task sends these rows
after the write-back, whether or not the import got that far, unless
``write_back.x_out_card_fields_not_imported`` is false.

Our own write changes the order's ``SystemModstamp``, so the next run reads it again and sets it
aside again: an order is not queued again while its mask is waiting to be sent, nor when it has
not changed since its mask was written (its ``SystemModstamp`` no later than the written row's
time, give or take :data:`ECHO_MARGIN` of clock difference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa

from .transform import CARD_MASK
from .warehouse.definitions import OUTBOX_DONE, OUTBOX_PENDING, OUTBOX_UNSENT_STATES, tables
from .warehouse.types import parse_utc
from .warehouse.writes import insert_rows, select_in

CARD_MASK_ACTION = "x_out_card"
ECHO_MARGIN = timedelta(minutes=5)


def _already_masked(rows: Sequence[sa.Row], modstamp: datetime | None) -> bool:
    """Whether an order's card-mask rows make another one needless: one is still to be sent, or
    one was written after the order last changed."""
    for row in rows:
        if row.state in OUTBOX_UNSENT_STATES:
            return True
        if row.state == OUTBOX_DONE and (modstamp is None or modstamp <= row.updated_at + ECHO_MARGIN):
            return True
    return False


def queue_card_masks(
    conn: sa.Connection,
    orders: Mapping[str, str | None],
    *,
    card_fields: Sequence[str],
    order_object: str,
    run_id: str,
    now: datetime,
    schema: str | None = None,
) -> int:
    """Queue the X-ing out of the card fields of ``orders`` ({order id: its SystemModstamp});
    returns how many rows were queued."""
    if not orders or not card_fields:
        return 0
    w = tables(schema).writeback_outbox
    existing: dict[str, list[sa.Row]] = {}
    columns = [w.c.sf_record_id, w.c.state, w.c.updated_at]
    mask_rows = (w.c.sf_object == order_object, w.c.action.contains(CARD_MASK_ACTION))
    for row in select_in(conn, w, columns, w.c.sf_record_id, sorted(orders), *mask_rows):
        existing.setdefault(row.sf_record_id, []).append(row)
    fields = dict.fromkeys(card_fields, CARD_MASK)
    rows = [
        {
            "sf_object": order_object,
            "sf_record_id": order_id,
            "sf_order_id": order_id,
            "action": CARD_MASK_ACTION,
            "fields": fields,
            "state": OUTBOX_PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "last_error_code": None,
            "last_error_message": None,
            "created_run_id": run_id,
            "updated_run_id": run_id,
            "created_at": now,
            "updated_at": now,
        }
        for order_id, modstamp in sorted(orders.items())
        if not _already_masked(existing.get(order_id, ()), parse_utc(modstamp) if modstamp else None)
    ]
    insert_rows(conn, w, rows)
    return len(rows)


__all__ = ["CARD_MASK_ACTION", "ECHO_MARGIN", "queue_card_masks"]
