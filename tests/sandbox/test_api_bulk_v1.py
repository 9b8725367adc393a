"""Bulk API 1.0 (``/services/async/{version}``): jobs, batches, results, PK chunking, errors, in the
XML that jsforce sends and the JSON that Singer's tap-salesforce sends."""

from __future__ import annotations

import csv
import gzip
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest
import requests
from simple_salesforce import Salesforce

from salesforce_sandbox.server import SandboxServer

NS = "{http://www.force.com/2009/06/asyncapi/dataload}"


@pytest.fixture
def async_api(sandbox: SandboxServer, http: requests.Session) -> Callable[..., requests.Response]:
    """Raw Bulk API 1.0 calls with the session in ``X-SFDC-Session``, as clients send it."""

    def call(method: str, path: str, *, session: str | None = None, **kwargs) -> requests.Response:
        headers = {"X-SFDC-Session": session or sandbox.credentials["session_id"], **kwargs.pop("headers", {})}
        return http.request(method, f"{sandbox.url}/services/async/59.0/{path}", headers=headers, **kwargs)

    return call


def _xml(response: requests.Response) -> dict[str, str]:
    root = ET.fromstring(response.content)
    return {child.tag.removeprefix(NS): child.text or "" for child in root}


def _job_xml(operation: str, sobject: str, extra: str = "") -> str:
    # The body jsforce sends.
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<jobInfo  xmlns="http://www.force.com/2009/06/asyncapi/dataload">'
            f"<operation>{operation}</operation><object>{sobject}</object>{extra}<contentType>CSV</contentType></jobInfo>")


XML_HEADERS = {"Content-Type": "application/xml; charset=utf-8"}
JSON_HEADERS = {"Content-Type": "application/json"}


def _wait_for_batch(async_api, poll_until, job_id: str, batch_id: str, headers: dict | None = None) -> dict:
    return poll_until(
        lambda: _xml(async_api("GET", f"job/{job_id}/batch/{batch_id}", headers=headers or {})),
        lambda info: info["state"] in ("Completed", "Failed", "NotProcessed"),
        f"batch {batch_id}",
    )


def test_ingest_job_in_xml_as_jsforce_drives_it(sf: Salesforce, async_api, poll_until):
    created = async_api("POST", "job", data=_job_xml("insert", "Account"), headers=XML_HEADERS)
    assert created.status_code == 201
    assert created.headers["Content-Type"].startswith("application/xml")
    job = _xml(created)
    assert (job["state"], job["operation"], job["object"], job["contentType"]) == ("Open", "insert", "Account", "CSV")
    assert job["id"].startswith("750")

    rows = "Name,BillingCity\nBulk One Co,Banking\nBulk Two Co,Energy\n,Banking\n"
    added = async_api("POST", f"job/{job['id']}/batch", data=rows, headers={"Content-Type": "text/csv"})
    assert added.status_code == 201
    batch = _xml(added)
    assert batch["state"] == "Queued" and batch["id"].startswith("751") and batch["jobId"] == job["id"]

    info = _wait_for_batch(async_api, poll_until, job["id"], batch["id"])
    assert info["state"] == "Completed"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("3", "1")

    result = async_api("GET", f"job/{job['id']}/batch/{batch['id']}/result")
    assert result.headers["Content-Type"].startswith("text/csv")
    lines = list(csv.reader(io.StringIO(result.text)))
    assert lines[0] == ["Id", "Success", "Created", "Error"]
    assert [line[1:3] for line in lines[1:]] == [["true", "true"], ["true", "true"], ["false", "false"]]
    assert lines[3][3].startswith("REQUIRED_FIELD_MISSING:")
    assert sf.Account.get(lines[1][0])["Name"] == "Bulk One Co"
    assert async_api("GET", f"job/{job['id']}/batch/{batch['id']}/request").text == rows

    closed = async_api("POST", f"job/{job['id']}", headers=XML_HEADERS,
                       data=f'<jobInfo xmlns="{NS[1:-1]}"><state>Closed</state></jobInfo>')
    closed_info = _xml(closed)
    assert closed_info["state"] == "Closed"
    assert (closed_info["numberBatchesTotal"], closed_info["numberBatchesCompleted"]) == ("1", "1")
    assert (closed_info["numberRecordsProcessed"], closed_info["numberRecordsFailed"]) == ("3", "1")
    refused = async_api("POST", f"job/{job['id']}/batch", data=rows, headers={"Content-Type": "text/csv"})
    assert refused.status_code == 400
    assert _xml(refused)["exceptionCode"] == "InvalidJobState"


def test_query_job_in_json_as_tap_salesforce_drives_it(sf: Salesforce, async_api, poll_until):
    # tap-salesforce: JSON job, the query as a text/csv batch, close, poll the batch (XML), results.
    created = async_api("POST", "job", headers=JSON_HEADERS | {"Sforce-Disable-Batch-Retry": "true"},
                        data=json.dumps({"operation": "queryAll", "object": "Account", "contentType": "CSV"}))
    assert created.status_code == 201 and created.headers["Content-Type"].startswith("application/json")
    job_id = created.json()["id"]
    added = async_api("POST", f"job/{job_id}/batch", headers={"Content-Type": "text/csv"},
                      data="SELECT Id,Name FROM Account WHERE BillingCity != null ORDER BY Id")
    batch_id = _xml(added)["id"]
    async_api("POST", f"job/{job_id}", headers=JSON_HEADERS, data=json.dumps({"state": "Closed"}))
    info = _wait_for_batch(async_api, poll_until, job_id, batch_id, headers=JSON_HEADERS)
    assert info["state"] == "Completed"

    result_list = ET.fromstring(async_api("GET", f"job/{job_id}/batch/{batch_id}/result", headers=JSON_HEADERS).content)
    result_ids = [r.text for r in result_list.iter(f"{NS}result")]
    assert len(result_ids) == 1 and result_ids[0].startswith("752")
    page = async_api("GET", f"job/{job_id}/batch/{batch_id}/result/{result_ids[0]}", headers={"Content-Type": "text/csv"})
    rows = list(csv.reader(io.StringIO(page.text)))
    expected = sf.query_all("SELECT Id, Name FROM Account WHERE BillingCity != null ORDER BY Id")["records"]
    assert rows[0] == ["Id", "Name"]
    assert rows[1:] == [[r["Id"], r["Name"]] for r in expected]
    assert int(info["numberRecordsProcessed"]) == len(expected) > 0


def test_json_job_answers_json_throughout(sf: Salesforce, async_api, poll_until):
    job = async_api("POST", "job", headers=JSON_HEADERS,
                    data=json.dumps({"operation": "insert", "object": "Account", "contentType": "JSON"})).json()
    assert job["contentType"] == "JSON" and job["apiVersion"] == 59.0
    records = [{"Name": "Json Bulk Co", "BillingCity": "Energy"}, {"Name": "Json Bulk Null Co", "BillingCity": None}]
    batch = async_api("POST", f"job/{job['id']}/batch", headers=JSON_HEADERS, data=json.dumps(records)).json()
    assert batch["state"] == "Queued"
    info = poll_until(lambda: async_api("GET", f"job/{job['id']}/batch/{batch['id']}").json(),
                      lambda b: b["state"] == "Completed", "JSON batch")
    assert info["numberRecordsProcessed"] == 2
    results = async_api("GET", f"job/{job['id']}/batch/{batch['id']}/result").json()
    assert [r["success"] for r in results] == [True, True] and all(r["created"] for r in results)
    assert sf.Account.get(results[1]["id"])["BillingCity"] is None
    listed = async_api("GET", f"job/{job['id']}/batch").json()
    assert [b["id"] for b in listed["batchInfo"]] == [batch["id"]]

    query = async_api("POST", "job", headers=JSON_HEADERS,
                      data=json.dumps({"operation": "query", "object": "Account", "contentType": "JSON"})).json()
    qbatch = async_api("POST", f"job/{query['id']}/batch", headers={"Content-Type": "text/csv"},
                       data="SELECT Id, Name FROM Account WHERE Name LIKE 'Json Bulk%' ORDER BY Name").json()
    poll_until(lambda: async_api("GET", f"job/{query['id']}/batch/{qbatch['id']}").json(),
               lambda b: b["state"] == "Completed", "JSON query batch")
    result_ids = async_api("GET", f"job/{query['id']}/batch/{qbatch['id']}/result").json()
    found = async_api("GET", f"job/{query['id']}/batch/{qbatch['id']}/result/{result_ids[0]}").json()
    assert [r["Name"] for r in found] == ["Json Bulk Co", "Json Bulk Null Co"]
    assert found[0]["attributes"]["type"] == "Account"


def test_pk_chunking_splits_a_query_into_id_ranges(sf: Salesforce, async_api, poll_until):
    total = sf.query("SELECT COUNT() FROM Account")["totalSize"]
    chunk = 7
    job = async_api("POST", "job", headers=JSON_HEADERS | {"Sforce-Enable-PKChunking": f"true; chunkSize={chunk}"},
                    data=json.dumps({"operation": "query", "object": "Account", "contentType": "CSV"})).json()
    original = _xml(async_api("POST", f"job/{job['id']}/batch", headers={"Content-Type": "text/csv"},
                              data="SELECT Id FROM Account"))
    assert original["state"] == "Queued"
    batches = poll_until(
        lambda: [{c.tag.removeprefix(NS): c.text for c in b} for b in
                 ET.fromstring(async_api("GET", f"job/{job['id']}/batch").content)],
        lambda infos: all(b["state"] in ("Completed", "NotProcessed") for b in infos),
        "chunked batches",
    )
    states = {b["id"]: b["state"] for b in batches}
    assert states.pop(original["id"]) == "NotProcessed"
    assert len(states) == -(-total // chunk) and set(states.values()) == {"Completed"}
    ids: list[str] = []
    for batch_id in states:
        result_list = ET.fromstring(async_api("GET", f"job/{job['id']}/batch/{batch_id}/result").content)
        for result in result_list:
            page = async_api("GET", f"job/{job['id']}/batch/{batch_id}/result/{result.text}")
            chunk_ids = [row[0] for row in list(csv.reader(io.StringIO(page.text)))[1:]]
            assert 0 < len(chunk_ids) <= chunk
            ids += chunk_ids
    assert len(ids) == total == len(set(ids))
    assert ids == sorted(ids)  # chunks follow id order


def test_query_results_are_gzip_compressed_when_asked(async_api, poll_until):
    job = async_api("POST", "job", headers=JSON_HEADERS,
                    data=json.dumps({"operation": "query", "object": "Account", "contentType": "CSV"})).json()
    batch = _xml(async_api("POST", f"job/{job['id']}/batch", data="SELECT Id, Name FROM Account"))
    _wait_for_batch(async_api, poll_until, job["id"], batch["id"])
    result_id = ET.fromstring(async_api("GET", f"job/{job['id']}/batch/{batch['id']}/result").content)[0].text
    path = f"job/{job['id']}/batch/{batch['id']}/result/{result_id}"
    compressed = async_api("GET", path, headers={"Accept-Encoding": "gzip"}, stream=True)
    assert compressed.headers["Content-Encoding"] == "gzip"
    plain = async_api("GET", path, headers={"Accept-Encoding": "identity"})
    assert gzip.decompress(compressed.raw.read(decode_content=False)) == plain.content


@pytest.mark.parametrize(
    ("body", "headers", "code"),
    [
        (_job_xml("insert", "NoSuchObject"), XML_HEADERS, "InvalidJob"),
        (_job_xml("explode", "Account"), XML_HEADERS, "InvalidJob"),
        (_job_xml("upsert", "Account"), XML_HEADERS, "InvalidJob"),
        ("<jobInfo><operation>insert", XML_HEADERS, "InvalidXML"),
        (json.dumps({"operation": "query", "object": "Account", "contentType": "XML"}), JSON_HEADERS, "InvalidJob"),
        (_job_xml("insert", "Account"), XML_HEADERS | {"Sforce-Enable-PKChunking": "true"}, "InvalidJob"),
        (_job_xml("query", "Account"), XML_HEADERS | {"Sforce-Enable-PKChunking": "chunkSize=250001"}, "InvalidJob"),
    ],
)
def test_bad_jobs_are_refused_with_bulk_errors(async_api, body, headers, code):
    response = async_api("POST", "job", data=body, headers=headers)
    assert response.status_code == 400
    error = response.json() if headers is JSON_HEADERS else _xml(response)
    assert error["exceptionCode"] == code
    assert error["exceptionMessage"]


def test_invalid_session_is_a_400_invalid_session_id(async_api):
    # jsforce re-logs in on exactly this answer: 400 with <exceptionCode>InvalidSessionId</exceptionCode>.
    response = async_api("POST", "job", data=_job_xml("insert", "Account"), headers=XML_HEADERS, session="nope")
    assert response.status_code == 400
    assert "<exceptionCode>InvalidSessionId</exceptionCode>" in response.text
    as_json = async_api("GET", "job/750000000000001AAA", headers=JSON_HEADERS, session="nope")
    assert as_json.json() == {"exceptionCode": "InvalidSessionId", "exceptionMessage": "Invalid session id"}


def test_unknown_job_batch_and_url(async_api):
    unknown_job = async_api("GET", "job/750000000000000AAA", headers=JSON_HEADERS)
    assert unknown_job.status_code == 400 and unknown_job.json()["exceptionCode"] == "InvalidJob"
    job = async_api("POST", "job", headers=JSON_HEADERS,
                    data=json.dumps({"operation": "query", "object": "Account", "contentType": "CSV"})).json()
    unknown_batch = async_api("GET", f"job/{job['id']}/batch/751000000000000AAA")
    assert _xml(unknown_batch)["exceptionCode"] == "InvalidBatch"
    assert _xml(async_api("GET", "nothing/here"))["exceptionCode"] == "InvalidUrl"


def test_failed_batches_say_why(async_api, poll_until):
    job = async_api("POST", "job", headers=JSON_HEADERS,
                    data=json.dumps({"operation": "insert", "object": "Account", "contentType": "CSV"})).json()
    batch = _xml(async_api("POST", f"job/{job['id']}/batch", data="Name,NoSuchField__c\nx,y\n"))
    info = _wait_for_batch(async_api, poll_until, job["id"], batch["id"])
    assert info["state"] == "Failed"
    assert info["stateMessage"] == "InvalidBatch : Field name not found : NoSuchField__c"
    query = async_api("POST", "job", headers=JSON_HEADERS,
                      data=json.dumps({"operation": "query", "object": "Account", "contentType": "CSV"})).json()
    for soql, code in [("SELECT Nope FROM Account", "INVALID_FIELD"), ("SELECT Id FROM Contact", "INVALID_TYPE"),
                       ("SELECT COUNT() FROM Account", "FUNCTIONALITY_NOT_ENABLED")]:
        qbatch = _xml(async_api("POST", f"job/{query['id']}/batch", data=soql))
        info = _wait_for_batch(async_api, poll_until, query["id"], qbatch["id"])
        assert info["state"] == "Failed"
        assert info["stateMessage"].startswith(f"InvalidBatch : Failed to process query: {code}")
        result = async_api("GET", f"job/{query['id']}/batch/{qbatch['id']}/result")
        assert _xml(result)["exceptionCode"] == "InvalidBatch"


def test_aborted_job_takes_no_batch_and_stays_aborted(async_api):
    job = _xml(async_api("POST", "job", data=_job_xml("insert", "Account"), headers=XML_HEADERS))
    abort = f'<jobInfo xmlns="{NS[1:-1]}"><state>Aborted</state></jobInfo>'
    assert _xml(async_api("POST", f"job/{job['id']}", data=abort, headers=XML_HEADERS))["state"] == "Aborted"
    assert _xml(async_api("GET", f"job/{job['id']}"))["state"] == "Aborted"
    refused = async_api("POST", f"job/{job['id']}/batch", data="Name\nNever Co\n", headers={"Content-Type": "text/csv"})
    assert _xml(refused)["exceptionCode"] == "InvalidJobState"
    close = f'<jobInfo xmlns="{NS[1:-1]}"><state>Closed</state></jobInfo>'
    again = async_api("POST", f"job/{job['id']}", data=close, headers=XML_HEADERS)
    assert again.status_code == 400 and _xml(again)["exceptionCode"] == "InvalidJobState"
