"""Limits, usage counting and every fault switch, seen through simple-salesforce."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
)

from salesforce_sandbox.admin import AdminError
from salesforce_sandbox.server import SandboxServer

PING = "SELECT Id FROM Order LIMIT 1"


def _outcomes(sf: Salesforce, calls: int) -> list[int]:
    """HTTP status of ``calls`` queries (200 or the error's status)."""
    statuses = []
    for _ in range(calls):
        try:
            sf.query(PING)
            statuses.append(200)
        except (SalesforceGeneralError, SalesforceRefusedRequest) as exc:
            statuses.append(exc.status)
    return statuses


# -- limits and usage --------------------------------------------------------------------------


def test_limits_and_the_usage_header(sandbox: SandboxServer, sf: Salesforce):
    limits = sf.limits()
    used, total = sf.api_usage["api-usage"]
    assert total == limits["DailyApiRequests"]["Max"] == 15000
    assert limits["DailyApiRequests"]["Remaining"] == total - used
    assert sandbox.admin.stats()["api_usage"] == {"used": used, "max": total}
    sf.query(PING)
    assert sf.api_usage["api-usage"].used == used + 1


def test_limits_name_the_bulk_allowances(sf: Salesforce):
    limits = sf.limits()
    # DailyBulkApiRequests is the name the wire spec (section 7) shows; DailyBulkApiBatches the newer one.
    for name in ("DailyBulkApiRequests", "DailyBulkApiBatches", "DailyBulkV2QueryJobs"):
        assert set(limits[name]) == {"Max", "Remaining"}
        assert 0 <= limits[name]["Remaining"] <= limits[name]["Max"]


def test_error_answers_carry_the_usage_header(api: Callable[..., requests.Response]):
    response = api("GET", "query/", params={"q": "SELECT Id FROM Bogus"})
    assert response.status_code == 400
    assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_a_uri_or_head_longer_than_salesforce_takes_is_refused(api: Callable[..., requests.Response]):
    """16,384 bytes of URI and headers together: a longer URI is 414, a longer head 431; a query just
    under it is answered."""
    names = ", ".join(f"'{n:08d}'" for n in range(1_000))
    too_long = api("GET", "query/", params={"q": f"SELECT Id FROM Order WHERE OrderNumber IN ({names})"})
    assert too_long.status_code == 414
    big_header = api("GET", "query/", params={"q": "SELECT Id FROM Order LIMIT 1"}, headers={"X-Padding": "x" * 16_350})
    assert big_header.status_code == 431
    short = ", ".join(f"'{n:08d}'" for n in range(200))
    assert api("GET", "query/", params={"q": f"SELECT Id FROM Order WHERE OrderNumber IN ({short})"}).status_code == 200


def test_exhausted_daily_allowance_is_request_limit_exceeded(sandbox: SandboxServer, sf: Salesforce):
    used = sandbox.admin.stats()["api_usage"]["used"]
    sandbox.admin.set_faults(daily_api_limit=used + 2)
    sf.query(PING)
    sf.query(PING)
    with pytest.raises(SalesforceRefusedRequest) as failure:
        sf.query(PING)
    assert failure.value.status == 403
    assert failure.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    sandbox.admin.clear_faults()
    assert sf.limits()["DailyApiRequests"]["Max"] == 15000


def test_stats_count_calls_by_kind(sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    sandbox.admin.reset_stats()
    sf.query_all("SELECT Id FROM OrderItem", headers={"Sforce-Query-Options": "batchSize=200"})
    sf.Order.get(order_id)
    sf.Order.update(order_id, {"Description": "counted"})
    sf.Order.describe()
    sf.restful("composite/sobjects", method="PATCH", json={"records": [{"attributes": {"type": "Order"}, "id": order_id}]})
    sf.limits()
    calls = sandbox.admin.stats()["calls"]
    pages = -(-sandbox.store.count("OrderItem") // 200)
    assert (calls["query"], calls["query_more"]) == (1, pages - 1)
    assert (calls["sobject_read"], calls["sobject_write"], calls["describe"]) == (1, 1, 1)
    assert (calls["composite"], calls["limits"]) == (1, 1)
    assert calls["total"] == pages + 5
    assert sandbox.admin.stats()["api_usage"]["used"] == calls["total"]


# -- availability and rate faults --------------------------------------------------------------


def test_503_burst(sandbox: SandboxServer, sf: Salesforce, api: Callable[..., requests.Response]):
    sandbox.admin.set_faults(error_503_burst=2)
    assert _outcomes(sf, 3) == [503, 503, 200]
    sandbox.admin.set_faults(error_503_burst=1)
    response = api("GET", "limits/")
    assert response.status_code == 503
    assert response.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
    assert sandbox.admin.stats()["faults_injected"]["error_503"] == 3


def test_503_share_is_deterministic_by_seed(sandbox: SandboxServer, sf: Salesforce):
    sandbox.admin.set_faults(error_503_share=0.5, seed=3)
    first = _outcomes(sf, 20)
    sandbox.admin.set_faults(error_503_share=0.5, seed=3)
    assert _outcomes(sf, 20) == first
    assert 0 < first.count(503) < 20


def test_rate_limit_after(sandbox: SandboxServer, sf: Salesforce):
    sandbox.admin.set_faults(rate_limit_after=2)
    assert _outcomes(sf, 4) == [200, 200, 403, 403]


def test_latency(sandbox: SandboxServer, sf: Salesforce):
    sandbox.admin.set_faults(latency_ms=300)
    started = time.monotonic()
    sf.query(PING)
    assert time.monotonic() - started >= 0.3


# -- sessions ----------------------------------------------------------------------------------


def test_expired_session_answers_invalid_session_id(sandbox: SandboxServer, sf: Salesforce):
    sandbox.admin.set_faults(session_expires_after=1)
    sf.query(PING)
    with pytest.raises(SalesforceExpiredSession) as failure:  # direct mode cannot log in again
        sf.query(PING)
    assert failure.value.content[0]["errorCode"] == "INVALID_SESSION_ID"
    with pytest.raises(SalesforceExpiredSession):
        sf.query(PING)  # the session stays dead


def test_soap_client_logs_in_again_after_session_expiry(sandbox: SandboxServer, sf_soap: Salesforce):
    first_session = sf_soap.session_id
    logins = sandbox.admin.stats()["calls"]["auth"]
    sandbox.admin.set_faults(session_expires_after=0)
    sf_soap.query(PING)  # 401, then simple-salesforce logs in again and retries
    assert sf_soap.session_id != first_session
    assert sandbox.admin.stats()["calls"]["auth"] == logins + 1
    assert sandbox.admin.stats()["faults_injected"]["invalid_session"] == 1
    sf_soap.query(PING)  # the new session stays valid


# -- record faults -----------------------------------------------------------------------------


def test_locked_row_fails_every_write(sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str]):
    locked, free = make_order(), make_order()
    sandbox.admin.set_faults(lock_rows=[locked])
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.update(locked, {"Description": "x"})
    assert failure.value.content[0] == {
        "message": f"unable to obtain exclusive access to this record or 1 records: {locked}",
        "errorCode": "UNABLE_TO_LOCK_ROW",
    }
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"attributes": {"type": "Order"}, "id": i, "Description": "y"} for i in (locked, free)]},
    )
    assert results[0]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert results[1]["success"] is True


def test_locked_row_times_then_succeeds(sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    sandbox.admin.set_faults(lock_rows=[order_id], lock_rows_times=2)
    body = {"records": [{"attributes": {"type": "Order"}, "id": order_id, "Description": "retry"}]}
    codes = [sf.restful("composite/sobjects", method="PATCH", json=body)[0] for _ in range(3)]
    assert [c["success"] for c in codes] == [False, False, True]
    assert sf.Order.get(order_id)["Description"] == "retry"


def test_fail_rows_is_permanent(sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    sandbox.admin.set_faults(fail_rows={order_id: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "Card declined"]})
    for _ in range(2):
        with pytest.raises(SalesforceMalformedRequest) as failure:
            sf.Order.update(order_id, {"Description": "x"})
        assert failure.value.content[0] == {"message": "Card declined", "errorCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION"}
    (result,) = sf.bulk2.Order.update(records=[{"Id": order_id, "Description": "bulk"}], wait=0)
    assert result["numberRecordsFailed"] == 1


def test_unknown_fault_switch_is_refused(sandbox: SandboxServer):
    with pytest.raises(AdminError, match="400"):
        sandbox.admin.set_faults(error_404_share=0.1)


# -- re-seeding ----------------------------------------------------------------------------------


def test_reset_reseeds_the_org(sandbox: SandboxServer, sf: Salesforce):
    try:
        answer = sandbox.admin.reset(orders=60, seed=11, with_imported_status=False)
        assert answer["counts"]["Order"] == sf.query("SELECT COUNT() FROM Order")["totalSize"] > 0
        status = next(f for f in sf.Order.describe()["fields"] if f["name"] == "Status")
        assert "Imported" not in {p["value"] for p in status["picklistValues"]}
    finally:
        sandbox.admin.reset(orders=200, seed=7, with_imported_status=True)
    status = next(f for f in sf.Order.describe()["fields"] if f["name"] == "Status")
    assert "Imported" in {p["value"] for p in status["picklistValues"]}
