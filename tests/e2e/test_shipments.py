"""Shipments end to end: orders imported by the import DAG, shipments added to the warehouse, the
shipments DAG (dag.test()) checks and sends them, and they are found in the sandbox org, on
SQLite and on PostgreSQL, for both targets (Order / Order Product fields and Shipment records)."""

from __future__ import annotations

import json

import sqlalchemy as sa

from salesforce_orders.shipments import SYNC_FAILED, SYNCED, add_shipment, sync_status
from salesforce_orders.warehouse import tables

BOTH_TARGETS = {
    "enabled": True,
    "order_fields": {"tracking_number": "Tracking_Number__c", "carrier": "Carrier__c", "shipped_date": "Shipped_Date__c"},
    "order_item_field": "Shipment_Details__c",
    "shipment_object": {"object": "Shipment", "order_field": "OrderId", "external_id_field": "Shipment_Key__c"},
}
REJECTION = ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "Tracking number needs a carrier account"]


def run_shipments(h) -> str:
    from salesforce_orders_local.airflow_env import run_dag

    dag_run = run_dag(dag_id="salesforce_orders_shipments")
    return str(getattr(dag_run.state, "value", dag_run.state))


def add(h, key: str, lines: list[tuple[str, float]], **values) -> bool:
    shipment = {"shipment_key": key, "carrier": "UPS", "service": "Ground", "tracking_url": f"https://track.example.com/{key}", **values}
    with h.engine.begin() as conn:
        return add_shipment(conn, tables(h.schema), shipment, [{"sf_order_item_id": i, "quantity": q} for i, q in lines])


def shipment(h, key: str) -> dict:
    return h.query("SELECT * FROM order_shipments WHERE shipment_key = :k", k=key)[0]


def status(h, key: str) -> tuple[str, str | None]:
    row = shipment(h, key)
    outbox = [_Row(r) for r in h.query("SELECT * FROM writeback_outbox WHERE shipment_key = :k ORDER BY id", k=key)]
    return sync_status(row["state"], row["errors"], outbox)


class _Row:
    def __init__(self, values: dict):
        self.__dict__.update(values)


def an_order_to_ship(h) -> tuple[dict, dict]:
    """An imported order with an order product of quantity 2 or more."""
    rows = h.query(
        "SELECT o.sf_order_id, o.order_number, i.sf_order_item_id, i.quantity FROM external_orders o "
        "JOIN external_order_items i ON i.sf_order_id = o.sf_order_id WHERE i.quantity >= 2 AND o.sf_state = 'active' "
        "ORDER BY o.sf_order_id, i.sf_order_item_id"
    )
    assert rows, "the seeded org must hold an order product of quantity 2 or more"
    return {"sf_order_id": rows[0]["sf_order_id"], "order_number": rows[0]["order_number"]}, rows[0]


def test_shipments_reach_salesforce_with_checks_rejections_retries_and_no_resends(harness):
    assert harness.run()["dag_state"] == "success"
    order, item = an_order_to_ship(harness)
    order_id, item_id, ordered = order["sf_order_id"], item["sf_order_item_id"], float(item["quantity"])

    # a partial shipment (by order number), one shipping more than was ordered, one of an order never imported
    assert add(harness, "SHIP-1", [(item_id, 1)], order_number=order["order_number"], tracking_number="1Z001", shipped_date="2026-03-01")
    assert add(harness, "SHIP-TOO-MANY", [(item_id, ordered + 1)], sf_order_id=order_id, tracking_number="1Z002", shipped_date="2026-03-01")
    assert add(harness, "SHIP-NO-ORDER", [(item_id, 1)], order_number="NOT-AN-ORDER", tracking_number="1Z003", shipped_date="2026-03-01")
    assert add(harness, "SHIP-NO-TRACKING", [(item_id, 1)], sf_order_id=order_id, shipped_date="2026-03-01")

    # off by default: checked, nothing sent
    assert run_shipments(harness) == "success"
    assert shipment(harness, "SHIP-1")["state"] == "VALID"
    assert harness.org_rows('SELECT Tracking_Number__c FROM "Order" WHERE Id = ?', order_id)[0]["Tracking_Number__c"] is None
    assert harness.org_rows("SELECT COUNT(*) AS n FROM Shipment")[0]["n"] == 0
    too_many = status(harness, "SHIP-TOO-MANY")
    assert too_many[0] == "invalid" and "quantity" in too_many[1] and f"{ordered:g} ordered" in too_many[1]
    assert "order_number NOT-AN-ORDER is not an imported order" in status(harness, "SHIP-NO-ORDER")[1]
    assert "tracking_number: required" in status(harness, "SHIP-NO-TRACKING")[1]

    # enabled, both targets; Salesforce rejects the Order's update
    harness.set_config(shipments=BOTH_TARGETS)
    harness.org.admin.set_faults(fail_rows={order_id: REJECTION})
    assert run_shipments(harness) == "success"
    record = harness.org_rows("SELECT * FROM Shipment WHERE Shipment_Key__c = 'SHIP-1'")
    assert len(record) == 1
    assert (record[0]["OrderId"], record[0]["TrackingNumber"], record[0]["Provider"], record[0]["Shipped_Date__c"]) == (order_id, "1Z001", "UPS", "2026-03-01")
    details = harness.org_rows("SELECT Shipment_Details__c FROM OrderItem WHERE Id = ?", item_id)[0]["Shipment_Details__c"]
    assert details == "1 × UPS Ground 1Z001 (2026-03-01)"
    state, message = status(harness, "SHIP-1")
    assert state == SYNC_FAILED and REJECTION[0] in message and REJECTION[1] in message
    assert harness.org_rows('SELECT Tracking_Number__c FROM "Order" WHERE Id = ?', order_id)[0]["Tracking_Number__c"] is None
    # the shipment has its own status: the order's import lifecycle is not moved by it
    assert harness.query("SELECT lifecycle_state FROM external_orders WHERE sf_order_id = :o", o=order_id)[0]["lifecycle_state"] == "COMPLETE"
    assert harness.query("SELECT state FROM order_shipments WHERE shipment_key = 'SHIP-TOO-MANY'")[0]["state"] == "INVALID"

    # the fault is fixed; once the retry is due the next run sends it
    harness.org.admin.clear_faults()
    with harness.engine.begin() as conn:
        outbox = tables(harness.schema).writeback_outbox
        conn.execute(sa.update(outbox).where(outbox.c.state == "FAILED").values(next_attempt_at=None))
    assert run_shipments(harness) == "success"
    assert status(harness, "SHIP-1") == (SYNCED, None)
    sf_order = harness.org_rows('SELECT Tracking_Number__c, Carrier__c, Shipped_Date__c FROM "Order" WHERE Id = ?', order_id)[0]
    assert sf_order == {"Tracking_Number__c": "1Z001", "Carrier__c": "UPS", "Shipped_Date__c": "2026-03-01"}

    # the rest ships later: the Order shows the latest, each shipment its own record
    rest = ordered - 1
    assert add(harness, "SHIP-2", [(item_id, rest)], sf_order_id=order_id, carrier="FedEx", tracking_number="7777", shipped_date="2026-03-05")
    assert run_shipments(harness) == "success"
    assert status(harness, "SHIP-2") == (SYNCED, None)
    sf_order = harness.org_rows('SELECT Tracking_Number__c, Carrier__c, Shipped_Date__c FROM "Order" WHERE Id = ?', order_id)[0]
    assert sf_order == {"Tracking_Number__c": "7777", "Carrier__c": "FedEx", "Shipped_Date__c": "2026-03-05"}
    records = harness.org_rows("SELECT Shipment_Key__c, TrackingNumber FROM Shipment WHERE OrderId = ? ORDER BY Shipment_Key__c", order_id)
    assert records == [{"Shipment_Key__c": "SHIP-1", "TrackingNumber": "1Z001"}, {"Shipment_Key__c": "SHIP-2", "TrackingNumber": "7777"}]
    details = harness.org_rows("SELECT Shipment_Details__c FROM OrderItem WHERE Id = ?", item_id)[0]["Shipment_Details__c"]
    assert details == f"1 × UPS Ground 1Z001 (2026-03-01)\n{rest:g} × FedEx Ground 7777 (2026-03-05)"

    # nothing left to ship: one more unit is invalid
    assert add(harness, "SHIP-3", [(item_id, 1)], sf_order_id=order_id, tracking_number="8888", shipped_date="2026-03-06")
    # the same key again, even with other values: nothing changes, nothing is sent again
    before = harness.org_rows("SELECT Id, SystemModstamp FROM Shipment ORDER BY Id")
    order_stamp = harness.org_rows('SELECT SystemModstamp FROM "Order" WHERE Id = ?', order_id)
    outbox_rows = harness.query("SELECT COUNT(*) AS n FROM writeback_outbox WHERE shipment_key IS NOT NULL")[0]["n"]
    assert not add(harness, "SHIP-1", [(item_id, 1)], sf_order_id=order_id, tracking_number="CHANGED", shipped_date="2026-04-01")
    assert run_shipments(harness) == "success"
    assert "more than the 0 left to ship" in status(harness, "SHIP-3")[1]
    assert harness.org_rows("SELECT Id, SystemModstamp FROM Shipment ORDER BY Id") == before
    assert harness.org_rows('SELECT SystemModstamp FROM "Order" WHERE Id = ?', order_id) == order_stamp
    assert harness.query("SELECT COUNT(*) AS n FROM writeback_outbox WHERE shipment_key IS NOT NULL")[0]["n"] == outbox_rows
    assert shipment(harness, "SHIP-1")["tracking_number"] == "1Z001"
    errors = shipment(harness, "SHIP-TOO-MANY")["errors"]
    assert (errors if isinstance(errors, list) else json.loads(errors))
