"""The import DAG end to end: dag.test() against the sandbox org, on SQLite and on PostgreSQL.

Expectations are computed from the org's own rows (read before the run), then checked in the
warehouse and back in the org.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

ROUTING = {"rules": [{"field": "Type", "operator": "equals", "value": "New Service", "destination": "work_order"}], "default_destination": "request"}
MAPPINGS = {"PoNumber": "po_number", "CurrencyIsoCode": "currency_code"}


def activated_orders(h) -> dict[str, dict]:
    """The org's Activated, non-deleted orders activated within the default two-year lookback."""
    since = (datetime.now(UTC) - timedelta(days=730)).strftime("%Y-%m-%dT%H:%M:%S")
    rows = h.org_rows(
        'SELECT o.*, a.Name AS AccountName, a.ParentId AS AccountParentId, a.Customer_ID__c AS AccountCustomerId '
        'FROM "Order" o LEFT JOIN Account a ON a.Id = o.AccountId '
        "WHERE o.StatusCode = 'Activated' AND o.IsDeleted = 0 AND o.ActivatedDate >= ?",
        since,
    )
    return {r["Id"]: r for r in rows}


def items_by_order(h) -> dict[str, list[dict]]:
    by_order: dict[str, list[dict]] = {}
    for item in h.org_rows("SELECT * FROM OrderItem WHERE IsDeleted = 0"):
        by_order.setdefault(item["OrderId"], []).append(item)
    return by_order


def org_update(org, order_id: str, **fields) -> None:
    with org.store.lock:
        org.store.update("Order", order_id, fields)


def _blank(value) -> bool:
    return value is None or not str(value).strip()


def test_first_run_imports_transforms_and_writes_back(harness):
    harness.set_config(routing=ROUTING, order_field_mappings=MAPPINGS)
    expected = activated_orders(harness)
    items = items_by_order(harness)
    cards = {r["Credit_Card_Number__c"] for r in harness.org_rows('SELECT Credit_Card_Number__c FROM "Order"') if r["Credit_Card_Number__c"]}
    assert expected and cards, "the seeded org must hold activated orders with card data"

    run = harness.run()
    assert run["dag_state"] == "success"
    assert run["status"] == "success"
    assert run["extracted"] == len(expected)
    assert run["valid"] + run["quarantined"] == run["extracted"]
    assert run["inserted"] == run["valid"] - run["skipped"] > 0
    assert run["api_calls"] > 0

    loaded = {o["sf_order_id"]: o for o in harness.query("SELECT * FROM external_orders")}
    quarantined = {q["sf_order_id"]: q for q in harness.query("SELECT * FROM quarantined_orders")}
    assert set(loaded) | set(quarantined) == set(expected)
    assert not set(loaded) & set(quarantined)

    # names "<OrderNumber> <Account.Name>", links back to Salesforce, routing, metadata
    for order_id, o in loaded.items():
        sf = expected[order_id]
        assert o["external_name"] == f"{sf['OrderNumber']} {sf['AccountName'].strip()}"
        assert o["salesforce_url"].endswith(f"/lightning/r/Order/{order_id}/view")
        assert o["destination"] == ("work_order" if sf["Type"] == "New Service" else "request")
        metadata = o["metadata"] if isinstance(o["metadata"], dict) else json.loads(o["metadata"])
        assert metadata.get("po_number") == sf["PoNumber"]
        assert o["sf_state"] == "active"
        assert o["lifecycle_state"] == "COMPLETE"
    assert {o["destination"] for o in loaded.values()} == {"work_order", "request"}

    # service address from Shipping, falling back to Billing when no shipping field is set
    sources = set()
    for order_id, o in loaded.items():
        sf = expected[order_id]
        has_shipping = any(not _blank(sf[f"Shipping{p}"]) for p in ("Street", "City", "State", "PostalCode", "Country"))
        prefix = "Shipping" if has_shipping else "Billing"
        sources.add(o["service_address_source"])
        assert o["service_address_source"] == prefix.lower()
        assert o["service_city"] == sf[f"{prefix}City"].strip()
        assert o["billing_city"] == (sf["BillingCity"].strip() if not _blank(sf["BillingCity"]) else None)
    assert sources == {"shipping", "billing"}

    # quarantine names the checks and the fields
    for q in quarantined.values():
        checks = q["failed_checks"] if isinstance(q["failed_checks"], list) else json.loads(q["failed_checks"])
        details = q["details"] if isinstance(q["details"], dict) else json.loads(q["details"])
        assert checks and set(checks) == set(details)
        assert all(details.values())

    # customers: the Account's id reused, else assigned; parent/child kept
    customers = {c["sf_account_id"]: c for c in harness.query("SELECT * FROM customers")}
    for o in loaded.values():
        sf = expected[o["sf_order_id"]]
        customer = customers[sf["AccountId"]]
        assert o["customer_id"] == customer["customer_id"]
        if not _blank(sf["AccountCustomerId"]):
            assert customer["customer_id"] == sf["AccountCustomerId"].strip()
        if sf["AccountParentId"]:
            assert customer["parent_sf_account_id"] == sf["AccountParentId"]
            assert customer["parent_customer_id"] == customers[sf["AccountParentId"]]["customer_id"]
    assert any(c["parent_customer_id"] for c in customers.values()), "the org has parent/child accounts"
    assert any(c["customer_id_source"] == "assigned" for c in customers.values())
    multi = [c for c in customers.values() if c["is_multi_location"]]
    assert multi and all(c["location_count"] > 1 for c in multi)

    # service groups: products grouped by service number, the others alone
    services = harness.query("SELECT * FROM order_services")
    loaded_items = harness.query("SELECT * FROM external_order_items")
    for s in services:
        group = [i for i in items[s["sf_order_id"]] if s["service_number"] and (i["Service_Number__c"] or "").strip() == s["service_number"]]
        assert s["item_count"] == (len(group) if s["service_number"] else 1)
    assert any(s["item_count"] > 1 for s in services)
    assert len(loaded_items) == sum(len(items[o]) for o in loaded)

    # write-back: Status Imported, card fields X-ed out, customer id on the Account
    org_orders = {r["Id"]: r for r in harness.org_rows('SELECT * FROM "Order"')}
    for order_id in loaded:
        sf = org_orders[order_id]
        assert sf["Status"] == "Imported"
        for name in ("Credit_Card_Number__c", "Credit_Card_CVV__c", "Credit_Card_Expiration_Month__c", "Credit_Card_Expiration_Year__c"):
            assert sf[name] is None or set(sf[name]) == {"X"}, (order_id, name)
    for order_id in quarantined:
        assert org_orders[order_id]["Status"] == "Activated"  # not imported, not touched
    accounts = {r["Id"]: r for r in harness.org_rows("SELECT Id, Customer_ID__c FROM Account")}
    for account_id in {expected[o]["AccountId"] for o in loaded}:
        assert accounts[account_id]["Customer_ID__c"] == customers[account_id]["customer_id"]

    # card numbers never reach the warehouse
    dump = json.dumps([harness.query(f"SELECT * FROM {t}") for t in (
        "external_orders", "external_order_items", "customers", "quarantined_orders", "writeback_outbox", "stg_orders", "stg_order_items", "stg_transformed_batches"
    )], default=str)
    assert not [c for c in cards if c in dump]

    # a second run changes nothing, and does not read back our own write-back's echo: only the
    # order at the last stamp of the write-back's span is read again (docs/reliability.md, R13)
    again = harness.run()
    assert again["dag_state"] == "success"
    assert (again["inserted"], again["updated"], again["written_back"]) == (0, 0, 0)
    assert again["extracted"] == again["unchanged"] == 1


def test_a_run_transformed_in_partitions_is_loaded_once(harness):
    """The transform mapped over three ranges of order ids: three instances, one load of every
    order, the report's counts summed over the instances."""
    harness.set_config(transform_partitions=3, transform_partition_min_orders=20, zero_total_policy="skip")
    run = harness.run()
    assert run["dag_state"] == "success" and run["status"] == "success"
    assert transform_states(run["run_id"]) == [(0, "success"), (1, "success"), (2, "success")]
    skipped = harness.query("SELECT sf_order_id FROM skipped_orders WHERE run_id = :r", r=run["run_id"])
    assert run["skipped"] == len(skipped)
    assert run["inserted"] == run["valid"] - run["skipped"] == len(harness.query("SELECT sf_order_id FROM external_orders")) > 0


def test_a_failed_transform_instance_fails_the_stage_and_names_it(harness, monkeypatch):
    """One instance fails (the other succeeds): nothing is loaded, and the run is recorded as failed
    at the transform with the instance's reason, not as having a transform result."""
    from airflow.sdk.exceptions import AirflowFailException

    from salesforce_orders import transform

    ids = sorted(activated_orders(harness))
    refused_from = ids[len(ids) * 9 // 10]  # the last tenth: valid orders of the second range only
    transform_order = transform.transform_order

    def refuse_the_last_orders(order, *args, **kwargs):
        if order["Id"] >= refused_from:
            raise AirflowFailException("order refused")  # no retries
        return transform_order(order, *args, **kwargs)

    monkeypatch.setattr(transform, "transform_order", refuse_the_last_orders)
    harness.set_config(transform_partitions=2, transform_partition_min_orders=20)
    run = harness.run()
    assert run["dag_state"] == "failed" and run["status"] == "failed"
    assert (run["failed_stage"], run["failure_reason"]) == ("transform", "order refused")
    assert "transform" in run["message"] and run["inserted"] == 0
    assert transform_states(run["run_id"]) == [(0, "success"), (1, "failed")]
    assert harness.query("SELECT sf_order_id FROM external_orders") == []


def transform_states(run_id: str) -> list[tuple[int, str]]:
    """(map index, state) of each of a run's transform instances."""
    from airflow import settings

    with settings.engine.connect() as conn:
        instances = conn.execute(
            sa.text("SELECT map_index, state FROM task_instance WHERE run_id = :r AND task_id = 'transform' ORDER BY map_index"),
            {"r": run_id},
        ).all()
    return [(i.map_index, str(i.state)) for i in instances]


def test_manual_runs_resync_and_deactivation(harness):
    org = harness.org
    first = harness.run()
    assert first["status"] == "success"
    loaded = harness.query("SELECT sf_order_id, order_number FROM external_orders ORDER BY order_number")
    target, other, gone = loaded[0], loaded[1], loaded[2]

    # an order changed in Salesforce, re-synced by order number
    org_update(org, target["sf_order_id"], Description="Call before delivery")
    resync = harness.run({"order_numbers": [target["order_number"]]})
    assert (resync["mode"], resync["extracted"], resync["updated"]) == ("order_numbers", 1, 1)
    assert harness.query("SELECT notes FROM external_orders WHERE sf_order_id = :i", i=target["sf_order_id"])[0]["notes"] == "Call before delivery"

    # "import orders changed since": picks up a change, leaves the rest unchanged
    org_update(org, other["sf_order_id"], PoNumber="PO-77")
    since = harness.run({"since": (datetime.now(UTC) - timedelta(days=1)).date().isoformat()})
    assert since["mode"] == "since" and since["updated"] == 1

    # orders set back to Draft or deleted after import are marked, not left active
    org_update(org, target["sf_order_id"], Status="Draft")
    org_update(org, gone["sf_order_id"], Status="Draft")
    with org.store.lock:
        org.store.delete("Order", gone["sf_order_id"])
    marked = harness.run()
    assert marked["deactivated"] == 2
    states = {r["sf_order_id"]: r["sf_state"] for r in harness.query("SELECT sf_order_id, sf_state FROM external_orders")}
    assert states[target["sf_order_id"]] == "deactivated"
    assert states[gone["sf_order_id"]] == "deleted"
    assert states[other["sf_order_id"]] == "active"


@pytest.mark.parametrize("harness", ["sqlite"], indirect=True)
def test_org_without_imported_status_keeps_status(harness, sandbox):
    org = harness.org
    org.admin.reset(orders=60, seed=5, with_imported_status=False)
    run = harness.run()
    assert run["status"] == "success" and run["inserted"] > 0
    loaded = [r["sf_order_id"] for r in harness.query("SELECT sf_order_id FROM external_orders")]
    statuses = {r["Id"]: r for r in harness.org_rows('SELECT Id, Status, Credit_Card_Number__c FROM "Order"')}
    for order_id in loaded:
        assert statuses[order_id]["Status"] == "Activated"
        assert statuses[order_id]["Credit_Card_Number__c"] is None or set(statuses[order_id]["Credit_Card_Number__c"]) == {"X"}
    assert {r["lifecycle_state"] for r in harness.query("SELECT lifecycle_state FROM external_orders")} == {"COMPLETE"}


@pytest.mark.parametrize("harness", ["sqlite"], indirect=True)
def test_backfill_takes_exactly_its_interval(harness):
    """A backfill run's extract reads just the orders whose SystemModstamp falls in its interval."""
    from salesforce_orders import stages

    stamps = sorted(r["SystemModstamp"] for r in activated_orders(harness).values())
    lo, hi = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    parse = lambda s: datetime.strptime(s[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)  # noqa: E731
    start, end = parse(lo), parse(hi)
    inside = [s for s in stamps if start <= parse(s) < end]
    result = stages.extract(
        run_id="backfill__test",
        dag_run_id="backfill__test",
        run_type="backfill",
        data_interval_start=start,
        data_interval_end=end,
        params={},
    )
    assert result["window"]["mode"] == "backfill"
    assert result["extracted"] == len(inside) > 0
