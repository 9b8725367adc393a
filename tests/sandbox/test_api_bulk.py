"""Bulk API 2.0 through simple-salesforce's ``sf.bulk2`` and raw calls."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceOperationError

from salesforce_sandbox import bulk, ingest
from salesforce_sandbox.server import SandboxServer

# A safety net for a job that never completes, far beyond what a slow machine takes.
JOB_DEADLINE_SECONDS = 300
# simple-salesforce sleeps `wait` seconds before its first poll (default 5).
NO_WAIT = 0


def _rows(page: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(page)))


def test_query_pages_are_csv_with_a_header_each(sf: Salesforce):
    expected = sf.query("SELECT COUNT() FROM Order WHERE Status = 'Activated'")["totalSize"]
    pages = list(
        sf.bulk2.Order.query(
            "SELECT Id, Account.Name, TotalAmount FROM Order WHERE Status = 'Activated'", max_records=60, wait=NO_WAIT
        )
    )
    assert len(pages) == -(-expected // 60)
    rows = []
    for page in pages:
        assert page.splitlines()[0] == '"Id","Account.Name","TotalAmount"'
        rows.extend(_rows(page)[1:])
    assert len(rows) == expected == len({r[0] for r in rows})


def test_values_are_quoted_and_null_is_empty(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    (page,) = sf.bulk2.Order.query(f"SELECT Id, Description, Status FROM Order WHERE Id = '{order_id}'", wait=NO_WAIT)
    assert page.splitlines()[1] == f'"{order_id}",,"Draft"'


def test_download_writes_csv_files(sf: Salesforce, tmp_path: Path):
    results = sf.bulk2.OrderItem.download("SELECT Id, Order.OrderNumber FROM OrderItem", str(tmp_path), wait=NO_WAIT)
    total = sum(r["number_of_records"] for r in results)
    assert total == sf.query("SELECT COUNT() FROM OrderItem")["totalSize"]
    first = Path(results[0]["file"]).read_text()
    assert first.startswith('"Id","Order.OrderNumber"\n')


def test_query_all_job_includes_deleted_rows(sf: Salesforce, make_order: Callable[..., str]):
    order_id = make_order()
    sf.Order.delete(order_id)
    soql = f"SELECT Id, IsDeleted FROM Order WHERE Id = '{order_id}'"
    (visible,) = sf.bulk2.Order.query(soql, wait=NO_WAIT)
    (everything,) = sf.bulk2.Order.query_all(soql, wait=NO_WAIT)
    assert len(_rows(visible)) == 1
    assert _rows(everything)[1] == [order_id, "true"]


def test_job_state_progression_and_results_before_completion(api: Callable[..., requests.Response]):
    created = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM OrderItem"})
    assert created.status_code == 200
    job = created.json()
    assert (job["state"], job["jobType"], job["object"]) == ("UploadComplete", "V2Query", "OrderItem")
    assert job["id"].startswith("750")

    states = []
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    while not states or states[-1] != "JobComplete":
        assert time.monotonic() < deadline
        states.append(api("GET", f"jobs/query/{job['id']}").json()["state"])
    assert set(states) <= {"InProgress", "JobComplete"}

    page = api("GET", f"jobs/query/{job['id']}/results", params={"maxRecords": 100})
    assert page.headers["Content-Type"].startswith("text/csv")
    assert page.headers["Sforce-NumberOfRecords"] == "100"
    locator = page.headers["Sforce-Locator"]
    assert locator not in ("", "null")
    last = api("GET", f"jobs/query/{job['id']}/results", params={"maxRecords": 100000, "locator": locator})
    assert last.headers["Sforce-Locator"] == "null"
    assert api("GET", "jobs/query").json()["records"][-1]["id"] == job["id"]


def test_results_are_refused_until_the_job_completes(
    api: Callable[..., requests.Response], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(bulk, "MIN_PROCESSING_SECONDS", 30.0)  # a job that is surely still running
    job = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Order"}).json()
    assert api("GET", f"jobs/query/{job['id']}").json()["state"] == "InProgress"
    response = api("GET", f"jobs/query/{job['id']}/results")
    assert response.status_code == 412
    assert response.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"


def test_abort_and_delete_a_query_job(api: Callable[..., requests.Response]):
    job = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM Order"}).json()
    aborted = api("PATCH", f"jobs/query/{job['id']}", json={"state": "Aborted"})
    assert aborted.json()["state"] == "Aborted"
    assert api("DELETE", f"jobs/query/{job['id']}").status_code == 204
    assert api("GET", f"jobs/query/{job['id']}").status_code == 404


@pytest.mark.parametrize(
    "soql",
    [
        "SELECT COUNT(Id) FROM Order",
        "SELECT Id, (SELECT Id FROM OrderItems) FROM Order",
        "SELECT Id FROM Order LIMIT 5 OFFSET 2",  # Bulk 2.0 has no OFFSET (wire spec 6a)
    ],
)
def test_aggregates_subqueries_and_offset_are_refused(api: Callable[..., requests.Response], soql: str):
    response = api("POST", "jobs/query", json={"operation": "query", "query": soql})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "API_ERROR"


def test_ingest_update_reports_successes_and_failures(sf: Salesforce, make_order: Callable[..., str]):
    good, bad = make_order(), make_order()
    (result,) = sf.bulk2.Order.update(
        records=[{"Id": good, "Description": "bulk"}, {"Id": bad, "Status": "Nope"}], wait=NO_WAIT
    )
    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (2, 1)
    assert sf.Order.get(good)["Description"] == "bulk"

    outcome = sf.bulk2.Order.get_all_ingest_records(result["job_id"])
    (succeeded,) = outcome["successfulRecords"]
    assert (succeeded["sf__Id"], succeeded["sf__Created"], succeeded["Description"]) == (good, "false", "bulk")
    (failed,) = outcome["failedRecords"]
    assert failed["sf__Id"] == bad
    assert failed["sf__Error"].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:")
    assert outcome["unprocessedRecords"] == []


def test_ingest_insert_creates_records(sf: Salesforce):
    (result,) = sf.bulk2.Account.insert(records=[{"Name": "Bulk One"}, {"Name": "Bulk Two"}], wait=NO_WAIT)
    assert result["numberRecordsFailed"] == 0
    rows = list(csv.DictReader(io.StringIO(sf.bulk2.Account.get_successful_records(result["job_id"]))))
    assert [r["sf__Created"] for r in rows] == ["true", "true"]
    assert {sf.Account.get(r["sf__Id"])["Name"] for r in rows} == {"Bulk One", "Bulk Two"}


def test_ingest_with_an_unknown_column_fails_the_job(sf: Salesforce):
    with pytest.raises(SalesforceOperationError, match="Field name not found : Bogus__c"):
        sf.bulk2.Account.insert(records=[{"Name": "x", "Bogus__c": "y"}], wait=NO_WAIT)


def test_bulk_calls_are_counted(sandbox: SandboxServer, sf: Salesforce):
    before = sandbox.admin.stats()["calls"]["bulk_query"]
    list(sf.bulk2.Order.query("SELECT Id FROM Order", wait=NO_WAIT))
    # create, at least one poll, one results page
    assert sandbox.admin.stats()["calls"]["bulk_query"] - before >= 3


def test_ingest_upsert_by_external_id(sf: Salesforce):
    sf.Account.create({"Name": "Before", "Customer_ID__c": "BULK-UPSERT-1"})
    (result,) = sf.bulk2.Account.upsert(
        records=[
            {"Customer_ID__c": "BULK-UPSERT-1", "Name": "After"},
            {"Customer_ID__c": "BULK-UPSERT-2", "Name": "New"},
        ],
        external_id_field="Customer_ID__c",
        wait=NO_WAIT,
    )
    assert result["numberRecordsFailed"] == 0
    rows = csv.DictReader(io.StringIO(sf.bulk2.Account.get_successful_records(result["job_id"])))
    assert {r["Customer_ID__c"]: r["sf__Created"] for r in rows} == {"BULK-UPSERT-1": "false", "BULK-UPSERT-2": "true"}
    assert sf.Account.get_by_custom_id("Customer_ID__c", "BULK-UPSERT-1")["Name"] == "After"


def test_aborted_ingest_leaves_its_rows_unprocessed(api: Callable[..., requests.Response]):
    job = api("POST", "jobs/ingest", json={"operation": "insert", "object": "Account", "contentType": "CSV"}).json()
    assert (job["state"], job["contentUrl"]) == ("Open", f"services/data/v59.0/jobs/ingest/{job['id']}/batches")
    upload = api(
        "PUT", f"jobs/ingest/{job['id']}/batches", data='Name\n"Never"\n', headers={"Content-Type": "text/csv"}
    )
    assert upload.status_code == 201
    assert api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "Aborted"}).json()["state"] == "Aborted"
    assert api("GET", f"jobs/ingest/{job['id']}/unprocessedRecords").text == '"Name"\n"Never"\n'



def _insert_job(api: Callable[..., requests.Response], line_ending: str, data: bytes) -> dict:
    """Run an Account insert job over raw CSV bytes; its final job info."""
    job = api("POST", "jobs/ingest", json={"operation": "insert", "object": "Account", "lineEnding": line_ending}).json()
    assert api("PUT", f"jobs/ingest/{job['id']}/batches", data=data, headers={"Content-Type": "text/csv"}).status_code == 201
    api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    while (info := api("GET", f"jobs/ingest/{job['id']}").json())["state"] not in ("JobComplete", "Failed"):
        assert time.monotonic() < deadline, info
        time.sleep(0.02)
    return info


@pytest.mark.parametrize(
    ("line_ending", "data"),
    [("LF", b"Name\r\nCRLF rows\r\n"), ("CRLF", b"Name\nLF rows\n")],
)
def test_rows_ended_otherwise_than_the_job_says_fail_the_job(
    api: Callable[..., requests.Response], line_ending: str, data: bytes
):
    info = _insert_job(api, line_ending, data)
    assert info["state"] == "Failed"
    assert info["errorMessage"] == (
        f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {line_ending}"
    )
    assert info["numberRecordsProcessed"] == 0


@pytest.mark.parametrize(
    ("line_ending", "data"),
    [
        ("LF", b'Name,Description\n"Quoted","two\r\nlines"\n'),
        ("CRLF", b'Name,Description\r\n"Quoted","two\nlines"\r\n'),
    ],
)
def test_line_breaks_inside_quoted_values_are_not_row_endings(
    api: Callable[..., requests.Response], line_ending: str, data: bytes
):
    info = _insert_job(api, line_ending, data)
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("JobComplete", 1, 0)


def _update_job(api: Callable[..., requests.Response], sobject: str, lines: list[str]) -> tuple[dict, list, list]:
    """Run an update job over raw CSV lines: (final job info, successful rows, failed rows)."""
    job = api("POST", "jobs/ingest", json={"operation": "update", "object": sobject, "contentType": "CSV"}).json()
    data = ("\n".join(lines) + "\n").encode()
    api("PUT", f"jobs/ingest/{job['id']}/batches", data=data, headers={"Content-Type": "text/csv"})
    api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    while (info := api("GET", f"jobs/ingest/{job['id']}").json())["state"] != "JobComplete":
        assert time.monotonic() < deadline, info
    succeeded, failed = (
        _rows(api("GET", f"jobs/ingest/{job['id']}/{kind}").text)[1:] for kind in ("successfulResults", "failedResults")
    )
    return info, succeeded, failed


def test_ingest_update_checks_unique_values_between_rows_of_one_job(
    sf: Salesforce, api: Callable[..., requests.Response], monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(ingest, "ROWS_PER_TRANSACTION", 2)  # the rows span several transactions
    tag = f"{time.time_ns()}"
    first, second, third = (sf.Account.create({"Name": f"Dup {n}"})["id"] for n in range(3))
    info, succeeded, failed = _update_job(
        api,
        "Account",
        [
            "Id,Customer_ID__c",
            f"{first},DUP-{tag}-A",
            f"{second},dup-{tag}-a",  # the same value in another letter case
            f"{third},DUP-{tag}-B",
            f"garbage,DUP-{tag}-C",
            f",DUP-{tag}-D",
            f"{second},DUP-{tag}-E",
        ],
    )
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (6, 3)
    assert succeeded == [
        [first, "false", first, f"DUP-{tag}-A"],
        [third, "false", third, f"DUP-{tag}-B"],
        [second, "false", second, f"DUP-{tag}-E"],
    ]
    assert failed == [
        [second, f"DUPLICATE_VALUE:duplicate value found: Customer_ID__c duplicates value on record with id: {first}",
         second, f"dup-{tag}-a"],
        ["garbage", "MALFORMED_ID:Account ID: id value of incorrect type: garbage", "garbage", f"DUP-{tag}-C"],
        ["", "MISSING_ARGUMENT:Id not specified in an update call", "", f"DUP-{tag}-D"],
    ]  # fmt: skip
    assert sf.Account.get(second)["Customer_ID__c"] == f"DUP-{tag}-E"


def test_ingest_update_applies_write_faults_row_by_row(
    sandbox: SandboxServer, api: Callable[..., requests.Response], make_order: Callable[..., str]
):
    failing, locked, other = make_order(), make_order(), make_order()
    sandbox.admin.set_faults(
        fail_rows={failing: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "Card declined"]},
        lock_rows=[locked],
        lock_rows_times=1,
    )
    lines = ["Id,Description", f"{failing},a", f"{locked},b", f"{other},c", f"{locked},d"]
    info, succeeded, failed = _update_job(api, "Order", lines)
    assert info["numberRecordsFailed"] == 2
    assert failed == [
        [failing, "FIELD_CUSTOM_VALIDATION_EXCEPTION:Card declined", failing, "a"],
        [locked, f"UNABLE_TO_LOCK_ROW:unable to obtain exclusive access to this record or 1 records: {locked}", locked, "b"],
    ]  # fmt: skip
    assert succeeded == [[other, "false", other, "c"], [locked, "false", locked, "d"]]  # the lock held once


def test_a_bulk_job_delay_keeps_a_job_in_progress_past_one_created_after_it_without(
    api: Callable[..., requests.Response], sandbox: SandboxServer
):
    """The realistic-latency bench's Salesforce-side queue (``bulk_job_delay_ms``)."""
    query = {"operation": "query", "query": "SELECT Id FROM Order"}
    sandbox.admin.set_faults(bulk_job_delay_ms=600_000)
    try:
        delayed = api("POST", "jobs/query", json=query).json()
    finally:
        sandbox.admin.clear_faults()
    prompt = api("POST", "jobs/query", json=query).json()
    deadline = time.monotonic() + JOB_DEADLINE_SECONDS
    while api("GET", f"jobs/query/{prompt['id']}").json()["state"] != "JobComplete":
        assert time.monotonic() < deadline
    assert api("GET", f"jobs/query/{delayed['id']}").json()["state"] == "InProgress"
