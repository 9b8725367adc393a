"""The project's Salesforce hook against the local sandbox, reached through an Airflow connection
exactly as a deployment defines it (``AIRFLOW_CONN_<ID>`` in JSON form): logins, paging with
child subqueries, collections, retries, error translation, API accounting and secret masking."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from airflow.sdk.log import redact

from salesforce_orders.salesforce import (
    COLLECTION_LIMIT,
    ApiBudgetExceeded,
    ApiLimitExceeded,
    SalesforceApiError,
    SalesforceOrdersHook,
)
from salesforce_orders.soql import literal
from salesforce_sandbox.auth import ORG_ID, Credentials
from salesforce_sandbox.server import SandboxServer

CONN_ID = "salesforce_hook_test"
ORG_ORDERS = 460
MANY_ITEMS = 250


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    # A session id of this module's own, so no other test can have registered it for masking.
    credentials = Credentials(session_id=f"{ORG_ID[:15]}!AQ{uuid.uuid4().hex}")
    server = SandboxServer(
        port=0, orders=ORG_ORDERS, credentials=credentials, state_dir=tmp_path_factory.mktemp("hook-sandbox")
    )
    with server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults_after(sandbox: SandboxServer) -> Iterator[None]:
    yield
    sandbox.admin.clear_faults()


@pytest.fixture
def connect(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., SalesforceOrdersHook]:
    """A hook on a connection to the sandbox: password login by default, or the given connection."""

    def make(connection: dict[str, Any] | None = None, **hook_options: Any) -> SalesforceOrdersHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection or sandbox.airflow_connection()))
        return SalesforceOrdersHook(CONN_ID, **hook_options)

    return make


@pytest.fixture
def hook(connect: Callable[..., SalesforceOrdersHook]) -> SalesforceOrdersHook:
    """A logged-in hook whose fast backoff keeps the retry tests quick."""
    h = connect(backoff_factor=0.01)
    h.conn  # noqa: B018 - log in now, so the tests count only their own calls
    return h


def sandbox_calls(sandbox: SandboxServer) -> dict[str, int]:
    return sandbox.admin.stats()["calls"]


def direct_connection(sandbox: SandboxServer) -> dict[str, Any]:
    # Without login and password the provider takes the direct path: session id + instance URL.
    return {
        "conn_type": "salesforce",
        "extra": {
            "session_id": sandbox.credentials["session_id"],
            "instance_url": sandbox.url,
            "ca_bundle": str(sandbox.ca_path),
        },
    }


# ---------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [None, "test"], ids=["login", "test domain"])
def test_password_login_goes_to_login_url(sandbox: SandboxServer, connect, domain: str | None):
    connection = sandbox.airflow_connection()
    if domain:
        connection["extra"]["domain"] = domain
    before = sandbox_calls(sandbox)
    hook = connect(connection)

    assert hook.conn.auth_type == "password"
    assert hook.instance_url == sandbox.url
    assert sandbox_calls(sandbox)["auth"] == before["auth"] + 1
    assert hook.conn.session_id != sandbox.credentials["session_id"]  # a token issued by this login
    assert hook.count("SELECT COUNT() FROM Account") == sandbox.store.count("Account")


def test_the_token_from_a_login_is_masked_in_logs(connect):
    hook = connect()
    token = hook.conn.session_id

    assert token and token not in redact(f"Authorization: Bearer {token}")


def test_direct_session_id_extra(sandbox: SandboxServer, connect):
    session_id = sandbox.credentials["session_id"]
    line = f"Authorization: Bearer {session_id}"
    assert session_id in redact(line)  # not a known secret before the hook sees it
    before = sandbox_calls(sandbox)

    hook = connect(direct_connection(sandbox))

    assert hook.conn.auth_type == "direct"
    assert hook.count("SELECT COUNT() FROM Order") == ORG_ORDERS
    assert sandbox_calls(sandbox)["auth"] == before["auth"]  # no login call
    assert session_id not in redact(line)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def test_iter_query_pages_yields_every_page(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    calls_before = hook.usage.calls

    pages = list(hook.iter_query_pages("SELECT Id FROM Order ORDER BY Id", page_size=200))

    total = sandbox.store.count("Order")
    assert [len(page) for page in pages] == [200, 200, total - 400]
    ids = [record["Id"] for page in pages for record in page]
    assert len(set(ids)) == total and ids == sorted(ids)
    assert hook.usage.calls - calls_before == 3  # one query, two queryMore


def test_rest_numbers_with_a_fraction_arrive_as_exact_decimals(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    with sandbox.store.lock:
        item_id = sandbox.store.conn.execute("SELECT Id FROM OrderItem WHERE IsDeleted = 0 ORDER BY Id LIMIT 1").fetchone()[0]
    [page] = list(hook.iter_query_pages(f"SELECT Id, Quantity, UnitPrice, TotalPrice FROM OrderItem WHERE Id = '{item_id}'"))
    [item] = page
    # a float would do for these values; the type shows that none went through one
    assert all(type(item[name]) is Decimal for name in ("Quantity", "UnitPrice", "TotalPrice"))
    assert item["TotalPrice"] == item["Quantity"] * item["UnitPrice"]


def test_bulk_result_pages_are_streamed_in_chunks(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    """A Bulk result page bigger than a chunk comes in chunks, with REST-typed values, and counts as
    one page; a value with a line break inside its quotes stays one value."""
    with sandbox.store.lock:
        order_id = sandbox.store.conn.execute('SELECT Id FROM "Order" WHERE IsDeleted = 0 ORDER BY Id LIMIT 1').fetchone()[0]
    sandbox.store.update("Order", order_id, {"Description": 'first line\nsecond, "quoted" line'})
    pages_before, calls_before = hook.usage.result_pages, hook.usage.calls

    chunks = list(
        hook.iter_bulk_query_pages(
            "SELECT Id, Description, TotalAmount FROM Order", chunk_records=100, sleep=lambda seconds: None
        )
    )

    total = sandbox.store.count("Order")
    assert [len(chunk) for chunk in chunks] == [100] * (total // 100) + ([total % 100] if total % 100 else [])
    records = {record["Id"]: record for chunk in chunks for record in chunk}
    assert len(records) == total
    assert records[order_id]["Description"] == 'first line\nsecond, "quoted" line'
    assert all(isinstance(r["TotalAmount"], Decimal) for r in records.values() if r["TotalAmount"] is not None)
    assert hook.usage.result_pages - pages_before == 1
    assert hook.usage.calls - calls_before >= 3  # job, at least one poll, one result page (+ describe)


@pytest.fixture(scope="module")
def order_with_many_items(sandbox: SandboxServer) -> str:
    """An Activated order with more products than a child subquery returns inline."""
    store = sandbox.store
    with store.lock:
        entry_id, pricebook_id, price = store.conn.execute(
            'SELECT Id, Pricebook2Id, UnitPrice FROM "PricebookEntry" WHERE IsDeleted = 0 LIMIT 1'
        ).fetchone()
        account_id = store.conn.execute('SELECT Id FROM "Account" WHERE IsDeleted = 0 LIMIT 1').fetchone()[0]
        order_id = store.create(
            "Order",
            {"AccountId": account_id, "Status": "Draft", "EffectiveDate": "2026-01-15", "Pricebook2Id": pricebook_id},
        )
        for _ in range(MANY_ITEMS):
            store.create("OrderItem", {"OrderId": order_id, "PricebookEntryId": entry_id, "Quantity": 1, "UnitPrice": price})
        store.update("Order", order_id, {"Status": "Activated"})
    return order_id


def test_child_subqueries_are_completed_past_200_children(hook: SalesforceOrdersHook, order_with_many_items: str):
    soql = f"SELECT Id, (SELECT Id FROM OrderItems) FROM Order WHERE Id = {literal(order_with_many_items)}"
    calls_before = hook.usage.calls

    [page] = list(hook.iter_query_pages(soql))

    [record] = page
    children = record["OrderItems"]
    assert len(children["records"]) == MANY_ITEMS and len({c["Id"] for c in children["records"]}) == MANY_ITEMS
    assert children["done"] is True and "nextRecordsUrl" not in children
    assert hook.usage.calls - calls_before == 2  # the query, and one page of the remaining children


# ---------------------------------------------------------------------------------------
# API usage and budget
# ---------------------------------------------------------------------------------------


def test_usage_counts_calls_and_reads_the_org_usage_header(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    calls_before, sandbox_before = hook.usage.calls, sandbox_calls(sandbox)["total"]

    hook.describe("Order")
    hook.describe("Order")  # cached: no second call
    hook.count("SELECT COUNT() FROM Order")

    assert hook.usage.calls - calls_before == 2 == sandbox_calls(sandbox)["total"] - sandbox_before
    usage = sandbox.admin.stats()["api_usage"]
    assert (hook.usage.org_used, hook.usage.org_max) == (usage["used"], usage["max"])
    assert hook.usage.org_remaining == usage["max"] - usage["used"]


def test_budget_share_stops_the_run_before_it_spends_more(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    used = sandbox.admin.stats()["api_usage"]["used"]
    sandbox.admin.set_faults(daily_api_limit=used + 21)
    hook.count("SELECT COUNT() FROM Order")  # the answer carries the lowered allowance

    hook.set_budget_share(0.5)

    allowed = hook.usage.budget - hook.usage.calls
    assert allowed == int(hook.usage.org_remaining * 0.5) and allowed > 0
    made = 0
    with pytest.raises(ApiBudgetExceeded) as raised:
        while made <= allowed:
            hook.call("GET", "limits/")
            made += 1
    assert made == allowed
    assert raised.value.code == "API_BUDGET_EXCEEDED" and "the next run continues" in str(raised.value)
    assert sandbox.admin.stats()["api_usage"]["used"] < used + 21  # stopped before the org's own limit


def test_a_full_share_sets_no_budget(hook: SalesforceOrdersHook):
    hook.set_budget_share(1.0)
    assert hook.usage.budget is None


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def test_update_records_sends_200_records_a_call(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    with sandbox.store.lock:
        ids = [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Order" ORDER BY Id LIMIT 450')]
    marker = uuid.uuid4().hex[:8]
    records = [{"attributes": {"type": "Order"}, "id": i, "Description": f"{marker} {n}"} for n, i in enumerate(ids)]
    composite_before, calls_before = sandbox_calls(sandbox)["composite"], hook.usage.calls

    results = hook.update_records(records)

    assert len(ids) == 450 and COLLECTION_LIMIT == 200
    assert sandbox_calls(sandbox)["composite"] - composite_before == 3
    assert hook.usage.calls - calls_before == 3
    assert [r["id"] for r in results] == ids and all(r["success"] for r in results)
    assert sandbox.store.get("Order", ids[-1], ["Description"])["Description"] == f"{marker} 449"


def test_per_record_failures_come_back_in_order(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    with sandbox.store.lock:
        first, second = [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Order" ORDER BY Id LIMIT 2')]
    sandbox.admin.set_faults(lock_rows=[second])

    results = hook.update_records([{"attributes": {"type": "Order"}, "id": i, "Description": "x"} for i in (first, second)])

    assert results[0]["success"] is True
    assert results[1]["success"] is False and results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"


# ---------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------


def test_a_503_burst_is_retried(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    injected_before = sandbox.admin.stats()["faults_injected"]["error_503"]
    sandbox.admin.set_faults(error_503_burst=3)

    assert hook.count("SELECT COUNT() FROM Order") == sandbox.store.count("Order")
    assert sandbox.admin.stats()["faults_injected"]["error_503"] - injected_before == 3


def test_503_beyond_the_retries_is_an_error(sandbox: SandboxServer, connect):
    hook = connect(max_retries=1, backoff_factor=0.01)
    hook.conn  # noqa: B018 - the login is not the call under test
    sandbox.admin.set_faults(error_503_burst=5)

    with pytest.raises(SalesforceApiError) as raised:
        hook.count("SELECT COUNT() FROM Order")

    assert (raised.value.status, raised.value.code) == (503, "SERVER_UNAVAILABLE")


def test_errors_carry_salesforce_code(hook: SalesforceOrdersHook):
    with pytest.raises(SalesforceApiError) as raised:
        list(hook.iter_query_pages("SELECT NoSuchField__c FROM Order"))

    error = raised.value
    assert type(error) is SalesforceApiError
    assert (error.code, error.status) == ("INVALID_FIELD", 400)
    assert "NoSuchField__c" in str(error) and "INVALID_FIELD" in str(error)


def test_request_limit_exceeded_is_api_limit_exceeded(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    sandbox.admin.set_faults(rate_limit_after=0)

    with pytest.raises(ApiLimitExceeded) as raised:
        hook.describe("Account")

    assert (raised.value.code, raised.value.status) == ("REQUEST_LIMIT_EXCEEDED", 403)
    assert isinstance(raised.value, SalesforceApiError)
