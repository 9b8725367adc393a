"""Queuing the X-out of the card fields of orders set aside: once while it waits, not again for
the echo of our own write, again after the order changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from salesforce_orders.card_masks import ECHO_MARGIN, queue_card_masks
from salesforce_orders.warehouse import tables

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ORDER = "801000000000001AAA"
FIELDS = ("Credit_Card_Number__c", "Credit_Card_CVV__c")


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def queue(target, modstamp: datetime, card_fields=FIELDS) -> int:
    with target.engine.begin() as conn:
        return queue_card_masks(
            conn, {ORDER: stamp(modstamp)}, card_fields=card_fields, order_object="Order", run_id="r", now=NOW, schema=target.schema
        )


def test_a_mask_is_queued_once_and_again_only_after_the_order_changed(created_warehouse):
    target = created_warehouse
    w = tables(target.schema).writeback_outbox
    assert queue(target, NOW) == 1
    assert queue(target, NOW) == 0  # still waiting to be sent
    written_at = NOW + timedelta(minutes=1)
    with target.engine.begin() as conn:
        conn.execute(sa.update(w).values(state="DONE", updated_at=written_at))
        (row,) = conn.execute(sa.select(w)).mappings()
    assert (row["action"], row["sf_object"], row["sf_order_id"]) == ("x_out_card", "Order", ORDER)
    assert row["fields"] == dict.fromkeys(FIELDS, "X" * 16)

    assert queue(target, written_at + ECHO_MARGIN / 2) == 0  # the echo of our own write
    assert queue(target, written_at + 2 * ECHO_MARGIN) == 1  # changed since: masked again
    assert queue(target, NOW + timedelta(days=1), card_fields=()) == 0  # the config says not to
