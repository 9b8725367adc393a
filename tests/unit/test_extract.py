"""Extract: REST records flattened to the staged shape, split into order and items, staged page by page."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders.extract import ExtractSummary, extract_bulk, flatten, split_order, stage_pages
from salesforce_orders.schema_versions import create_all
from salesforce_orders.staging import iter_staged
from salesforce_orders.warehouse import tables

ORDER_A, ORDER_B = "801000000000001AAA", "801000000000002AAA"


def rest_item(item_id: str, quantity: float, code: str = "P-1") -> dict:
    return {
        "attributes": {"type": "OrderItem", "url": f"/services/data/v59.0/sobjects/OrderItem/{item_id}"},
        "Id": item_id,
        "Product2": {"attributes": {"type": "Product2"}, "ProductCode": code},
        "Quantity": quantity,
    }


def rest_order(order_id: str, stamp: str, items: list[dict] | None, **fields: Any) -> dict:
    """An Order as the REST query answers it: parents nested, the items as a child subquery."""
    return {
        "attributes": {"type": "Order", "url": f"/services/data/v59.0/sobjects/Order/{order_id}"},
        "Id": order_id,
        "OrderNumber": "00000001",
        "SystemModstamp": stamp,
        "Account": {
            "attributes": {"type": "Account"},
            "Name": "Acme Corp",
            "Parent": {"attributes": {"type": "Account"}, "Name": "Acme Holding"},
        },
        "OrderItems": None if items is None else {"totalSize": len(items), "done": True, "records": items},
        **fields,
    }


def test_flatten_joins_parents_with_dots_and_drops_attributes_and_children():
    record = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A", 1.0)], TotalAmount=10.5)

    assert flatten(record) == {
        "Id": ORDER_A,
        "OrderNumber": "00000001",
        "SystemModstamp": "2026-01-02T03:04:05.000+0000",
        "Account.Name": "Acme Corp",
        "Account.Parent.Name": "Acme Holding",
        "TotalAmount": 10.5,
    }


def test_flatten_keeps_a_null_lookup_as_null():
    record = {"attributes": {"type": "Order"}, "Id": ORDER_A, "Account": {"attributes": {}, "Name": "Acme", "Parent": None}}
    assert flatten(record) == {"Id": ORDER_A, "Account.Name": "Acme", "Account.Parent": None}
    assert flatten({"Id": ORDER_A, "Account": None}) == {"Id": ORDER_A, "Account": None}


def test_flatten_with_a_prefix():
    assert flatten({"attributes": {}, "Name": "Acme", "Owner": {"Alias": "ab"}}, "Account.") == {
        "Account.Name": "Acme",
        "Account.Owner.Alias": "ab",
    }


def test_split_order_gives_the_flat_order_and_its_flat_items():
    items = [rest_item("802A", 1.0), {**rest_item("802B", 2.0, "P-2"), "OrderId": ORDER_A}]
    order, staged_items = split_order(rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", items), "OrderItems")

    assert "OrderItems" not in order and order["Account.Parent.Name"] == "Acme Holding"
    assert staged_items == [
        {"Id": "802A", "Product2.ProductCode": "P-1", "Quantity": 1.0, "OrderId": ORDER_A},  # filled from the order
        {"Id": "802B", "Product2.ProductCode": "P-2", "Quantity": 2.0, "OrderId": ORDER_A},
    ]


@pytest.mark.parametrize("children", [None, {"totalSize": 0, "done": True, "records": []}], ids=["null", "empty"])
def test_split_order_without_items(children: Any):
    record = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [])
    record["OrderItems"] = children
    order, staged_items = split_order(record, "OrderItems")
    assert staged_items == [] and order["Id"] == ORDER_A


def test_split_order_reads_the_configured_relationship():
    record = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", None)
    record["Lines__r"] = {"totalSize": 1, "done": True, "records": [rest_item("802A", 3.0)]}
    _, staged_items = split_order(record, "Lines__r")
    assert [i["Id"] for i in staged_items] == ["802A"]


# ---------------------------------------------------------------------------------------
# stage_pages
# ---------------------------------------------------------------------------------------


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    create_all(sqlite_engine)
    return sqlite_engine


def staged(engine: sa.Engine, run_id: str = "run-1") -> dict[str, tuple[dict, list[dict]]]:
    return {order["Id"]: (order, items) for chunk in iter_staged(engine, run_id, status=None) for order, items in chunk}


def test_stage_pages_writes_every_page_and_reports_the_highest_modstamp(engine):
    pages = [
        [
            rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0), rest_item("802A2", 2.0)]),
            rest_order(ORDER_B, "2026-01-02T05:00:00.000+0000", [rest_item("802B1", 1.0)]),
        ],
        [rest_order("801000000000003AAA", "2026-01-02T04:00:00.000+0000", None)],
    ]

    summary = stage_pages(engine, "run-1", iter(pages), "OrderItems")

    assert (summary.orders, summary.items, summary.pages) == (3, 3, 2)
    assert summary.max_system_modstamp == "2026-01-02T05:00:00.000+0000"
    rows = staged(engine)
    assert sorted(rows) == [ORDER_A, ORDER_B, "801000000000003AAA"]
    order, items = rows[ORDER_A]
    assert order["Account.Name"] == "Acme Corp" and "OrderItems" not in order
    assert [(i["Id"], i["OrderId"]) for i in items] == [("802A1", ORDER_A), ("802A2", ORDER_A)]
    assert rows["801000000000003AAA"][1] == []


def test_an_order_met_again_on_a_later_page_keeps_its_latest_version(engine):
    before = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0)], TotalAmount=30.0)
    after = rest_order(ORDER_A, "2026-01-02T03:09:00.000+0000", [rest_item("802A1", 5.0)], TotalAmount=50.0)
    other = rest_order(ORDER_B, "2026-01-02T03:05:00.000+0000", [rest_item("802B1", 1.0)])

    summary = stage_pages(engine, "run-1", [[before, other], [after]], "OrderItems")

    assert summary.max_system_modstamp == "2026-01-02T03:09:00.000+0000"
    rows = staged(engine)
    assert sorted(rows) == [ORDER_A, ORDER_B]
    order, items = rows[ORDER_A]
    assert (order["SystemModstamp"], order["TotalAmount"]) == ("2026-01-02T03:09:00.000+0000", 50.0)
    assert [(i["Id"], i["Quantity"]) for i in items] == [("802A1", 5.0)]


def test_an_older_version_met_later_does_not_replace_the_newer_order(engine):
    newer = rest_order(ORDER_A, "2026-01-02T03:09:00.000+0000", [], TotalAmount=50.0)
    older = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [], TotalAmount=30.0)

    summary = stage_pages(engine, "run-1", [[newer], [older]], "OrderItems")

    assert summary.max_system_modstamp == "2026-01-02T03:09:00.000+0000"
    order, _ = staged(engine)[ORDER_A]
    assert (order["SystemModstamp"], order["TotalAmount"]) == ("2026-01-02T03:09:00.000+0000", 50.0)


def test_the_same_order_twice_on_one_page_keeps_the_later_version(engine):
    page = [
        rest_order(ORDER_A, "2026-01-02T03:09:00.000+0000", [], TotalAmount=50.0),
        rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [], TotalAmount=30.0),
    ]
    stage_pages(engine, "run-1", [page], "OrderItems")
    assert staged(engine)[ORDER_A][0]["TotalAmount"] == 50.0


def test_stage_pages_keeps_runs_apart(engine):
    stage_pages(engine, "run-1", [[rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0)])]], "OrderItems")
    stage_pages(engine, "run-2", [[rest_order(ORDER_B, "2026-01-02T03:04:05.000+0000", [rest_item("802B1", 1.0)])]], "OrderItems")

    assert list(staged(engine, "run-1")) == [ORDER_A]
    assert list(staged(engine, "run-2")) == [ORDER_B]
    t = tables().stg_order_items
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(t)).scalar() == 2


def test_no_pages_stage_nothing(engine):
    summary = stage_pages(engine, "run-1", [], "OrderItems")
    assert summary.as_dict() | {"seconds": 0} == ExtractSummary().as_dict()
    assert staged(engine) == {}


def test_a_newer_version_replaces_the_items_of_the_older_one(engine):
    older = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0), rest_item("802A2", 1.0)])
    newer = rest_order(ORDER_A, "2026-01-02T03:09:00.000+0000", [rest_item("802A1", 4.0)])

    summary = stage_pages(engine, "run-1", [[older], [newer]], "OrderItems")

    assert summary.orders == 1
    _, items = staged(engine)[ORDER_A]
    assert [(i["Id"], i["Quantity"]) for i in items] == [("802A1", 4.0)]


@pytest.mark.parametrize("pages", ["one page", "two pages"])
def test_the_items_of_an_older_version_met_later_are_ignored(engine, pages):
    newer = rest_order(ORDER_A, "2026-01-02T03:09:00.000+0000", [rest_item("802A1", 4.0)])
    older = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0), rest_item("802A2", 1.0)])

    stage_pages(engine, "run-1", [[newer, older]] if pages == "one page" else [[newer], [older]], "OrderItems")

    _, items = staged(engine)[ORDER_A]
    assert [(i["Id"], i["Quantity"]) for i in items] == [("802A1", 4.0)]


class _RecordingBulkHook:
    """A hook whose Bulk jobs are records in memory; it notes when each job is started and read."""

    def __init__(self, results: dict[str, list[dict]]):
        self.results, self.events = results, []
        self.usage = type("Usage", (), {"calls": 0, "result_pages": 0})()

    def start_bulk_query(self, soql: str) -> str:
        self.events.append(f"start {soql}")
        return soql

    def iter_bulk_query_pages(self, soql: str, *, job_id: str):
        self.events.append(f"read {job_id}")
        yield self.results[job_id]


def test_the_bulk_extract_starts_the_items_job_before_it_reads_the_orders(engine):
    """Salesforce works on the items' job while the orders are staged (a real org takes seconds a
    job); both jobs read the org at nearly the same moment."""
    order = {**flatten(rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", None)), "Account.Name": "Acme Corp"}
    item = {"Id": "802A1", "OrderId": ORDER_A, "Quantity": 1.0}
    hook = _RecordingBulkHook({"orders": [order], "items": [item]})

    summary = extract_bulk(engine, hook, "run-1", "orders", "items")

    assert hook.events == ["start orders", "start items", "read orders", "read items"]
    assert (summary.orders, summary.items) == (1, 1)
    assert [i["Id"] for i in staged(engine)[ORDER_A][1]] == ["802A1"]


def test_the_bulk_extract_reads_the_items_job_while_the_orders_are_staged(engine):
    """Once the orders' first page is in (their job done), the items' job is asked about and its
    first page fetched in the background: on a real org its download, and in the sandbox its
    rendering, overlap the staging of the orders. The orders' second page comes only once the
    items are being read: read after the orders, the extract would stop here (and fail at the wait)."""
    orders = [
        {**flatten(rest_order(order_id, "2026-01-02T03:04:05.000+0000", None)), "Account.Name": "Acme Corp"}
        for order_id in (ORDER_A, ORDER_B)
    ]
    items_read = threading.Event()

    class ItemsReadEarly(_RecordingBulkHook):
        def iter_bulk_query_pages(self, soql: str, *, job_id: str):
            self.events.append(f"read {job_id}")
            if job_id == "items":
                items_read.set()
                yield [{"Id": "802A1", "OrderId": ORDER_A, "Quantity": 1.0}]
                return
            yield [orders[0]]
            assert items_read.wait(timeout=60), "the items' job was not read while the orders were staged"
            self.events.append("orders' second page")
            yield [orders[1]]

    hook = ItemsReadEarly({})
    summary = extract_bulk(engine, hook, "run-1", "orders", "items")

    assert hook.events == ["start orders", "start items", "read orders", "read items", "orders' second page"]
    assert (summary.orders, summary.items) == (2, 1)


# ---------------------------------------------------------------------------------------
# A fresh run's staging: inserted, not merged
# ---------------------------------------------------------------------------------------


@pytest.fixture
def fresh_target(created_warehouse, monkeypatch):
    """A created warehouse on SQLite and PostgreSQL; on PostgreSQL every write takes the COPY path."""
    from salesforce_orders.warehouse import writes

    monkeypatch.setattr(writes, "COPY_MIN_ROWS", 1)
    return created_warehouse


def test_a_fresh_run_inserts_its_pages_without_merging(fresh_target, capture_sql):
    pages = [
        [rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0), rest_item("802A2", 2.0)])],
        [rest_order(ORDER_B, "2026-01-02T05:00:00.000+0000", [rest_item("802B1", 1.0)])],
    ]
    with capture_sql(fresh_target.engine) as statements:
        summary = stage_pages(fresh_target.engine, "run-1", pages, "OrderItems", schema=fresh_target.schema, fresh=True)

    assert (summary.orders, summary.items) == (2, 3)
    rows = {order["Id"]: items for chunk in iter_staged(fresh_target.engine, "run-1", status=None, schema=fresh_target.schema)
            for order, items in chunk}
    assert {order_id: [i["Id"] for i in items] for order_id, items in rows.items()} == {
        ORDER_A: ["802A1", "802A2"], ORDER_B: ["802B1"]
    }
    merges = [s for s in statements if "ON CONFLICT" in s.upper() or "TEMPORARY" in s.upper()]
    assert merges == []


def test_a_fresh_run_still_keeps_the_latest_version_of_an_order_met_twice(fresh_target):
    before = rest_order(ORDER_A, "2026-01-02T03:04:05.000+0000", [rest_item("802A1", 1.0), rest_item("802A2", 1.0)])
    after = rest_order(ORDER_A, "2026-01-02T03:09:00.000+0000", [rest_item("802A1", 5.0)], TotalAmount=50.0)

    stage_pages(fresh_target.engine, "run-1", [[before], [after]], "OrderItems", schema=fresh_target.schema, fresh=True)

    [[(order, items)]] = list(iter_staged(fresh_target.engine, "run-1", status=None, schema=fresh_target.schema))
    assert (order["SystemModstamp"], order["TotalAmount"]) == ("2026-01-02T03:09:00.000+0000", 50.0)
    assert [(i["Id"], i["Quantity"]) for i in items] == [("802A1", 5.0)]


def test_rows_guessed_new_that_are_staged_already_are_merged_instead(fresh_target):
    """A wrong ``new`` (an order staged already) costs a rolled-back savepoint, never a row or the run."""
    from salesforce_orders.staging import stage_items, stage_orders

    engine, schema = fresh_target.engine, fresh_target.schema
    older = {"Id": ORDER_A, "SystemModstamp": "2026-01-02T03:04:05.000+0000", "TotalAmount": 30}
    newer = {"Id": ORDER_A, "SystemModstamp": "2026-01-02T03:09:00.000+0000", "TotalAmount": 50}
    other = {"Id": ORDER_B, "SystemModstamp": "2026-01-02T03:09:00.000+0000", "TotalAmount": 7}
    item = {"Id": "802A1", "OrderId": ORDER_A, "Quantity": 1}
    with engine.begin() as conn:
        stage_orders(conn, "run-1", [older], schema=schema, new=True)
        stage_items(conn, "run-1", [item], schema=schema, new=True)
    with engine.begin() as conn:
        assert stage_orders(conn, "run-1", [newer, other], schema=schema, new=True) == 2
        stage_items(conn, "run-1", [item | {"Quantity": 4}], schema=schema, new=True)

    staged_now = {order["Id"]: (order, items) for chunk in iter_staged(engine, "run-1", status=None, schema=schema)
                  for order, items in chunk}
    assert staged_now[ORDER_A][0]["TotalAmount"] == 50 and staged_now[ORDER_B][0]["TotalAmount"] == 7
    assert [(i["Id"], i["Quantity"]) for i in staged_now[ORDER_A][1]] == [("802A1", 4)]
