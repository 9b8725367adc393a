"""The load transaction on SQLite and PostgreSQL: upserts by Salesforce Id, content-hash no-ops,
the outbox, customers and locations, the watermark, status changes, quarantine and rollback."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from salesforce_orders import load
from salesforce_orders.load import (
    LoadCounts,
    get_watermark,
    load_run,
    mark_status_changes,
    record_quarantine,
)
from salesforce_orders.warehouse import tables

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
T2 = T0 + timedelta(minutes=10)
WAREHOUSE_TABLES = (
    "customers", "customer_locations", "external_orders", "external_order_items", "order_services",
    "writeback_outbox", "quarantined_orders", "sync_state",
)


def run(target, run_id: str, *chunks, now=T0, watermark=None, **options) -> LoadCounts:
    return load_run(target.engine, run_id, list(chunks), schema=target.schema, now=now, watermark=watermark, **options)


def select_all(target, table_name: str, *where) -> list[dict]:
    t = getattr(tables(target.schema), table_name)
    order = [c for c in t.primary_key.columns]
    with target.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).where(*where).order_by(*order)).mappings()]


def snapshot(target) -> dict[str, list[dict]]:
    return {name: select_all(target, name) for name in WAREHOUSE_TABLES}


def one(target, table_name: str, *where) -> dict:
    [row] = select_all(target, table_name, *where)
    return row


def outbox(target, *where) -> list[dict]:
    return select_all(target, "writeback_outbox", *where)


def test_first_load_inserts_orders_with_everything_they_carry(created_warehouse, make_transformed):
    target = created_warehouse
    first = make_transformed(1, items=((1, "S1", 2.0, 10.0), (2, "S1", 1.0, 5.0), (3, None, 1.0, 1.25)), metadata={"Région": "Nord"})
    second = make_transformed(2, account=2, parent_account=3, write_backs=False)

    counts = run(target, "run-1", [first, second], watermark="2026-01-02T03:04:05.000+0000")

    assert counts == LoadCounts(inserted=2, updated=0, unchanged=0, outbox_rows=2, customers=3, locations=2)
    order = one(target, "external_orders", tables(target.schema).external_orders.c.sf_order_id == first.order.sf_order_id)
    assert order["order_number"] == "00000001" and order["external_name"] == "SF-00000001 Acme Corp"
    assert (order["lifecycle_state"], order["sf_state"], order["last_run_id"]) == ("READY", "active", "run-1")
    assert order["first_imported_at"] == order["last_imported_at"] == order["sf_state_changed_at"] == T0
    assert order["activated_at"] == datetime(2026, 1, 2, 3, 0, tzinfo=UTC)
    assert str(order["effective_date"]) == "2026-01-02"
    assert order["total_amount"] == 26.25 and order["metadata"] == {"Région": "Nord"}
    assert order["service_city"] == "Springfield" and order["service_country_code"] == "US"

    items = select_all(target, "external_order_items")
    assert len(items) == 4 and {i["last_run_id"] for i in items} == {"run-1"}
    services = {s["service_key"]: s for s in select_all(target, "order_services")}
    assert services[f"{first.order.sf_order_id}:S1"]["item_count"] == 2
    assert services[f"{first.order.sf_order_id}:S1"]["total_amount"] == 25.0
    assert len(services) == 3

    rows = outbox(target)
    assert [(r["sf_object"], r["action"], r["state"], r["attempts"], r["created_run_id"]) for r in rows] == [
        ("Order", "mark_imported", "PENDING", 0, "run-1"),
        ("Account", "set_customer_id", "PENDING", 0, "run-1"),
    ]
    assert rows[0]["fields"] == {"Status": "Imported"} and rows[0]["next_attempt_at"] == T0
    assert {c["customer_id"] for c in select_all(target, "customers")} == {"C-1", "C-2", "C-3"}


def test_unchanged_reload_writes_nothing(created_warehouse, make_transformed, capture_sql):
    target = created_warehouse
    records = [make_transformed(n, account=n % 2) for n in range(1, 5)]
    run(target, "run-1", records, watermark="2026-01-02T03:04:05Z")
    before = snapshot(target)

    # our own write-back's echo: same content, later SystemModstamp
    echo = [replace(r, order=replace(r.order, sf_system_modstamp="2026-01-02T05:00:00.000+0000")) for r in records]
    with capture_sql(target.engine) as statements:
        counts = run(target, "run-2", echo, now=T1)

    assert counts == LoadCounts(inserted=0, updated=0, unchanged=4, outbox_rows=0, customers=0, locations=0)
    assert snapshot(target) == before
    writes = [s for s in statements if s.lstrip().split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    # nothing at all: no order had a refusal or skip to release, and nothing touches orders,
    # customers or the outbox
    assert writes == []


def test_changed_order_is_updated_and_its_items_replaced(created_warehouse, make_transformed):
    target = created_warehouse
    o = tables(target.schema).external_orders
    original = make_transformed(1, items=((1, "S1", 1.0, 10.0), (2, "S2", 1.0, 20.0)))
    untouched = make_transformed(2, items=((1, "S1", 1.0, 10.0),))
    run(target, "run-1", [original, untouched])

    changed = make_transformed(1, items=((2, "S2", 3.0, 20.0), (3, "S3", 1.0, 7.0)), notes="call first")
    counts = run(target, "run-2", [changed, untouched], now=T1)

    assert (counts.inserted, counts.updated, counts.unchanged) == (0, 1, 1)
    order = one(target, "external_orders", o.c.sf_order_id == changed.order.sf_order_id)
    assert (order["notes"], order["total_amount"], order["content_hash"]) == ("call first", 67.0, changed.content_hash)
    assert (order["first_imported_at"], order["last_imported_at"], order["last_run_id"]) == (T0, T1, "run-2")
    assert order["sf_state_changed_at"] == T0  # it stayed active
    assert order["updated_at"] == T1
    # the item the new version no longer has is kept, marked deleted; the changed and new ones move
    items = select_all(target, "external_order_items", tables(target.schema).external_order_items.c.sf_order_id == changed.order.sf_order_id)
    assert [(i["sf_order_item_id"][-6:], i["quantity"], i["last_run_id"], i["is_deleted"], i["deleted_at"], i["updated_at"]) for i in items] == [
        ("101AAA", 1.0, "run-1", True, T1, T1), ("102AAA", 3.0, "run-2", False, None, T1), ("103AAA", 1.0, "run-2", False, None, T1),
    ]
    services = select_all(target, "order_services", tables(target.schema).order_services.c.sf_order_id == changed.order.sf_order_id)
    assert [(s["service_number"], s["is_deleted"]) for s in services] == [("S1", True), ("S2", False), ("S3", False)]
    # the other order's rows are untouched
    other = one(target, "external_orders", o.c.sf_order_id == untouched.order.sf_order_id)
    assert (other["last_run_id"], other["last_imported_at"], other["updated_at"]) == ("run-1", T0, T0)
    assert len(select_all(target, "external_order_items")) == 4

    # a later version that changes only the order's notes leaves its products as they were
    again = make_transformed(1, items=((2, "S2", 3.0, 20.0), (3, "S3", 1.0, 7.0)), notes="call twice")
    run(target, "run-3", [again], now=T1 + (T1 - T0))
    items = select_all(target, "external_order_items", tables(target.schema).external_order_items.c.sf_order_id == changed.order.sf_order_id)
    assert [(i["last_run_id"], i["updated_at"]) for i in items] == [("run-1", T1), ("run-2", T1), ("run-2", T1)]


@pytest.mark.parametrize("outbox_records", ["read whole", "looked up per batch"])
def test_pending_outbox_row_is_replaced_and_finished_rows_kept(created_warehouse, make_transformed, monkeypatch, outbox_records):
    target = created_warehouse
    if outbox_records == "looked up per batch":  # an outbox too large to read whole
        monkeypatch.setattr(load, "OUTBOX_READ_WHOLE", 0)
    w = tables(target.schema).writeback_outbox
    order_rows = w.c.sf_object == "Order"
    # two orders of one account in one run: one Account row, not two
    run(target, "run-1", [make_transformed(1), make_transformed(2)])
    assert [(r["sf_object"], r["sf_record_id"][-6:]) for r in outbox(target)] == [
        ("Order", "001AAA"), ("Account", "001AAA"), ("Order", "002AAA"),
    ]

    # a later version while the first is still pending: replaced in place
    run(target, "run-2", [make_transformed(1, notes="v2")], now=T1)
    [pending] = outbox(target, order_rows, w.c.sf_order_id == make_transformed(1).order.sf_order_id)
    assert (pending["state"], pending["created_run_id"], pending["updated_run_id"]) == ("PENDING", "run-1", "run-2")
    assert (pending["created_at"], pending["updated_at"]) == (T0, T1)

    # once sent, a version read before the send plans the same write again: not queued twice
    with target.engine.begin() as conn:
        conn.execute(sa.update(w).where(w.c.id == pending["id"]).values(state="DONE", attempts=1))
    run(target, "run-2b", [make_transformed(1, notes="v2b")], now=T1)
    assert len(outbox(target, order_rows, w.c.sf_order_id == make_transformed(1).order.sf_order_id)) == 1
    # a version changed after the send queues a new row and the history stays
    run(target, "run-3", [make_transformed(1, notes="v3", modstamp="2026-03-01T12:07:00.000+0000")], now=T2)
    rows = outbox(target, order_rows, w.c.sf_order_id == make_transformed(1).order.sf_order_id)
    assert [(r["state"], r["created_run_id"]) for r in rows] == [("DONE", "run-1"), ("PENDING", "run-3")]
    assert len(outbox(target, w.c.sf_object == "Account")) == 1


def test_a_first_import_looks_up_only_the_outbox_records_it_already_queued(created_warehouse, make_transformed, monkeypatch, capture_sql):
    # The outbox holds one row when the load starts (a card mask queued before it): that record
    # and the ones this run queued in earlier batches are looked up, the others inserted outright.
    target = created_warehouse
    w = tables(target.schema).writeback_outbox
    monkeypatch.setattr(load, "ORDERS_PER_BATCH", 1)
    masked = make_transformed(3, account=2).order.sf_order_id
    with target.engine.begin() as conn:
        conn.execute(sa.insert(w).values(
            sf_object="Order", sf_record_id=masked, sf_order_id=masked, action="card_mask", fields={}, state="PENDING",
            created_run_id="run-0", updated_run_id="run-0", created_at=T0, updated_at=T0,
        ))
    orders = [make_transformed(1, account=1), make_transformed(2, account=2), make_transformed(3, account=2), make_transformed(4, account=1)]
    with capture_sql(target.engine) as statements:
        run(target, "run-1", orders)
    lookups = [s for s in statements if s.lstrip().upper().startswith("SELECT") and "writeback_outbox" in s and "sf_record_id" in s]
    # the outbox's records read once at the start; batches 1 and 2 (accounts 1 and 2, new): nothing
    # to look up; batch 3: its order (the masked one) and account 2; batch 4: account 1 (a
    # statement per sObject)
    assert len(lookups) == 1 + 2 + 1
    rows = outbox(target)
    assert sorted((r["sf_object"], r["sf_record_id"][-6:], r["sf_order_id"][-6:]) for r in rows) == [
        ("Account", "001AAA", "004AAA"), ("Account", "002AAA", "003AAA"),
        ("Order", "001AAA", "001AAA"), ("Order", "002AAA", "002AAA"), ("Order", "003AAA", "003AAA"), ("Order", "004AAA", "004AAA"),
    ]
    assert next(r for r in rows if r["sf_record_id"] == masked and r["sf_object"] == "Order")["updated_run_id"] == "run-1"


def test_retry_pending_row_is_reset_when_replaced(created_warehouse, make_transformed):
    target = created_warehouse
    w = tables(target.schema).writeback_outbox
    run(target, "run-1", [make_transformed(1)])
    with target.engine.begin() as conn:
        conn.execute(sa.update(w).values(attempts=2, last_error_code="UNABLE_TO_LOCK_ROW", next_attempt_at=T2))
    run(target, "run-2", [make_transformed(1, notes="v2")], now=T1)
    assert {(r["attempts"], r["last_error_code"], r["next_attempt_at"]) for r in outbox(target)} == {(0, None, T1)}


@pytest.mark.parametrize(
    ("left", "error_code"), [("FAILED", "FIELD_CUSTOM_VALIDATION_EXCEPTION"), ("PROCESSING", None)], ids=["failed", "processing"]
)
def test_a_row_still_to_be_sent_is_replaced_by_the_new_write_and_a_shipments_row_is_left_alone(created_warehouse, make_transformed, left, error_code):
    """A record's write-back that failed (attempts left), or that a write-back which died left
    PROCESSING, and a new version's write: one row, the new write, PENDING with fresh attempts; two
    due rows would reach Salesforce in no set order, the older value perhaps last, or both in one
    call. A shipment's row for the same Order (its tracking fields) is not the import's: it keeps
    its fields and action, and is sent as the shipments DAG queued it."""
    target = created_warehouse
    w = tables(target.schema).writeback_outbox
    order = make_transformed(1)
    order_id = order.order.sf_order_id
    run(target, "run-1", [order])
    with target.engine.begin() as conn:
        conn.execute(
            sa.update(w).where(w.c.sf_object == "Order").values(
                state=left, attempts=1, last_error_code=error_code, next_attempt_at=T2,
            )
        )
        conn.execute(sa.insert(w).values(
            sf_object="Order", sf_record_id=order_id, sf_order_id=order_id, action="shipment_order_fields",
            fields={"Tracking_Number__c": "1Z999"}, state="PENDING", attempts=0, shipment_key="S-1",
            created_run_id="shipments-1", updated_run_id="shipments-1", created_at=T0, updated_at=T0,
        ))

    run(target, "run-2", [make_transformed(1, notes="v2", modstamp="2026-03-01T12:07:00.000+0000")], now=T1)

    rows = outbox(target, w.c.sf_object == "Order")
    assert [(r["state"], r["attempts"], r["last_error_code"], r["next_attempt_at"], r["shipment_key"], r["updated_run_id"]) for r in rows] == [
        ("PENDING", 0, None, T1, None, "run-2"),
        ("PENDING", 0, None, None, "S-1", "shipments-1"),
    ]
    assert rows[1]["fields"] == {"Tracking_Number__c": "1Z999"} and rows[1]["action"] == "shipment_order_fields"


def test_parent_only_record_never_overwrites_a_full_customer(created_warehouse, make_transformed):
    target = created_warehouse
    c = tables(target.schema).customers
    full_parent = make_transformed(1, account=10, account_name="Holding Full Name", street="10 Head Office Rd")
    run(target, "run-1", [full_parent])
    known = one(target, "customers", c.c.customer_id == "C-10")

    # a child order names the parent only by Account.Parent.Name, with no address
    child = make_transformed(2, account=11, parent_account=10, parent_name="Holding (short)")
    run(target, "run-2", [child], now=T1)
    assert one(target, "customers", c.c.customer_id == "C-10") == known
    assert one(target, "customers", c.c.customer_id == "C-11")["parent_customer_id"] == "C-10"

    # the same in one batch, the child first
    run(target, "run-3", [make_transformed(3, account=21, parent_account=20), make_transformed(4, account=20, account_name="Parent 20")], now=T2)
    assert one(target, "customers", c.c.customer_id == "C-20")["billing_street"] == "1 Main St"
    assert one(target, "customers", c.c.customer_id == "C-20")["name"] == "Parent 20"


def test_parent_known_only_by_name_is_created_then_completed(created_warehouse, make_transformed):
    target = created_warehouse
    c = tables(target.schema).customers
    run(target, "run-1", [make_transformed(1, account=31, parent_account=30, parent_name="Thin Parent")])
    thin = one(target, "customers", c.c.customer_id == "C-30")
    assert (thin["name"], thin["billing_city"], thin["first_imported_at"]) == ("Thin Parent", None, T0)

    run(target, "run-2", [make_transformed(2, account=30, account_name="Thin Parent Inc")], now=T1)
    full = one(target, "customers", c.c.customer_id == "C-30")
    assert (full["name"], full["billing_city"], full["first_imported_at"], full["updated_at"]) == (
        "Thin Parent Inc", "Springfield", T0, T1,
    )


def test_multi_location_customers_are_detected(created_warehouse, make_transformed):
    target = created_warehouse
    c = tables(target.schema).customers
    run(target, "run-1", [make_transformed(1, account=1, street="1 Main St"), make_transformed(2, account=2)])
    assert one(target, "customers", c.c.customer_id == "C-1")["location_count"] == 1

    run(target, "run-2", [make_transformed(3, account=1, street="2 Depot Way"), make_transformed(4, account=2)], now=T1)
    multi, single = one(target, "customers", c.c.customer_id == "C-1"), one(target, "customers", c.c.customer_id == "C-2")
    assert (multi["location_count"], multi["is_multi_location"]) == (2, True)
    assert (single["location_count"], single["is_multi_location"]) == (1, False)
    first_seen = {loc["street"]: loc["first_seen_at"] for loc in select_all(target, "customer_locations", tables(target.schema).customer_locations.c.customer_id == "C-1")}
    assert first_seen == {"1 Main St": T0, "2 Depot Way": T1}


def test_watermark_only_moves_forward(created_warehouse, make_transformed):
    target = created_warehouse
    assert get_watermark(target.engine, target.schema) is None
    run(target, "run-1", [make_transformed(1)], watermark="2026-01-02T03:04:05.000+0000")
    assert get_watermark(target.engine, target.schema) == "2026-01-02T03:04:05Z"
    run(target, "run-2", [make_transformed(2)], watermark="2026-01-01T23:59:59Z")
    assert get_watermark(target.engine, target.schema) == "2026-01-02T03:04:05Z"
    run(target, "run-3", [], watermark=None)
    assert get_watermark(target.engine, target.schema) == "2026-01-02T03:04:05Z"
    # a later instant written with another offset
    run(target, "run-4", [], watermark="2026-01-02T05:00:00+01:00")
    assert get_watermark(target.engine, target.schema) == "2026-01-02T04:00:00Z"


def test_load_statements_are_batched(created_warehouse, make_transformed, monkeypatch, capture_sql):
    target = created_warehouse
    monkeypatch.setattr(load, "ORDERS_PER_BATCH", 2)
    records = [make_transformed(n, account=1) for n in range(1, 6)]
    with capture_sql(target.engine) as statements:
        counts = run(target, "run-1", records[:4], records[4:])
    assert (counts.inserted, counts.customers, counts.locations) == (5, 1, 1)
    order_inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO") and "external_orders " in s]
    assert len(order_inserts) == 3  # ceil(4 / 2) + 1: one statement per batch, not per order
    assert len(select_all(target, "external_orders")) == 5


def test_status_changes_mark_orders_and_kill_their_pending_write_backs(created_warehouse, make_transformed):
    target = created_warehouse
    o, w = tables(target.schema).external_orders, tables(target.schema).writeback_outbox
    drafted, deleted, active = (make_transformed(n) for n in (1, 2, 3))
    run(target, "run-1", [drafted, deleted, active])
    changes = [
        {"Id": drafted.order.sf_order_id, "StatusCode": "Draft", "IsDeleted": False, "SystemModstamp": "2026-02-01T00:00:00.000+0000"},
        {"Id": deleted.order.sf_order_id, "StatusCode": "Activated", "IsDeleted": True, "SystemModstamp": "2026-02-01T00:00:00.000+0000"},
        {"Id": active.order.sf_order_id, "StatusCode": "Activated", "IsDeleted": False, "SystemModstamp": "2026-02-01T00:00:00.000+0000"},
        {"Id": "801999999999999AAA", "StatusCode": "Draft", "IsDeleted": False, "SystemModstamp": "2026-02-01T00:00:00.000+0000"},
    ]

    assert mark_status_changes(target.engine, changes, run_id="run-2", schema=target.schema, now=T1) == 2
    states = {r["sf_order_id"]: (r["sf_state"], r["sf_state_changed_at"], r["last_run_id"]) for r in select_all(target, "external_orders")}
    assert states == {
        drafted.order.sf_order_id: ("deactivated", T1, "run-2"),
        deleted.order.sf_order_id: ("deleted", T1, "run-2"),
        active.order.sf_order_id: ("active", T0, "run-1"),
    }
    dead = outbox(target, w.c.state == "DEAD")
    assert {(r["sf_order_id"], r["last_error_code"]) for r in dead} == {
        (drafted.order.sf_order_id, "ORDER_DEACTIVATED"), (deleted.order.sf_order_id, "ORDER_DELETED"),
    }
    assert "set back to Draft" in next(r["last_error_message"] for r in dead if r["sf_order_id"] == drafted.order.sf_order_id)
    assert {r["sf_order_id"] for r in outbox(target, w.c.state == "PENDING")} == {active.order.sf_order_id}

    # seen again: nothing new to mark
    assert mark_status_changes(target.engine, changes, run_id="run-3", schema=target.schema, now=T2) == 0
    # the version staged before the change, loaded late (a cleared task): older than the mark, kept out
    stale = run(target, "run-late", [drafted], now=T2)
    assert (stale.superseded, stale.updated) == (1, 0)
    assert one(target, "external_orders", o.c.sf_order_id == drafted.order.sf_order_id)["sf_state"] == "deactivated"
    # activated again later with the same content: loaded as an update, active, write-back queued anew
    reactivated = make_transformed(1, modstamp="2026-02-02T00:00:00.000+0000")
    counts = run(target, "run-4", [reactivated], now=T2)
    assert counts.updated == 1
    back = one(target, "external_orders", o.c.sf_order_id == drafted.order.sf_order_id)
    assert (back["sf_state"], back["sf_state_changed_at"], back["lifecycle_state"]) == ("active", T2, "READY")
    assert len(outbox(target, w.c.sf_order_id == drafted.order.sf_order_id, w.c.state == "PENDING")) == 2


@pytest.mark.parametrize("read_whole", [True, False], ids=["unreleased read whole", "too many to read whole"])
def test_quarantine_is_recorded_once_per_run_and_released_by_a_later_load(created_warehouse, make_transformed, monkeypatch, read_whole):
    if not read_whole:  # each batch releases its own orders, as when a warehouse holds many refusals
        monkeypatch.setattr(load, "OUTBOX_READ_WHOLE", 0)
    target = created_warehouse
    q = tables(target.schema).quarantined_orders
    record = make_transformed(1)
    bad = {
        "sf_order_id": record.order.sf_order_id,
        "order_number": "x" * 40,  # too long for an OrderNumber, which is why it is here
        "account_name": "Acme Corp",
        "failed_checks": ["field_lengths"],
        "details": {"field_lengths": "OrderNumber is 40 characters, more than the 30 allowed"},
    }
    with target.engine.begin() as conn:
        record_quarantine(conn, "run-1", [bad], schema=target.schema, now=T0)
        record_quarantine(conn, "run-1", [{**bad, "failed_checks": ["field_lengths", "has_products"]}], schema=target.schema, now=T0)
        record_quarantine(conn, "run-2", [bad], schema=target.schema, now=T1)
    rows = select_all(target, "quarantined_orders")
    assert [(r["run_id"], r["failed_checks"], r["released_at"]) for r in rows] == [
        ("run-1", ["field_lengths", "has_products"], None), ("run-2", ["field_lengths"], None),
    ]
    assert rows[0]["details"] == bad["details"]

    run(target, "run-3", [record], now=T2)
    assert {r["released_at"] for r in select_all(target, "quarantined_orders", q.c.sf_order_id == record.order.sf_order_id)} == {T2}


def test_error_in_the_middle_of_a_load_leaves_nothing(created_warehouse, make_transformed):
    target = created_warehouse
    run(target, "run-1", [make_transformed(1)], watermark="2026-01-02T03:04:05Z")
    with target.engine.begin() as conn:
        record_quarantine(conn, "run-1", [{"sf_order_id": make_transformed(2).order.sf_order_id, "order_number": "2",
                                           "account_name": None, "failed_checks": ["x"], "details": {"x": "y"}}], schema=target.schema)
    before = snapshot(target)

    def chunks():
        yield [make_transformed(1, notes="changed"), make_transformed(2), make_transformed(3, account=3, parent_account=4)]
        raise ConnectionError("extract source went away")

    with pytest.raises(ConnectionError):
        load_run(target.engine, "run-2", chunks(), schema=target.schema, now=T1, watermark="2026-02-01T00:00:00Z")
    assert snapshot(target) == before

    # the retry redoes it cleanly
    counts = run(target, "run-2", [make_transformed(1, notes="changed"), make_transformed(2), make_transformed(3, account=3, parent_account=4)],
                 now=T1, watermark="2026-02-01T00:00:00Z")
    assert (counts.inserted, counts.updated) == (2, 1)
    assert get_watermark(target.engine, target.schema) == "2026-02-01T00:00:00Z"


def test_load_counts_as_dict(make_transformed):
    assert LoadCounts(1, 2, 3, 4, 5, 6).as_dict() == {
        "inserted": 1, "updated": 2, "unchanged": 3, "outbox_rows": 4, "customers": 5, "locations": 6, "superseded": 0,
        "refused": 0,
    }


def test_an_account_in_many_batches_is_written_once_unless_its_content_changes(created_warehouse, make_transformed, monkeypatch, capture_sql):
    target = created_warehouse
    monkeypatch.setattr(load, "ORDERS_PER_BATCH", 1)
    same = [make_transformed(n, account=1, parent_account=9) for n in (1, 2, 3)]
    renamed = make_transformed(4, account=1, account_name="Acme Corporation", parent_account=9,
                               modstamp="2026-01-03T00:00:00.000+0000")
    with capture_sql(target.engine) as statements:
        counts = run(target, "run-1", same + [renamed])
    customer_writes = [s for s in statements if s.lstrip().upper().startswith("INSERT INTO") and "customers " in s]
    # batch 1: the parent and the account; batches 2 and 3: nothing new; batch 4: the account renamed
    assert len(customer_writes) == 3
    assert counts.customers == 2 and counts.inserted == 4
    names = {r["sf_account_id"]: r["name"] for r in select_all(target, "customers")}
    assert names[renamed.customer.sf_account_id] == "Acme Corporation"
    assert set(names) == {renamed.customer.sf_account_id, renamed.parent_customer.sf_account_id}


def test_an_order_the_warehouse_refuses_is_quarantined_naming_the_field_and_the_rest_is_loaded(created_warehouse, make_transformed):
    """PostgreSQL refuses a text longer than its column (and a NUL); SQLite keeps any length. Either
    way the run loads every other order, and a refused one is quarantined with the column and why,
    never with its value. Its card-data flag goes with it, and its card fields are queued to be X-ed out."""
    target = created_warehouse
    good = [make_transformed(n) for n in (1, 2, 4)]
    secret = "4111 1111 1111 1111 " + "x" * 70  # 90 characters; the column holds 80
    order = replace(make_transformed(3).order, po_number=secret, card_data_masked=("Description",))
    refused = replace(make_transformed(3), order=order)
    load.ORDERS_PER_BATCH, before = 2, load.ORDERS_PER_BATCH
    try:
        counts = run(target, "run-1", [good[0], refused, *good[1:]], card_fields=("Credit_Card_Number__c",))
    finally:
        load.ORDERS_PER_BATCH = before

    stored = {r["sf_order_id"] for r in select_all(target, "external_orders")}
    assert {r.order.sf_order_id for r in good} <= stored
    q = select_all(target, "quarantined_orders")
    if target.dialect == "postgresql":
        assert refused.order.sf_order_id not in stored
        assert counts.refused == 1 and counts.inserted == 3
        [row] = q
        assert row["failed_checks"] == ["warehouse_refused"]
        message = row["details"]["warehouse_refused"]
        assert "external_orders.po_number is 90 characters, more than the 80 it holds" in message
        assert "4111" not in message and "xxxx" not in message
        assert len(select_all(target, "external_order_items")) == 3  # the refused order left nothing behind
        assert row["card_data_masked"] and row["card_data_masked_fields"] == ["Description"]
        masks = select_all(target, "writeback_outbox", tables(target.schema).writeback_outbox.c.sf_order_id == refused.order.sf_order_id)
        assert [(m["action"], m["fields"]) for m in masks] == [("x_out_card", {"Credit_Card_Number__c": "X" * 16})]
    else:
        assert refused.order.sf_order_id in stored and q == [] and counts.refused == 0


@pytest.mark.postgres
def test_an_order_refused_for_its_products_value_is_quarantined_naming_the_products_column(postgres_warehouse, make_transformed):
    """A value of another table the batch writes (here the product's family, which no check holds
    to its column: a picklist value with a card number masked grows past 255) refuses its order
    too; the quarantine names that table's column as it names the order's own (it gave the
    server's words alone, naming no column), and the rest is loaded."""
    from salesforce_orders.schema_versions import create_all

    target = postgres_warehouse  # (SQLite keeps any length)
    create_all(target.engine, target.schema)
    good = [make_transformed(n) for n in (1, 2, 4)]
    refused = make_transformed(3)
    refused = replace(refused, items=[replace(refused.items[0], product_family="F" * 300), *refused.items[1:]])
    load.ORDERS_PER_BATCH, before = 2, load.ORDERS_PER_BATCH
    try:
        counts = run(target, "run-1", [good[0], refused, *good[1:]])
    finally:
        load.ORDERS_PER_BATCH = before

    assert counts.refused == 1 and counts.inserted == 3
    [row] = select_all(target, "quarantined_orders")
    assert row["sf_order_id"] == refused.order.sf_order_id
    assert row["details"]["warehouse_refused"] == "the warehouse refused the order: products.family is 300 characters, more than the 255 it holds"


def test_column_problems_names_column_limit_and_size_without_the_value():
    from salesforce_orders.load import column_problems

    t = tables(None)
    problems = column_problems(t.external_orders, {"po_number": "y" * 81, "notes": "a\x00b", "total_amount": 1.005})
    assert problems[0] == "external_orders.po_number is 81 characters, more than the 80 it holds"
    assert "external_orders.notes contains a NUL character" in problems
    assert not any("y" * 10 in p for p in problems)


def test_an_imported_order_whose_newer_version_is_quarantined_is_marked_until_a_version_loads(created_warehouse, make_transformed):
    target = created_warehouse
    o = tables(target.schema).external_orders
    record = make_transformed(1)
    run(target, "run-1", [record])
    with target.engine.begin() as conn:
        record_quarantine(conn, "run-2", [{"sf_order_id": record.order.sf_order_id, "order_number": "1", "account_name": None,
                                           "failed_checks": ["has_products"], "details": {"has_products": "no products"}}],
                          schema=target.schema, now=T1)
    assert one(target, "external_orders", o.c.sf_order_id == record.order.sf_order_id)["newer_version_quarantined_at"] == T1

    run(target, "run-3", [make_transformed(1, notes="fixed", modstamp="2026-03-01T12:09:00.000+0000")], now=T2)

    assert one(target, "external_orders", o.c.sf_order_id == record.order.sf_order_id)["newer_version_quarantined_at"] is None
