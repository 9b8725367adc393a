"""sObject REST through simple-salesforce: CRUD, upsert, describe, change tracking, Order rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest, SalesforceResourceNotFound

from salesforce_sandbox.server import SandboxServer


def _error_code(failure: pytest.ExceptionInfo) -> str:
    return failure.value.content[0]["errorCode"]


def test_order_crud(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order(items=2)
    order = sf.Order.get(order_id)
    assert order["attributes"] == {"type": "Order", "url": f"/services/data/v59.0/sobjects/Order/{order_id}"}
    assert order["Status"] == "Draft" and order["TotalAmount"] > 0

    assert sf.Order.update(order_id, {"Description": "Rush delivery", "ShippingCity": "Köln"}) == 204
    updated = sf.Order.get(order_id)
    assert (updated["Description"], updated["ShippingCity"]) == ("Rush delivery", "Köln")
    assert updated["SystemModstamp"] > order["SystemModstamp"]

    assert sf.Order.delete(order_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Order.get(order_id)


def test_create_answers_201_with_id(sf: Salesforce):
    account = sf.Account.create({"Name": "O'Brien & Söhne"})
    assert account["success"] is True and account["errors"] == []
    assert account["id"].startswith("001") and len(account["id"]) == 18


def test_get_with_fields_param(api: Callable[..., requests.Response], make_order: Callable[..., str]):
    order_id = make_order()
    response = api("GET", f"sobjects/Order/{order_id}", params={"fields": "Status,EffectiveDate"})
    assert response.status_code == 200
    assert set(response.json()) == {"attributes", "Id", "Status", "EffectiveDate"}


def test_upsert_by_external_id_creates_then_updates(sf: Salesforce, api: Callable[..., requests.Response]):
    assert sf.Account.upsert("Customer_ID__c/CUST-UPSERT-1", {"Name": "Upsert Ltd"}) == 201
    created = sf.Account.get_by_custom_id("Customer_ID__c", "CUST-UPSERT-1")
    assert created["Name"] == "Upsert Ltd"

    response = api("PATCH", "sobjects/Account/Customer_ID__c/CUST-UPSERT-1", json={"Name": "Upsert Plc"})
    assert response.status_code == 200
    assert response.json() == {"id": created["Id"], "success": True, "errors": [], "created": False}
    assert sf.Account.get(created["Id"])["Name"] == "Upsert Plc"


def test_describe_object_and_global(sf: Salesforce):
    describe = sf.Order.describe()
    assert describe["name"] == "Order" and describe["keyPrefix"] == "801"
    status = next(f for f in describe["fields"] if f["name"] == "Status")
    assert status["restrictedPicklist"] is True
    assert {"Draft", "Activated"} <= {p["value"] for p in status["picklistValues"]}
    assert describe["childRelationships"][0]["relationshipName"] == "OrderItems"

    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Order", "OrderItem", "Account"} <= names
    assert sf.Order.metadata()["objectDescribe"]["keyPrefix"] == "801"


def _later_clock(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let two minutes pass for change tracking, which only covers whole minutes already gone."""
    monkeypatch.setattr(sandbox.store, "clock", lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))


def test_updated_lists_changed_records(
    sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str], monkeypatch: pytest.MonkeyPatch
):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    order_id = make_order()
    _later_clock(sandbox, monkeypatch)
    answer = sf.Order.updated(start, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    assert order_id in answer["ids"]
    assert answer["latestDateCovered"].endswith(":00.000+0000")


def test_deleted_lists_deleted_records(
    sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str], monkeypatch: pytest.MonkeyPatch
):
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    order_id = make_order()
    sf.Order.delete(order_id)
    _later_clock(sandbox, monkeypatch)
    answer = sf.Order.deleted(start, dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2))
    assert order_id in [r["id"] for r in answer["deletedRecords"]]
    assert {"earliestDateAvailable", "latestDateCovered"} <= set(answer)


def test_updated_refuses_a_window_older_than_30_days(sf: Salesforce):
    now = dt.datetime.now(dt.UTC)
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.updated(now - dt.timedelta(days=31), now)
    assert _error_code(failure) == "INVALID_REPLICATION_DATE"


def test_updated_refuses_a_naive_datetime_clearly(sf: Salesforce):
    now = dt.datetime.now()  # no tzinfo: simple-salesforce sends "...T10:00:00:"
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.updated(now - dt.timedelta(days=1), now)
    assert _error_code(failure) == "INVALID_REPLICATION_DATE"
    assert "time zone offset" in failure.value.content[0]["message"]


def test_new_order_must_be_draft(sf: Salesforce):
    account_id = sf.query("SELECT Id FROM Account LIMIT 1")["records"][0]["Id"]
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.create({"AccountId": account_id, "Status": "Activated", "EffectiveDate": "2026-01-01"})
    assert _error_code(failure) == "FAILED_ACTIVATION"


def test_activated_order_cannot_be_deleted(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order(items=1, activate=True)
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.delete(order_id)
    assert _error_code(failure) == "ENTITY_IS_LOCKED"


@pytest.mark.parametrize(
    ("values", "code", "field"),
    [
        ({"BillingCity": "x" * 41}, "STRING_TOO_LONG", "BillingCity"),
        ({"Status": "Shipped"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "Status"),
        ({"EffectiveDate": None}, "REQUIRED_FIELD_MISSING", "EffectiveDate"),
    ],
)
def test_field_errors_name_the_field(sf: Salesforce, make_order: Callable[..., str], values, code, field):
    order_id = make_order()
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.update(order_id, values)
    error = failure.value.content[0]
    assert error["errorCode"] == code
    assert error["fields"] == [field]


def test_create_missing_required_fields(sf: Salesforce):
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.Order.create({"Status": "Draft"})
    assert _error_code(failure) == "REQUIRED_FIELD_MISSING"


def test_malformed_json_body(api: Callable[..., requests.Response]):
    response = api("POST", "sobjects/Account/", data="{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_unknown_object_and_route_are_not_found_arrays(api: Callable[..., requests.Response]):
    for path in ("sobjects/Bogus/describe", "no/such/resource"):
        response = api("GET", path)
        assert response.status_code == 404
        assert response.json() == [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        assert response.headers["Sforce-Limit-Info"].startswith("api-usage=")


def test_versions_and_resources(sandbox: SandboxServer, http: requests.Session, api: Callable[..., requests.Response]):
    versions = http.get(f"{sandbox.url}/services/data/").json()
    assert {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"} in versions
    resources = api("GET", "").json()
    assert resources["query"] == "/services/data/v59.0/query"
