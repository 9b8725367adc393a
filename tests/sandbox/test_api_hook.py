"""The Airflow provider's SalesforceHook, unchanged, against the sandbox.

The connection is the one the sandbox prints (``AIRFLOW_CONN_...`` JSON); the provider ignores
the extras it does not know (``login_url``, ``ca_bundle``), so the test hands it a session that
reaches the sandbox for the hard-coded login host.
"""

from __future__ import annotations

import json

import pytest
import requests
from airflow.providers.salesforce.hooks.salesforce import SalesforceHook

from salesforce_sandbox.server import SandboxServer

CONN_ID = "salesforce_sandbox_test"


@pytest.fixture
def hook(sandbox: SandboxServer, http: requests.Session, monkeypatch: pytest.MonkeyPatch) -> SalesforceHook:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", sandbox.airflow_connection_json())
    return SalesforceHook(salesforce_conn_id=CONN_ID, session=http)


def test_make_query_logs_in_and_reads_every_page(sandbox: SandboxServer, hook: SalesforceHook):
    result = hook.make_query("SELECT Id, OrderItemNumber FROM OrderItem")
    assert hook.get_conn().auth_type == "password"  # SOAP login with the security token
    assert result["done"] is True
    assert result["totalSize"] == len(result["records"]) == sandbox.store.count("OrderItem")


def test_describe_object_and_available_fields(hook: SalesforceHook):
    assert hook.describe_object("Order")["name"] == "Order"
    fields = hook.get_available_fields("Order")
    assert {"Id", "Status", "OrderNumber", "SystemModstamp"} <= set(fields)


def test_get_object_from_salesforce(sandbox: SandboxServer, hook: SalesforceHook):
    result = hook.get_object_from_salesforce("Account", ["Id", "Name"])
    assert result["totalSize"] == sandbox.store.count("Account")
    assert set(result["records"][0]) == {"attributes", "Id", "Name"}


def test_direct_session_through_the_hook(sandbox: SandboxServer, http: requests.Session, monkeypatch):
    # The provider prefers username/password/token when the connection has them, so direct
    # mode needs a connection with only the instance URL.
    connection = {"conn_type": "salesforce", "extra": {"instance_url": sandbox.url}}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
    hook = SalesforceHook(salesforce_conn_id=CONN_ID, session_id=sandbox.credentials["session_id"], session=http)
    assert hook.get_conn().auth_type == "direct"
    assert hook.make_query("SELECT Id FROM Order LIMIT 3")["totalSize"] == 3
