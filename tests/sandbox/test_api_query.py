"""SOQL over REST with simple-salesforce: pages, cursors, queryAll, child subqueries, errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from salesforce_sandbox.server import SandboxServer

SMALL_PAGES = {"Sforce-Query-Options": "batchSize=200"}


def test_query_all_iter_pages_through_every_row(sandbox: SandboxServer, sf: Salesforce):
    total = sf.query("SELECT COUNT() FROM OrderItem")["totalSize"]
    assert total > 400  # enough for three pages of 200
    before = sandbox.admin.stats()["calls"]
    ids = [r["Id"] for r in sf.query_all_iter("SELECT Id FROM OrderItem ORDER BY Id", headers=SMALL_PAGES)]
    after = sandbox.admin.stats()["calls"]
    assert len(ids) == total == len(set(ids))
    assert ids == sorted(ids)
    assert after["query"] - before["query"] == 1
    assert after["query_more"] - before["query_more"] == -(-total // 200) - 1


def test_first_page_shape_and_next_records_url(sf: Salesforce):
    page = sf.query("SELECT Id, OrderItemNumber FROM OrderItem", headers=SMALL_PAGES)
    assert page["done"] is False
    assert len(page["records"]) == 200
    assert page["totalSize"] == sf.query("SELECT COUNT() FROM OrderItem")["totalSize"]
    assert page["nextRecordsUrl"].startswith("/services/data/v59.0/query/01g")
    assert page["nextRecordsUrl"].endswith("-200")
    record = page["records"][0]
    assert record["attributes"]["type"] == "OrderItem"
    assert record["attributes"]["url"] == f"/services/data/v59.0/sobjects/OrderItem/{record['Id']}"


def test_last_page_has_no_next_records_url(sf: Salesforce):
    page = sf.query("SELECT Id FROM OrderItem", headers=SMALL_PAGES)
    while not page["done"]:
        page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
    assert "nextRecordsUrl" not in page


def test_batch_size_is_clamped_to_salesforce_bounds(sf: Salesforce):
    tiny = sf.query("SELECT Id FROM OrderItem", headers={"Sforce-Query-Options": "batchSize=10"})
    assert len(tiny["records"]) == 200
    default = sf.query("SELECT Id FROM OrderItem")
    assert len(default["records"]) == min(2000, default["totalSize"])


def test_query_all_as_the_hook_uses_it(sf: Salesforce):
    result = sf.query_all("SELECT Id, Status, Account.Name FROM Order WHERE Status = 'Activated'")
    assert result["totalSize"] == len(result["records"]) > 0
    assert {r["Status"] for r in result["records"]} == {"Activated"}
    assert all(r["Account"]["attributes"]["type"] == "Account" for r in result["records"])


def test_query_all_shows_deleted_rows_and_query_does_not(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order(items=1)
    sf.Order.delete(order_id)
    soql = f"SELECT Id, IsDeleted FROM Order WHERE Id = '{order_id}'"
    assert sf.query(soql)["totalSize"] == 0
    deleted = sf.query_all(soql, include_deleted=True)["records"]
    assert [(r["Id"], r["IsDeleted"]) for r in deleted] == [(order_id, True)]


def test_query_all_next_pages_are_under_query(sf: Salesforce):
    page = sf.query("SELECT Id FROM OrderItem", include_deleted=True, headers=SMALL_PAGES)
    assert "/query/" in page["nextRecordsUrl"]
    # simple-salesforce may also ask under queryAll/ with the bare locator.
    locator = page["nextRecordsUrl"].rsplit("/", 1)[1]
    more = sf.query_more(locator, include_deleted=True)
    assert len(more["records"]) > 0


def test_child_subquery_over_200_rows_gets_its_own_locator(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order(items=230)
    page = sf.query(f"SELECT Id, (SELECT Id FROM OrderItems ORDER BY Id) FROM Order WHERE Id = '{order_id}'")
    items = page["records"][0]["OrderItems"]
    assert items["totalSize"] == 230
    assert items["done"] is False
    assert len(items["records"]) == 200
    rest = sf.query_more(items["nextRecordsUrl"], identifier_is_url=True)
    assert rest["done"] is True and len(rest["records"]) == 30
    all_ids = [r["Id"] for r in items["records"] + rest["records"]]
    assert len(set(all_ids)) == 230
    assert rest["records"][0]["attributes"]["type"] == "OrderItem"


def test_small_child_lists_stay_inline(sf: Salesforce):
    records = sf.query("SELECT Id, (SELECT Id FROM OrderItems) FROM Order LIMIT 50")["records"]
    with_items = [r["OrderItems"] for r in records if r["OrderItems"] is not None]
    assert with_items
    assert all(c["done"] is True and "nextRecordsUrl" not in c for c in with_items)


def test_count_and_count_id(sf: Salesforce):
    count = sf.query("SELECT COUNT() FROM Order")
    assert count["records"] == [] and count["done"] is True and count["totalSize"] > 0
    aggregate = sf.query("SELECT COUNT(Id) FROM Order")
    assert aggregate["records"][0]["attributes"]["type"] == "AggregateResult"
    assert aggregate["records"][0]["expr0"] == count["totalSize"]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Bogus", "INVALID_TYPE"),
        ("SELECT NoSuchField__c FROM Order", "INVALID_FIELD"),
        ("SELECT Id FROM Order WHERE", "MALFORMED_QUERY"),
    ],
)
def test_query_errors_raise_the_clients_exception(sf: Salesforce, soql: str, code: str):
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.query(soql)
    assert failure.value.status == 400
    assert failure.value.content[0]["errorCode"] == code
    assert "ERROR at Row:1:Column:" in failure.value.content[0]["message"]


def test_unknown_locator_is_invalid_query_locator(
    sandbox: SandboxServer, api: Callable[..., requests.Response]
):
    response = api("GET", "query/01gDOESNOTEXIST000-2000")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_any_api_version_is_accepted(api: Callable[..., requests.Response]):
    response = api("GET", "query/", params={"q": "SELECT Id FROM Order LIMIT 1"}, version="62.0")
    assert response.status_code == 200
    assert response.json()["totalSize"] == 1


def test_missing_q_is_malformed_query(api: Callable[..., requests.Response]):
    response = api("GET", "query/")
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "MALFORMED_QUERY"
