"""One sandbox server for the API tests, and clients wired to it the way real code reaches it.

The server runs for the whole session (``orders=200``); faults are cleared after each test.
Tests that change data in ways others could notice create their own records.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

from salesforce_sandbox.server import SandboxServer

SANDBOX_ORDERS = 200
POLL_DEADLINE_SECONDS = 300.0  # a safety net far beyond what a slow machine takes


def _poll_until(read: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    """Call ``read`` until ``done(value)``, with a generous deadline; returns the last value."""
    deadline = time.monotonic() + POLL_DEADLINE_SECONDS
    while not done(value := read()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {POLL_DEADLINE_SECONDS:.0f} s; last: {value!r}")
        time.sleep(0.02)
    return value




class RewriteToSandbox(HTTPAdapter):
    """Send requests for ``*.salesforce.com`` (the client's hard-coded login hosts) to the sandbox."""

    def __init__(self, sandbox_url: str):
        super().__init__()
        self._target = urlsplit(sandbox_url)

    def send(self, request, **kwargs):  # type: ignore[override]
        parts = urlsplit(request.url)
        if parts.hostname and parts.hostname.endswith(".salesforce.com"):
            request.url = urlunsplit((self._target.scheme, self._target.netloc, parts.path, parts.query, ""))
        return super().send(request, **kwargs)


def sandbox_session(server: SandboxServer) -> requests.Session:
    """A requests session that trusts the sandbox certificate and reaches it for login hosts."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE must not override verify
    session.verify = str(server.ca_path)
    session.mount("https://", RewriteToSandbox(server.url))
    return session


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    server = SandboxServer(
        port=0, orders=SANDBOX_ORDERS, state_dir=tmp_path_factory.mktemp("sandbox-state"), proxy_port=0
    )
    with server:
        yield server


@pytest.fixture(autouse=True)
def _clear_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").runtime.clear_faults()


@pytest.fixture
def http(sandbox: SandboxServer) -> requests.Session:
    return sandbox_session(sandbox)


@pytest.fixture
def sf(sandbox: SandboxServer, http: requests.Session) -> Salesforce:
    """simple-salesforce in direct mode with the sandbox's fixed session id."""
    return Salesforce(session_id=sandbox.credentials["session_id"], instance_url=sandbox.url, session=http)


@pytest.fixture
def sf_soap(sandbox: SandboxServer, http: requests.Session) -> Salesforce:
    """simple-salesforce logged in with username, password and security token (SOAP login)."""
    creds = sandbox.credentials
    return Salesforce(
        username=creds["username"],
        password=creds["password"],
        security_token=creds["security_token"],
        session=http,
    )


@pytest.fixture
def api(sandbox: SandboxServer, http: requests.Session) -> Callable[..., requests.Response]:
    """Raw REST calls: ``api("GET", "query", params=...)`` with the fixed session id."""

    def call(method: str, path: str, *, version: str = "59.0", **kwargs) -> requests.Response:
        headers = {
            "Authorization": f"Bearer {sandbox.credentials['session_id']}",
            **kwargs.pop("headers", {}),
        }
        return http.request(
            method, f"{sandbox.url}/services/data/v{version}/{path}", headers=headers, **kwargs
        )

    return call


@pytest.fixture
def make_order(sf: Salesforce) -> Callable[..., str]:
    """Create a Draft order with ``items`` order products through the API; ``activate`` it after."""

    def make(items: int = 1, activate: bool = False) -> str:
        entry = sf.query("SELECT Id, Pricebook2Id, UnitPrice FROM PricebookEntry LIMIT 1")["records"][0]
        account_id = sf.query("SELECT Id FROM Account LIMIT 1")["records"][0]["Id"]
        order_id = sf.Order.create(
            {
                "AccountId": account_id,
                "Status": "Draft",
                "EffectiveDate": "2026-01-15",
                "Pricebook2Id": entry["Pricebook2Id"],
            }
        )["id"]
        item = {
            "attributes": {"type": "OrderItem"},
            "OrderId": order_id,
            "PricebookEntryId": entry["Id"],
            "Quantity": 1,
            "UnitPrice": entry["UnitPrice"],
        }
        for start in range(0, items, 200):
            chunk = [item] * min(200, items - start)
            results = sf.restful(
                "composite/sobjects", method="POST", json={"allOrNone": True, "records": chunk}
            )
            assert all(r["success"] for r in results), results
        if activate:
            sf.Order.update(order_id, {"Status": "Activated"})
        return order_id

    return make


@pytest.fixture
def completed_query_job(api: Callable[..., requests.Response]) -> Callable[[str], dict]:
    """Run a Bulk 2.0 query job for a SOQL query; returns its info once it is JobComplete."""

    def run(soql: str) -> dict:
        job = api("POST", "jobs/query", json={"operation": "query", "query": soql}).json()
        return _poll_until(
            lambda: api("GET", f"jobs/query/{job['id']}").json(),
            lambda info: info["state"] == "JobComplete",
            f"query job {job['id']} completing",
        )

    return run


@pytest.fixture
def poll_until() -> Callable[..., Any]:
    """``poll_until(read, done, what)``: call ``read`` until ``done(value)``, with a generous deadline."""
    return _poll_until
