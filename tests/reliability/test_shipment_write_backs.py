"""Shipments' write-back against the sandbox org, on SQLite and PostgreSQL: what an Order and its
Order Products show whatever order shipments are added, queued, refused and retried in; and the
next import does not read back what the shipments wrote (no echo), nor miss an edit they write over.

The stages run as the DAGs' tasks (``conftest.Pipeline``); ``stages.send_shipments`` is the
shipments DAG's task.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from salesforce_orders import shipments, stages, writeback
from salesforce_orders.shipments import SUPERSEDED, SYNCED, add_shipment, sync_status
from salesforce_orders.warehouse import tables
from salesforce_orders_ui.shipment_queries import shipments_of

TARGETS = {
    "enabled": True,
    "order_fields": {"tracking_number": "Tracking_Number__c", "carrier": "Carrier__c", "shipped_date": "Shipped_Date__c"},
    "order_item_field": "Shipment_Details__c",
    "shipment_object": None,
}
REJECTION = ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "Carrier account needed"]
# A write-back's span ends (exclusive) at the highest stamp read back: the order written last is read again.
LAST_WRITTEN = 1


def add(p, key: str, order_id: str, item_id: str, quantity: float, shipped: str, tracking: str) -> None:
    shipment = {"shipment_key": key, "sf_order_id": order_id, "carrier": "UPS", "service": "Ground", "tracking_number": tracking, "shipped_date": shipped}
    with p.engine.begin() as conn:
        assert add_shipment(conn, tables(p.schema), shipment, [{"sf_order_item_id": item_id, "quantity": quantity}])


def an_item(p) -> tuple[str, str]:
    """An active order and an Order Product of it with 3 or more ordered."""
    row = p.query(
        "SELECT o.sf_order_id, i.sf_order_item_id FROM external_orders o JOIN external_order_items i ON i.sf_order_id = o.sf_order_id "
        "WHERE i.quantity >= 3 AND o.sf_state = 'active' ORDER BY o.sf_order_id, i.sf_order_item_id"
    )[0]
    return row["sf_order_id"], row["sf_order_item_id"]


def orders_to_ship(p, n: int) -> list[tuple[str, str]]:
    rows = p.query(
        "SELECT o.sf_order_id, MIN(i.sf_order_item_id) AS item FROM external_orders o JOIN external_order_items i "
        "ON i.sf_order_id = o.sf_order_id WHERE o.sf_state = 'active' GROUP BY o.sf_order_id ORDER BY o.sf_order_id"
    )
    return [(r["sf_order_id"], r["item"]) for r in rows[:n]]


def details(p, item_id: str) -> str | None:
    return p.org_rows("SELECT Shipment_Details__c FROM OrderItem WHERE Id = ?", item_id)[0]["Shipment_Details__c"]


def tracking(p, order_id: str) -> str | None:
    return p.org_rows('SELECT Tracking_Number__c FROM "Order" WHERE Id = ?', order_id)[0]["Tracking_Number__c"]


def make_due(p) -> None:
    """The retries' backoff is over."""
    p.execute("UPDATE writeback_outbox SET next_attempt_at = NULL WHERE state IN ('PENDING', 'FAILED')")


def outbox(p, key: str, action: str) -> list[dict]:
    return p.query("SELECT * FROM writeback_outbox WHERE shipment_key = :k AND action = :a ORDER BY id", k=key, a=action)


class _Row:
    def __init__(self, values: dict):
        self.__dict__.update(values)


def status(p, key: str) -> tuple[str, str | None]:
    shipment = p.query("SELECT state, errors FROM order_shipments WHERE shipment_key = :k", k=key)[0]
    rows = [_Row(r) for r in p.query("SELECT * FROM writeback_outbox WHERE shipment_key = :k ORDER BY id", k=key)]
    with p.engine.connect() as conn:
        superseded_by = shipments.superseding_rows(conn, tables(p.schema), rows)
    return sync_status(shipment["state"], shipment["errors"], rows, superseded_by)


def imported(p) -> None:
    run = p.run()
    assert run.succeeded, run.error
    p.set_config(shipments=TARGETS)


def test_a_back_dated_shipment_added_later_keeps_the_newer_shipments_line(pipeline):
    """The details field is written whole: every shipment of the product, in shipped order, whichever came last."""
    p = pipeline
    imported(p)
    order_id, item_id = an_item(p)

    add(p, "SHIP-NEW", order_id, item_id, 1, "2026-03-05", "1ZNEW")
    stages.send_shipments(run_id="ship-1")
    add(p, "SHIP-OLD", order_id, item_id, 1, "2026-03-01", "1ZOLD")
    stages.send_shipments(run_id="ship-2")

    assert details(p, item_id) == "1 × UPS Ground 1ZOLD (2026-03-01)\n1 × UPS Ground 1ZNEW (2026-03-05)"
    assert tracking(p, order_id) == "1ZNEW"  # the older shipment does not overwrite the Order's fields
    assert status(p, "SHIP-OLD") == status(p, "SHIP-NEW") == (SYNCED, None)


def test_two_shipments_of_a_product_queued_together_write_it_once_with_both_lines(pipeline):
    """Both shipments' rows for the Order Product would go in one call, the older text perhaps last:
    the older row is superseded when the newer is queued, and the newer carries both lines."""
    p = pipeline
    imported(p)
    order_id, item_id = an_item(p)
    add(p, "SHIP-A", order_id, item_id, 1, "2026-03-05", "1ZA")
    add(p, "SHIP-B", order_id, item_id, 1, "2026-03-01", "1ZB")

    stages.send_shipments(run_id="ship-1")

    assert details(p, item_id) == "1 × UPS Ground 1ZB (2026-03-01)\n1 × UPS Ground 1ZA (2026-03-05)"
    assert tracking(p, order_id) == "1ZA"
    item_rows = outbox(p, "SHIP-A", shipments.ACTION_ITEM_DETAILS) + outbox(p, "SHIP-B", shipments.ACTION_ITEM_DETAILS)
    assert sorted((r["state"], r["last_error_code"] or "") for r in item_rows) == [("DONE", ""), ("DONE", SUPERSEDED)]
    assert p.scalar("SELECT COUNT(*) FROM v_open_failures WHERE sf_order_id = :o", o=order_id) == 0


def test_a_shipment_naming_its_order_and_products_by_15_character_ids_is_sent_as_one_with_the_18_character_ones(pipeline):
    """A report or the UI shows an Id in its 15 characters, which adding a shipment accepts: it is the
    imported order all the same (never 'not an imported order'), and its Order Product the same
    record as a shipment naming it by the 18 characters, whether added with ``add_shipment`` or
    written by SQL (a fulfilment system)."""
    p = pipeline
    imported(p)
    order_id, item_id = an_item(p)
    add(p, "SHIP-15", order_id[:15], item_id[:15], 1, "2026-03-01", "1Z15")
    p.execute(
        "INSERT INTO order_shipments (shipment_key, sf_order_id, carrier, service, tracking_number, shipped_date, state, created_at) "
        "VALUES ('SHIP-SQL', :o, 'UPS', 'Ground', '1ZSQL', :d, 'NEW', :c)",
        o=order_id[:15], d=datetime(2026, 3, 3).date(), c=datetime.now(UTC),
    )
    p.execute("INSERT INTO order_shipment_lines (shipment_key, sf_order_item_id, quantity) VALUES ('SHIP-SQL', :i, 1)", i=item_id[:15])
    stages.send_shipments(run_id="ship-1")
    add(p, "SHIP-18", order_id, item_id, 1, "2026-03-05", "1Z18")
    stages.send_shipments(run_id="ship-2")

    assert [status(p, key) for key in ("SHIP-15", "SHIP-SQL", "SHIP-18")] == [(SYNCED, None)] * 3
    assert tracking(p, order_id) == "1Z18"
    assert details(p, item_id) == (
        "1 × UPS Ground 1Z15 (2026-03-01)\n1 × UPS Ground 1ZSQL (2026-03-03)\n1 × UPS Ground 1Z18 (2026-03-05)"
    )
    assert {r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM order_shipments")} == {order_id}
    assert {r["sf_record_id"] for r in p.query("SELECT sf_record_id FROM writeback_outbox WHERE action = :a", a=shipments.ACTION_ITEM_DETAILS)} == {item_id}
    # the three shipments count against one product (3 or more ordered): a fourth finds what is left
    left = p.scalar("SELECT quantity FROM external_order_items WHERE sf_order_item_id = :i", i=item_id) - 3
    add(p, "SHIP-MORE", order_id[:15], item_id[:15], float(left) + 1, "2026-03-06", "1ZMORE")
    stages.send_shipments(run_id="ship-3")
    assert status(p, "SHIP-MORE")[0] == "invalid" and "more than the" in status(p, "SHIP-MORE")[1]


def test_a_shipment_waiting_while_sending_is_off_is_not_sent_to_an_order_set_back_to_draft_meanwhile(pipeline):
    """Checked valid while sending was off, the shipment waits; its order is set back to Draft. Turned
    on, sending does not write it to the Draft order: it is invalid, as a shipment checked now would
    be, and goes once the order is activated again and imported."""
    p = pipeline
    imported(p)
    p.set_config(shipments={**TARGETS, "enabled": False})
    order_id, item_id = an_item(p)
    add(p, "SHIP-WAIT", order_id, item_id, 1, "2026-03-01", "1ZWAIT")
    stages.send_shipments(run_id="ship-1")
    assert p.scalar("SELECT state FROM order_shipments WHERE shipment_key = 'SHIP-WAIT'") == "VALID"
    p.org_update("Order", order_id, Status="Draft")
    run = p.run()
    assert run.succeeded, run.error

    p.set_config(shipments=TARGETS)
    stages.send_shipments(run_id="ship-2")
    assert tracking(p, order_id) is None
    assert p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE shipment_key = 'SHIP-WAIT'") == 0
    state, reason = status(p, "SHIP-WAIT")
    assert state == "invalid" and "is deactivated in Salesforce" in reason

    p.org_update("Order", order_id, Status="Activated")
    run = p.run()
    assert run.succeeded, run.error
    stages.send_shipments(run_id="ship-3")
    assert tracking(p, order_id) == "1ZWAIT"
    assert status(p, "SHIP-WAIT") == (SYNCED, None)


def test_a_shipment_whose_write_was_given_up_when_its_order_went_back_to_draft_is_sent_once_it_is_activated_again(pipeline, monkeypatch):
    """The Order's write is still to be sent (locked: it will be retried) when the order is set back
    to Draft, as it must be to amend its products: the write is given up (never written to a Draft
    order), and the shipment waits for its order, invalid with the reason. Activated again and
    imported, the order gets its tracking: the shipment is queued again and synced."""
    monkeypatch.setattr(writeback, "IN_RUN_RETRY_DELAY", 0.01)
    p = pipeline
    imported(p)
    order_id, item_id = an_item(p)
    p.org.admin.set_faults(lock_rows=[order_id])
    add(p, "SHIP-AMEND", order_id, item_id, 1, "2026-03-01", "1ZAMEND")
    stages.send_shipments(run_id="ship-1")
    (locked,) = outbox(p, "SHIP-AMEND", shipments.ACTION_ORDER_FIELDS)
    assert locked["state"] in ("PENDING", "FAILED") and tracking(p, order_id) is None
    p.org.admin.clear_faults()

    p.org_update("Order", order_id, Status="Draft")
    run = p.run()
    assert run.succeeded, run.error
    assert p.scalar("SELECT state FROM writeback_outbox WHERE id = :i", i=locked["id"]) == "DEAD"
    state, reason = status(p, "SHIP-AMEND")
    assert state == "invalid" and "set back to Draft in Salesforce before this shipment's write was sent" in reason
    stages.send_shipments(run_id="ship-2")
    assert tracking(p, order_id) is None  # never written to the Draft order
    state, reason = status(p, "SHIP-AMEND")
    assert state == "invalid" and "is deactivated in Salesforce" in reason  # checked again: still waiting

    p.org_update("Order", order_id, Status="Activated")
    run = p.run()
    assert run.succeeded, run.error
    stages.send_shipments(run_id="ship-3")
    assert tracking(p, order_id) == "1ZAMEND"
    assert "1ZAMEND" in (details(p, item_id) or "")
    assert status(p, "SHIP-AMEND") == (SYNCED, None)


def test_an_older_shipments_failed_order_write_is_superseded_by_a_newer_shipment_and_never_sent(pipeline):
    p = pipeline
    imported(p)
    order_id, item_id = an_item(p)
    p.org.admin.set_faults(fail_rows={order_id: REJECTION})
    add(p, "SHIP-1", order_id, item_id, 1, "2026-03-01", "1Z-OLD")
    stages.send_shipments(run_id="ship-1")
    (refused,) = outbox(p, "SHIP-1", shipments.ACTION_ORDER_FIELDS)
    assert refused["state"] == "FAILED"  # attempts left: it would be sent again once due
    p.org.admin.clear_faults()

    add(p, "SHIP-2", order_id, item_id, 1, "2026-03-05", "1Z-NEW")
    stages.send_shipments(run_id="ship-2")
    assert tracking(p, order_id) == "1Z-NEW"
    make_due(p)
    stages.send_shipments(run_id="ship-3")

    assert tracking(p, order_id) == "1Z-NEW"
    (superseded,) = outbox(p, "SHIP-1", shipments.ACTION_ORDER_FIELDS)
    assert (superseded["state"], superseded["last_error_code"], superseded["updated_run_id"]) == ("DONE", SUPERSEDED, "ship-2")
    assert "SHIP-2" in superseded["last_error_message"] and superseded["next_attempt_at"] is None
    assert status(p, "SHIP-1") == (SYNCED, None)  # not an open failure: its Order write is replaced
    assert p.scalar("SELECT COUNT(*) FROM v_open_failures WHERE sf_order_id = :o", o=order_id) == 0

    # A row still to be sent beside a newer one (left by a version before superseding) is superseded
    # before anything is sent.
    p.execute("UPDATE writeback_outbox SET state = 'FAILED', last_error_code = NULL, next_attempt_at = NULL WHERE id = :i", i=refused["id"])
    stages.send_shipments(run_id="ship-4")
    assert tracking(p, order_id) == "1Z-NEW"
    assert p.scalar("SELECT last_error_code FROM writeback_outbox WHERE id = :i", i=refused["id"]) == SUPERSEDED


def test_a_shipment_whose_write_was_superseded_is_synced_only_once_the_newer_write_is_done(pipeline, monkeypatch):
    """An older shipment's unsent Order write is superseded by a newer shipment's: the newer row
    carries what the Order should show, so the older shipment is pending while that row is, failed
    while it fails, and synced once it is done; through a row superseded in turn, too."""
    p = pipeline
    imported(p)
    order_id, item_id = an_item(p)
    p.org.admin.set_faults(fail_rows={order_id: REJECTION})
    add(p, "SHIP-1", order_id, item_id, 1, "2026-03-01", "1Z-1")
    stages.send_shipments(run_id="ship-1")
    assert status(p, "SHIP-1")[0] == shipments.SYNC_FAILED

    def queued_not_sent(run_id: str) -> None:
        with monkeypatch.context() as m:
            m.setattr(writeback.OutboxDrainer, "drain", lambda self: self.summary)
            stages.send_shipments(run_id=run_id)

    add(p, "SHIP-2", order_id, item_id, 1, "2026-03-05", "1Z-2")
    queued_not_sent("ship-2")
    (older,) = outbox(p, "SHIP-1", shipments.ACTION_ORDER_FIELDS)
    assert (older["state"], older["last_error_code"]) == ("DONE", SUPERSEDED)
    assert status(p, "SHIP-1") == status(p, "SHIP-2") == (shipments.SYNC_PENDING, None)  # the Order shows neither tracking yet
    with p.engine.connect() as conn:  # the External Orders page says the same
        page = shipments_of(conn, tables(p.schema), [order_id])[order_id]
    assert {s["shipment_key"]: (s["status"], s["dot"]) for s in page} == {"SHIP-1": ("pending", "pending"), "SHIP-2": ("pending", "pending")}

    stages.send_shipments(run_id="ship-3")  # still refused
    older_status, message = status(p, "SHIP-1")
    assert older_status == shipments.SYNC_FAILED and REJECTION[1] in message and "SHIP-2" in message
    assert status(p, "SHIP-2")[0] == shipments.SYNC_FAILED

    add(p, "SHIP-3", order_id, item_id, 1, "2026-03-09", "1Z-3")  # supersedes SHIP-2's refused row
    queued_not_sent("ship-4")
    assert status(p, "SHIP-1") == status(p, "SHIP-2") == status(p, "SHIP-3") == (shipments.SYNC_PENDING, None)

    p.org.admin.clear_faults()
    stages.send_shipments(run_id="ship-5")

    assert tracking(p, order_id) == "1Z-3"
    assert status(p, "SHIP-1") == status(p, "SHIP-2") == status(p, "SHIP-3") == (SYNCED, None)


def shipped_then_imported(p, targets: dict) -> int:
    """Fifty orders' shipments sent after an import; what the next import extracts, less what it
    extracts with no shipments sent (the order the last write-back wrote last, read again)."""
    assert p.run().succeeded
    unchanged = p.run().results["extract"]["extracted"]
    p.set_config(shipments=targets)
    for n, (order_id, item_id) in enumerate(orders_to_ship(p, 50)):
        add(p, f"SHIP-{n}", order_id, item_id, 1, "2026-03-01", f"1Z{n:03}")
    sent = stages.send_shipments(run_id="ship-1")
    assert sent["written"] >= 50
    after = p.run()
    assert after.succeeded, after.error
    return after.results["extract"]["extracted"] - unchanged


def test_the_next_import_does_not_read_back_the_orders_the_shipments_wrote(pipeline):
    assert shipped_then_imported(pipeline, dict(TARGETS, order_item_field=None)) == LAST_WRITTEN  # not 50


def test_the_next_import_does_not_read_back_the_orders_whose_order_products_the_shipments_wrote(pipeline):
    """An Order Product's write is rolled up into its order: the order's last change is ours too."""
    assert shipped_then_imported(pipeline, dict(TARGETS, order_fields={})) == LAST_WRITTEN  # not 50


def test_an_edit_a_shipment_writes_over_is_read_by_the_next_import(pipeline, monkeypatch):
    """Someone edits an order after the import read it; a shipment of it is queued well after (no
    import in between) and written over the edit in the integration user's name: the write-back's
    check reaches back to the import's watermark, not to the shipment's queueing, so the order is
    read again rather than left out as our own write."""
    p = pipeline
    imported(p)
    p.set_config(shipments=dict(TARGETS, order_item_field=None))
    (edited, edited_item), (other, other_item) = orders_to_ship(p, 2)
    integration = p.org.store.integration_user_id
    someone = p.org_rows('SELECT Id FROM "User" WHERE Id != ? ORDER BY Id', integration)[0]["Id"]
    with p.org.store.lock:
        p.org.store.update("Order", edited, {"PoNumber": "PO-EDITED"}, as_user=someone)
    queue = shipments.queue
    later = datetime.now(UTC) + timedelta(minutes=30)
    monkeypatch.setattr(shipments, "queue", lambda *args, **kwargs: queue(*args, **{**kwargs, "now": later}))
    add(p, "SHIP-EDITED", edited, edited_item, 1, "2026-03-01", "1Z-E")  # written first: not the span's last
    add(p, "SHIP-OTHER", other, other_item, 1, "2026-03-01", "1Z-O")

    stages.send_shipments(run_id="ship-1")
    assert p.org_rows('SELECT LastModifiedById FROM "Order" WHERE Id = ?', edited)[0]["LastModifiedById"] == integration
    run = p.run()

    assert run.succeeded, run.error
    assert p.scalar("SELECT po_number FROM external_orders WHERE sf_order_id = :o", o=edited) == "PO-EDITED"
