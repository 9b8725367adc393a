"""sObject Collections through ``sf.restful('composite/sobjects', ...)``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest


def _update(order_id: str, **values) -> dict:
    return {"attributes": {"type": "Order"}, "id": order_id, **values}


def test_update_in_request_order_with_partial_failure(sf: Salesforce, make_order: Callable[..., str]):
    first, second = make_order(), make_order()
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [
                _update(first, Description="one"),
                _update(second, Status="NoSuchStatus"),
                _update(second, Description="two"),
            ],
        },
    )
    assert results[0] == {"id": first, "success": True, "errors": []}
    assert results[1]["success"] is False
    assert results[1]["errors"][0]["statusCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    assert results[1]["errors"][0]["fields"] == ["Status"]
    assert results[2] == {"id": second, "success": True, "errors": []}
    assert sf.Order.get(first)["Description"] == "one"
    assert sf.Order.get(second)["Description"] == "two"


def test_all_or_none_rolls_everything_back(sf: Salesforce, make_order: Callable[..., str]):
    first, second = make_order(), make_order()
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"allOrNone": True, "records": [_update(first, Description="kept?"), _update(second, BillingCity="x" * 41)]},
    )
    assert results[0]["success"] is False
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "STRING_TOO_LONG"
    assert sf.Order.get(first)["Description"] is None


def test_create_and_delete(sf: Salesforce):
    created = sf.restful(
        "composite/sobjects",
        method="POST",
        json={"records": [{"attributes": {"type": "Account"}, "Name": f"Collection {i}"} for i in range(3)]},
    )
    ids = [r["id"] for r in created]
    assert all(r["success"] for r in created) and all(i.startswith("001") for i in ids)
    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids), "allOrNone": "false"})
    assert deleted == [{"id": i, "success": True, "errors": []} for i in ids]


def test_delete_without_ids_is_a_malformed_request(sf: Salesforce):
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.restful("composite/sobjects", method="DELETE", params={"allOrNone": "false"})
    assert failure.value.content[0]["errorCode"] == "MISSING_ARGUMENT"


def test_record_without_type_or_id_fails_alone(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={"records": [{"id": order_id, "Description": "x"}, {"attributes": {"type": "Order"}, "Description": "y"}]},
    )
    assert results[0]["errors"][0]["statusCode"] == "INVALID_TYPE"
    assert results[1]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"


def test_more_than_200_records_is_rejected(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    with pytest.raises(SalesforceMalformedRequest) as failure:
        sf.restful("composite/sobjects", method="PATCH", json={"records": [_update(order_id)] * 201})
    assert failure.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


def test_update_of_mixed_objects_checks_unique_values_within_the_request(
    sf: Salesforce, make_order: Callable[..., str]
):
    order_id = make_order()
    first, second = (sf.Account.create({"Name": f"Collection dup {n}"})["id"] for n in range(2))
    value = f"COLL-{order_id}"

    def account(record_id: str, **values) -> dict:
        return {"attributes": {"type": "Account"}, "id": record_id, **values}

    results = sf.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "records": [
                account(first, Customer_ID__c=value),
                _update(order_id, Description="mixed"),
                account(second, Customer_ID__c=value.lower()),  # a duplicate of the first record's
                account(second, Name="renamed"),
                _update("801000000000000", Description="x"),
            ]
        },
    )
    assert [r["success"] for r in results] == [True, True, False, True, False]
    assert results[2]["errors"] == [
        {
            "statusCode": "DUPLICATE_VALUE",
            "message": f"duplicate value found: Customer_ID__c duplicates value on record with id: {first}",
            "fields": ["Customer_ID__c"],
        }
    ]
    assert results[4]["errors"][0]["statusCode"] == "NOT_FOUND"
    assert sf.Account.get(second)["Name"] == "renamed"
    assert sf.Order.get(order_id)["Description"] == "mixed"
