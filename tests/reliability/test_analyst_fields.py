"""The fields analysts reach for, as the org has them: the ``products`` dimension (Product2 and the
price book entry's list price), order products' dates, list price and product, and the order's end
date, contract, opportunity and owner.

The stages run as the DAG's tasks (``conftest.Pipeline``), against the sandbox org and a SQLite or
PostgreSQL warehouse.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest


@pytest.fixture
def imported(pipeline):
    first = pipeline.run()
    assert first.succeeded, first.error
    return pipeline


def day(value) -> str | None:
    return None if value is None else value.isoformat() if isinstance(value, date) else str(value)[:10]


def money(value) -> Decimal | None:
    return None if value is None else Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def test_products_are_a_dimension_of_the_imported_order_products_as_the_org_has_them(imported):
    p = imported
    items = p.query("SELECT i.*, o.currency FROM external_order_items i JOIN external_orders o ON o.sf_order_id = i.sf_order_id")
    assert items
    org_items = {r["Id"]: r for r in p.org_rows("SELECT Id, Product2Id, PricebookEntryId, ListPrice, ServiceDate, EndDate FROM OrderItem")}
    for item in items:
        source = org_items[item["sf_order_item_id"]]
        assert (item["sf_product_id"], item["sf_pricebook_entry_id"], money(item["list_price"]), day(item["service_date"]), day(item["end_date"])) == (
            source["Product2Id"], source["PricebookEntryId"], money(source["ListPrice"]), source["ServiceDate"], source["EndDate"]
        ), item["sf_order_item_id"]

    products = {(r["sf_pricebook_entry_id"], r["currency"]): r for r in p.query("SELECT * FROM products")}
    assert set(products) == {(i["sf_pricebook_entry_id"], i["currency"]) for i in items}
    org_entries = {
        r["Id"]: r
        for r in p.org_rows(
            "SELECT e.Id, e.UnitPrice, e.Product2Id, p.Name, p.ProductCode, p.Family, p.IsActive "
            "FROM PricebookEntry e JOIN Product2 p ON p.Id = e.Product2Id"
        )
    }
    for (entry_id, _), row in products.items():
        source = org_entries[entry_id]
        assert (row["sf_product_id"], row["name"], row["product_code"], row["family"], bool(row["is_active"]), money(row["list_price"])) == (
            source["Product2Id"], source["Name"], source["ProductCode"], source["Family"], bool(source["IsActive"]), money(source["UnitPrice"])
        ), entry_id
    assert any(row["family"] for row in products.values())


def test_orders_carry_their_owner_end_date_contract_and_opportunity(imported):
    p = imported
    owners = {r["Id"]: r["Name"] for r in p.org_rows("SELECT Id, Name FROM User")}
    org_orders = {r["Id"]: r for r in p.org_rows('SELECT Id, OwnerId, AccountId FROM "Order"')}
    orders = p.query("SELECT sf_order_id, owner_id, owner_name FROM external_orders")
    for order in orders:
        owner = org_orders[order["sf_order_id"]]["OwnerId"]
        assert (order["owner_id"], order["owner_name"]) == (owner, owners[owner])

    order_id = orders[0]["sf_order_id"]
    account = org_orders[order_id]["AccountId"]
    with p.org.store.lock:
        contract = p.org.store.create("Contract", {"AccountId": account})
        opportunity = p.org.store.create(
            "Opportunity", {"AccountId": account, "Name": "Fibre upgrade", "StageName": "Closed Won", "CloseDate": "2026-01-15"}
        )
    # a contract is set on a Draft order, as Salesforce wants it
    p.org_update("Order", order_id, Status="Draft")
    p.org_update("Order", order_id, ContractId=contract, OpportunityId=opportunity, EndDate="2027-12-31")
    p.org_update("Order", order_id, Status="Activated")

    run = p.run()

    assert run.succeeded, run.error
    row = p.query("SELECT end_date, contract_id, opportunity_id FROM external_orders WHERE sf_order_id = :o", o=order_id)[0]
    assert (day(row["end_date"]), row["contract_id"], row["opportunity_id"]) == ("2027-12-31", contract, opportunity)
