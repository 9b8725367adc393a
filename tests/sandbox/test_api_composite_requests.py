"""``POST /composite`` (subrequests with references, allOrNone) and sObject Collections retrieve."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import requests
from simple_salesforce import Salesforce

from salesforce_sandbox.server import SandboxServer

V = "/services/data/v59.0"


def _composite(sf: Salesforce, subrequests: list[dict], all_or_none: bool = False) -> list[dict]:
    answer = sf.restful("composite", method="POST", json={"allOrNone": all_or_none, "compositeRequest": subrequests})
    return answer["compositeResponse"]


def _new_account(reference_id: str, name: str) -> dict:
    return {"method": "POST", "url": f"{V}/sobjects/Account", "referenceId": reference_id, "body": {"Name": name}}


def test_subrequests_use_earlier_answers_through_references(sf: Salesforce, sandbox: SandboxServer):
    before = sandbox.runtime.stats()["calls"]["total"]
    results = _composite(sf, [
        _new_account("NewAccount", "Composite Parent Co"),
        {"method": "GET", "url": f"{V}/sobjects/Account/@{{NewAccount.id}}?fields=Name", "referenceId": "ReadBack"},
        {"method": "GET", "url": f"{V}/query?q=SELECT+Id,Name+FROM+Account+WHERE+Id='@{{NewAccount.id}}'",
         "referenceId": "Query"},
        {"method": "PATCH", "url": f"{V}/sobjects/Account/@{{Query.records[0].Id}}", "referenceId": "Rename",
         "body": {"Description": "named @{ReadBack.Name}"}},
    ])
    assert sandbox.runtime.stats()["calls"]["total"] == before + 1  # one API call for all of it
    created, read_back, query, rename = results
    assert created["httpStatusCode"] == 201 and created["body"]["success"] is True
    account_id = created["body"]["id"]
    assert created["httpHeaders"] == {"Location": f"{V}/sobjects/Account/{account_id}"}
    assert read_back["httpStatusCode"] == 200 and read_back["body"]["Name"] == "Composite Parent Co"
    assert query["body"]["records"][0]["Id"] == account_id
    assert rename["httpStatusCode"] == 204 and rename["body"] is None
    assert [r["referenceId"] for r in results] == ["NewAccount", "ReadBack", "Query", "Rename"]
    assert sf.Account.get(account_id)["Description"] == "named Composite Parent Co"


def test_all_or_none_rolls_back_and_halts_the_rest(sf: Salesforce):
    results = _composite(sf, [
        _new_account("First", "Rolled Back Co"),
        {"method": "POST", "url": f"{V}/sobjects/Account", "referenceId": "Bad", "body": {"NoSuchField__c": 1}},
        _new_account("Third", "Never Made Co"),
    ], all_or_none=True)
    assert [r["httpStatusCode"] for r in results] == [400, 400, 400]
    assert results[0]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert results[1]["body"][0]["errorCode"] == "INVALID_FIELD"
    assert results[2]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    names = sf.query("SELECT Id FROM Account WHERE Name IN ('Rolled Back Co', 'Never Made Co')")
    assert names["totalSize"] == 0


def test_without_all_or_none_only_dependants_of_a_failure_fail(sf: Salesforce):
    results = _composite(sf, [
        {"method": "POST", "url": f"{V}/sobjects/Account", "referenceId": "Bad", "body": {"NoSuchField__c": 1}},
        {"method": "GET", "url": f"{V}/sobjects/Account/@{{Bad.id}}", "referenceId": "Dependant"},
        _new_account("Independent", "Independent Co"),
    ])
    assert results[0]["httpStatusCode"] == 400
    assert results[1]["httpStatusCode"] == 400
    assert results[1]["body"][0]["errorCode"] == "PROCESSING_HALTED"
    assert "@{Bad.id}"[2:-1] in results[1]["body"][0]["message"]
    assert results[2]["httpStatusCode"] == 201
    assert sf.Account.get(results[2]["body"]["id"])["Name"] == "Independent Co"


def test_subrequest_errors_keep_their_status(sf: Salesforce):
    results = _composite(sf, [
        {"method": "GET", "url": f"{V}/sobjects/Account/001000000000000AAA", "referenceId": "Missing"},
        {"method": "GET", "url": f"{V}/query?q=SELEC+nonsense", "referenceId": "BadQuery"},
        {"method": "DELETE", "url": f"{V}/query", "referenceId": "WrongMethod"},
        {"method": "GET", "url": f"{V}/jobs/query", "referenceId": "Bulk"},
    ])
    assert [r["httpStatusCode"] for r in results] == [404, 400, 405, 400]
    assert results[0]["body"][0]["errorCode"] == "NOT_FOUND"
    assert results[1]["body"][0]["errorCode"] == "MALFORMED_QUERY"


def test_subrequests_may_read_the_limits(sf: Salesforce):
    (result,) = _composite(sf, [{"method": "GET", "url": f"{V}/limits", "referenceId": "Limits"}])
    assert result["httpStatusCode"] == 200
    assert set(result["body"]["DailyApiRequests"]) == {"Max", "Remaining"}


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ({"compositeRequest": [_new_account(f"A{i}", "x") for i in range(26)]}, "at most 25 subrequests"),
        ({"compositeRequest": [{"method": "GET", "url": f"{V}/query?q=SELECT+Id+FROM+Account", "referenceId": f"Q{i}"}
                               for i in range(6)]}, "at most 5 query or sObject Collections"),
        ({"compositeRequest": [_new_account("Same", "x"), _new_account("Same", "y")]}, "Duplicate referenceId"),
        ({"compositeRequest": []}, "non-empty array"),
    ],
)
def test_malformed_composite_requests_are_refused_whole(api: Callable[..., requests.Response], request_body, message):
    response = api("POST", "composite", json=request_body)
    assert response.status_code == 400
    assert message in response.json()[0]["message"]


def test_collections_retrieve_by_ids_in_order_with_null_for_missing(sf: Salesforce, api):
    accounts = sf.query("SELECT Id, Name FROM Account ORDER BY Name LIMIT 3")["records"]
    ids = [accounts[2]["Id"], "001000000000000AAA", accounts[0]["Id"]]
    answer = api("GET", "composite/sobjects/Account", params={"ids": ",".join(ids), "fields": "Id,Name"})
    assert answer.status_code == 200
    records = answer.json()
    assert records[1] is None
    assert [records[0]["Name"], records[2]["Name"]] == [accounts[2]["Name"], accounts[0]["Name"]]
    assert records[0]["attributes"]["type"] == "Account"
    assert set(records[0]) == {"attributes", "Id", "Name"}
    # The POST form, for id lists too long for a URL.
    posted = api("POST", "composite/sobjects/Account", json={"ids": ids, "fields": ["Id", "Name"]})
    assert posted.json() == records


@pytest.mark.parametrize(
    ("params", "code"),
    [({"ids": "001000000000000AAA"}, "MISSING_ARGUMENT"), ({"fields": "Name"}, "MISSING_ARGUMENT"),
     ({"ids": "001000000000000AAA", "fields": "Nope"}, "INVALID_FIELD")],
)
def test_collections_retrieve_errors(api, params, code):
    response = api("GET", "composite/sobjects/Account", params=params)
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == code
