"""What the sandbox puts on the wire: header names as Salesforce writes them, gzip when asked."""

from __future__ import annotations

import gzip
import json
import socket
import ssl
import zlib

import pytest

from salesforce_sandbox import bulk
from salesforce_sandbox.server import SandboxServer


def raw_response_head(sandbox: SandboxServer, path: str, *extra_headers: str) -> list[str]:
    """The status line and header lines exactly as sent, read off a plain TLS socket."""
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    with socket.create_connection(("127.0.0.1", sandbox.port)) as plain, \
            context.wrap_socket(plain, server_hostname="localhost") as tls:
        lines = [
            f"GET {path} HTTP/1.1", "Host: localhost",
            f"Authorization: Bearer {sandbox.credentials['session_id']}", "Connection: close", *extra_headers,
        ]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")


def header_names(head: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in head[1:]]


def test_rest_answers_carry_salesforce_header_casing(sandbox: SandboxServer):
    names = header_names(raw_response_head(sandbox, "/services/data/v59.0/limits"))
    assert "Sforce-Limit-Info" in names
    assert "Content-Type" in names and "Date" in names
    assert all(name[0].isupper() for name in names), names


def test_bulk_results_headers_as_salesforce_writes_them(sandbox: SandboxServer, completed_query_job):
    job = completed_query_job("SELECT Id FROM Account")
    head = raw_response_head(sandbox, f"/services/data/v59.0/jobs/query/{job['id']}/results?maxRecords=5")
    assert head[0] == "HTTP/1.1 200 OK"
    names = header_names(head)
    assert "Sforce-Locator" in names
    assert "Sforce-NumberOfRecords" in names
    assert "Sforce-Limit-Info" in names


def test_bulk_results_are_gzip_compressed_when_asked(sandbox: SandboxServer, completed_query_job, http):
    job = completed_query_job("SELECT Id, Name FROM Account")
    url = f"{sandbox.url}/services/data/v59.0/jobs/query/{job['id']}/results"
    auth = {"Authorization": f"Bearer {sandbox.credentials['session_id']}"}
    compressed = http.get(url, headers=auth | {"Accept-Encoding": "gzip"}, stream=True)
    assert compressed.headers["Content-Encoding"] == "gzip"
    raw = compressed.raw.read(decode_content=False)
    plain = http.get(url, headers=auth | {"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(raw) == plain.content
    assert len(raw) < len(plain.content)
    assert plain.text.splitlines()[0] == '"Id","Name"'


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_request_bodies_are_decompressed(api, coding: str):
    """Salesforce decompresses a request with Content-Encoding gzip or deflate before processing it."""
    compress = gzip.compress if coding == "gzip" else zlib.compress
    headers = {"Content-Type": "application/json", "Content-Encoding": coding}
    created = api("POST", "sobjects/Account/", data=compress(json.dumps({"Name": f"Compressed {coding}"}).encode()),
                  headers=headers)
    assert created.status_code == 201, created.text
    assert api("GET", f"sobjects/Account/{created.json()['id']}").json()["Name"] == f"Compressed {coding}"


def test_compressed_bulk_upload_is_decompressed(api, poll_until):
    job = api("POST", "jobs/ingest", json={"operation": "insert", "object": "Account"}).json()
    upload = api("PUT", f"jobs/ingest/{job['id']}/batches", data=gzip.compress(b"Name\nGzipped upload\n"),
                 headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})
    assert upload.status_code == 201
    api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    info = poll_until(lambda: api("GET", f"jobs/ingest/{job['id']}").json(),
                      lambda i: i["state"] == "JobComplete", "ingest job completing")
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (1, 0)


def test_a_body_that_is_not_what_its_content_encoding_says_is_refused(api):
    response = api("POST", "sobjects/Account/", data=b'{"Name": "plain"}',
                   headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert response.json()[0]["errorCode"] == "JSON_PARSER_ERROR"


def test_ingest_result_files_are_gzip_compressed_when_asked(sandbox: SandboxServer, api, http, poll_until):
    job = api("POST", "jobs/ingest", json={"operation": "insert", "object": "Account"}).json()
    api("PUT", f"jobs/ingest/{job['id']}/batches", data=b"Name\nGzip results\n", headers={"Content-Type": "text/csv"})
    api("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
    poll_until(lambda: api("GET", f"jobs/ingest/{job['id']}").json(), lambda i: i["state"] == "JobComplete", "ingest")
    url = f"{sandbox.url}/services/data/v59.0/jobs/ingest/{job['id']}/successfulResults/"
    auth = {"Authorization": f"Bearer {sandbox.credentials['session_id']}"}
    compressed = http.get(url, headers=auth | {"Accept-Encoding": "gzip"}, stream=True)
    assert compressed.headers["Content-Encoding"] == "gzip"
    plain = http.get(url, headers=auth | {"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain.headers
    assert gzip.decompress(compressed.raw.read(decode_content=False)) == plain.content
    assert plain.text.splitlines()[0] == '"sf__Id","sf__Created","Name"'


def test_result_pages_list_parallel_result_urls(sandbox: SandboxServer, completed_query_job, api):
    job = completed_query_job("SELECT Id FROM Account ORDER BY Id")
    total = job["numberRecordsProcessed"]
    assert total > 12  # pages of 2 below: more than one answer of five URLs
    urls, ids = [], []
    next_url = f"jobs/query/{job['id']}/resultPages?maxRecords=2"
    while next_url:
        answer = api("GET", next_url).json()
        assert len(answer["resultPages"]) <= 5
        urls += [page["resultUrl"] for page in answer["resultPages"]]
        assert answer["done"] is (answer["nextRecordsUrl"] is None)
        next_url = answer["nextRecordsUrl"] and answer["nextRecordsUrl"].split("/v59.0/", 1)[1]
    assert len(urls) == (total + 1) // 2
    for url in urls:  # each URL is one page, fetched on its own
        page = api("GET", url.split("/v59.0/", 1)[1])
        rows = page.text.splitlines()
        assert rows[0] == '"Id"'
        assert int(page.headers["Sforce-NumberOfRecords"]) == len(rows) - 1
        ids += [row.strip('"') for row in rows[1:]]
    assert len(ids) == total == len(set(ids))
    assert ids == sorted(ids)


def test_result_pages_before_completion_are_refused(api, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(bulk, "MIN_PROCESSING_SECONDS", 30.0)  # a job that is surely still running
    job = api("POST", "jobs/query", json={"operation": "query", "query": "SELECT Id FROM OrderItem"}).json()
    answer = api("GET", f"jobs/query/{job['id']}/resultPages")
    assert answer.status_code == 412
    assert answer.json()[0]["errorCode"] == "JOB_NOT_COMPLETE"


@pytest.mark.parametrize("version", ["57.0", "52.0"])
def test_result_pages_do_not_exist_before_api_version_58(completed_query_job, api, version: str):
    job = completed_query_job("SELECT Id FROM Account")

    answer = api("GET", f"jobs/query/{job['id']}/resultPages", version=version)

    assert answer.status_code == 404
    assert answer.json()[0]["errorCode"] == "NOT_FOUND"
    assert api("GET", f"jobs/query/{job['id']}/resultPages", version="58.0").status_code == 200
    assert api("GET", f"jobs/query/{job['id']}/results", version=version).status_code == 200  # the locator way is there
