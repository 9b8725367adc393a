"""The common open-source Salesforce clients, unchanged, against the sandbox: Singer's
tap-salesforce, Airbyte's source-salesforce and jsforce (Node).

Each is run as a user runs it, configured only with the printed credentials (client id and
secret, refresh token, or username and password) and the recipe's environment
(:meth:`SandboxServer.client_environment`: ``HTTPS_PROXY`` to the sandbox's proxy and the sandbox
certificate to trust). They log in at the ``login.salesforce.com`` they hard-code. The clients
are installed on first use under ``.local/clients/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from simple_salesforce import Salesforce

from salesforce_sandbox.server import SandboxServer

JS_DIR = Path(__file__).with_name("js")
START_DATE = "2020-01-01T00:00:00Z"


# -- installing and running the clients ------------------------------------------------------
# Each client is pinned and installed once under the worktree's .local/clients/ (Python clients
# into a virtualenv of their own with uv, jsforce with npm); later runs reuse the installation.
# A client that cannot be installed fails its tests with the installer's message.

REPO = Path(__file__).resolve().parents[2]
CLIENTS_DIR = REPO / ".local" / "clients"
INSTALL_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 600

TAP_SALESFORCE = "tap-salesforce==2.8.1"
AIRBYTE_SOURCE_SALESFORCE = "airbyte-source-salesforce==2.10.3"
JSFORCE = "jsforce@3.10.16"


def _install(target: Path, requirement: str, commands: list[list[str]]) -> Path:
    marker = target / ".installed"
    if marker.is_file() and marker.read_text() == requirement:
        return target
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_SECONDS, check=False)
        if done.returncode != 0:
            pytest.fail(f"installing {requirement} failed ({' '.join(command)}):\n{done.stdout}\n{done.stderr}")
    marker.write_text(requirement)
    return target


def python_client(name: str, requirement: str) -> Path:
    """The virtualenv holding ``requirement``; returns its ``bin`` directory."""
    target = CLIENTS_DIR / name
    uv = Path(sys.executable).with_name("uv")
    python = target / "bin" / "python"
    if uv.is_file():
        commands = [
            [str(uv), "venv", "--quiet", "--python", sys.executable, str(target)],
            [str(uv), "pip", "install", "--quiet", "--python", str(python), requirement],
        ]
    else:
        commands = [
            [sys.executable, "-m", "venv", str(target)],
            [str(python), "-m", "pip", "install", "--quiet", requirement],
        ]
    return _install(target, requirement, commands) / "bin"


def node_client(name: str, package: str) -> Path:
    """A directory whose ``node_modules`` holds ``package``."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"installing {package} needs npm (Node.js 20), which is not on PATH")
    target = CLIENTS_DIR / name
    command = [npm, "install", "--prefix", str(target), "--no-audit", "--no-fund", "--loglevel=error", package]
    return _install(target, package, [command])


def run_client(command: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a client with the sandbox recipe's environment; a failure shows what the client said."""
    done = subprocess.run(
        command, env=os.environ | env, cwd=cwd, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"{command[0]} exited {done.returncode}:\n{done.stdout[-5000:]}\n{done.stderr[-5000:]}")
    return done


def json_lines(text: str) -> list[dict[str, Any]]:
    """The JSON messages of a Singer tap or an Airbyte source (their other lines are logs)."""
    messages = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                messages.append(json.loads(line))
            except ValueError:
                continue
    return messages


def _ids(sf: Salesforce, soql: str) -> set[str]:
    return {record["Id"] for record in sf.query_all_iter(soql, include_deleted=True)}


def _touch_account(sf: Salesforce, note: str) -> str:
    """Change the account changed longest ago (its SystemModstamp moves); returns its id."""
    account_id = _oldest_account(sf)
    sf.Account.update(account_id, {"Description": note})
    return account_id


def _oldest_account(sf: Salesforce) -> str:
    return sf.query("SELECT Id FROM Account ORDER BY SystemModstamp LIMIT 1")["records"][0]["Id"]


# -- Singer: tap-salesforce ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tap_salesforce() -> Path:
    return python_client("tap-salesforce", TAP_SALESFORCE) / "tap-salesforce"


class Tap:
    """tap-salesforce with a config file, the way Singer runs it (``--discover``, ``--properties``)."""

    def __init__(self, executable: Path, sandbox: SandboxServer, workdir: Path, api_type: str):
        creds = sandbox.credentials
        self.executable, self.workdir, self.env = executable, workdir, sandbox.client_environment()
        self.config = workdir / "config.json"
        self.config.write_text(json.dumps({
            "client_id": creds["consumer_key"], "client_secret": creds["consumer_secret"],
            "refresh_token": creds["refresh_token"], "start_date": START_DATE, "api_type": api_type,
            "select_fields_by_default": True, "is_sandbox": False,
        }))

    def discover(self) -> dict:
        done = run_client([str(self.executable), "--config", str(self.config), "--discover"], self.env)
        return json.loads(done.stdout)

    def sync(self, catalog: dict, state: dict | None = None) -> list[dict]:
        properties = self.workdir / "properties.json"
        properties.write_text(json.dumps(catalog))
        command = [str(self.executable), "--config", str(self.config), "--properties", str(properties)]
        if state is not None:
            state_file = self.workdir / "state.json"
            state_file.write_text(json.dumps(state))
            command += ["--state", str(state_file)]
        return json_lines(run_client(command, self.env).stdout)


def _select(catalog: dict, incremental: str, full: str) -> dict:
    """Select ``incremental`` by SystemModstamp and ``full`` as a full table."""
    for stream in catalog["streams"]:
        top = next(m for m in stream["metadata"] if m["breadcrumb"] == [])["metadata"]
        if stream["stream"] == incremental:
            top.update({"selected": True, "replication-method": "INCREMENTAL", "replication-key": "SystemModstamp"})
        elif stream["stream"] == full:
            top.update({"selected": True, "replication-method": "FULL_TABLE"})
    return catalog


def _records(messages: list[dict], stream: str) -> list[dict]:
    return [m["record"] for m in messages if m["type"] == "RECORD" and m["stream"] == stream]


def _last_state(messages: list[dict]) -> dict:
    return [m for m in messages if m["type"] == "STATE"][-1]["value"]


def test_tap_salesforce_discovers_the_org(tap_salesforce: Path, sandbox: SandboxServer, tmp_path: Path):
    catalog = Tap(tap_salesforce, sandbox, tmp_path, "BULK").discover()
    streams = {stream["stream"]: stream for stream in catalog["streams"]}
    assert {"Account", "Order", "OrderItem", "Product2", "PricebookEntry"} <= set(streams)
    order = streams["Order"]
    assert {"Id", "Status", "TotalAmount", "SystemModstamp"} <= set(order["schema"]["properties"])
    top = next(m for m in order["metadata"] if m["breadcrumb"] == [])["metadata"]
    assert top["valid-replication-keys"] == ["SystemModstamp"]
    assert top["table-key-properties"] == ["Id"]


@pytest.mark.parametrize("api_type", ["BULK", "REST"])
def test_tap_salesforce_full_and_incremental_sync(
    tap_salesforce: Path, sandbox: SandboxServer, sf: Salesforce, tmp_path: Path, api_type: str
):
    tap = Tap(tap_salesforce, sandbox, tmp_path, api_type)
    catalog = _select(tap.discover(), incremental="Account", full="Order")
    before = sandbox.runtime.stats()["calls"]

    first = tap.sync(catalog)
    calls = sandbox.runtime.stats()["calls"]
    if api_type == "BULK":  # Bulk API 1.0 jobs, not REST queries
        assert calls["bulk_v1"] > before["bulk_v1"] and calls["query"] == before["query"]
    else:
        assert calls["query"] > before["query"] and calls["bulk_v1"] == before["bulk_v1"]
    assert {r["Id"] for r in _records(first, "Order")} == _ids(sf, "SELECT Id FROM Order")
    accounts = _records(first, "Account")
    assert {r["Id"] for r in accounts} == _ids(sf, "SELECT Id FROM Account")
    assert all(r["Name"] for r in accounts)
    state = _last_state(first)
    assert state["bookmarks"]["Account"]["SystemModstamp"]

    changed = _touch_account(sf, f"changed for the {api_type} incremental sync")
    second = tap.sync(catalog, state)
    again = {r["Id"] for r in _records(second, "Account")}
    assert changed in again
    assert len(again) < len(accounts)  # only what changed since the bookmark (which it includes)
    assert _oldest_account(sf) not in again


# -- Airbyte: source-salesforce --------------------------------------------------------------


@pytest.fixture(scope="module")
def airbyte_bin() -> Path:
    return python_client("airbyte-source-salesforce", AIRBYTE_SOURCE_SALESFORCE)


class AirbyteSource:
    """source-salesforce through the Airbyte protocol commands (spec/check/discover/read)."""

    # The connector's own entry point, with every stream read over REST: the sandbox's objects have
    # no compound or base64 fields, so the connector would choose Bulk API 2.0 for all of them.
    REST_ENTRY = (
        "import sys, source_salesforce.source as s;"
        "s.SourceSalesforce._get_api_type = classmethod(lambda cls, *args: 'rest');"
        "from source_salesforce.run import run; sys.argv[0] = 'source-salesforce'; run()"
    )

    def __init__(self, bin_dir: Path, sandbox: SandboxServer, workdir: Path, rest: bool = False):
        creds = sandbox.credentials
        self.bin_dir, self.workdir, self.env, self.rest = bin_dir, workdir, sandbox.client_environment(), rest
        self.config = workdir / "config.json"
        self.config.write_text(json.dumps({
            "client_id": creds["consumer_key"], "client_secret": creds["consumer_secret"],
            "refresh_token": creds["refresh_token"], "start_date": START_DATE, "is_sandbox": False,
            "stream_slice_step": "P3650D",  # one date slice per stream keeps the test short
        }))

    def run(self, *args: str) -> list[dict[str, Any]]:
        if self.rest:
            command = [str(self.bin_dir / "python"), "-c", self.REST_ENTRY, *args]
        else:
            command = [str(self.bin_dir / "source-salesforce"), *args]
        messages = json_lines(run_client(command, self.env, cwd=self.workdir).stdout)
        errors = [m for m in messages if m["type"] == "TRACE" and m["trace"]["type"] == "ERROR"]
        assert not errors, errors
        return messages

    def read(self, catalog: dict, state: list | None = None) -> list[dict[str, Any]]:
        (self.workdir / "catalog.json").write_text(json.dumps(catalog))
        args = ["read", "--config", str(self.config), "--catalog", str(self.workdir / "catalog.json")]
        if state is not None:
            (self.workdir / "state.json").write_text(json.dumps(state))
            args += ["--state", str(self.workdir / "state.json")]
        return self.run(*args)


def _configured(streams: dict[str, dict], incremental: str, full: str) -> dict:
    return {"streams": [
        {"stream": streams[incremental], "sync_mode": "incremental", "destination_sync_mode": "append",
         "cursor_field": ["SystemModstamp"]},
        {"stream": streams[full], "sync_mode": "full_refresh", "destination_sync_mode": "overwrite"},
    ]}


def _airbyte_records(messages: list[dict], stream: str) -> list[dict]:
    return [m["record"]["data"] for m in messages if m["type"] == "RECORD" and m["record"]["stream"] == stream]


def _airbyte_state(messages: list[dict], stream: str) -> list[dict]:
    states = [m["state"] for m in messages if m["type"] == "STATE"
              and m["state"].get("stream", {}).get("stream_descriptor", {}).get("name") == stream]
    return [states[-1]]


@pytest.fixture(scope="module")
def airbyte_streams(airbyte_bin: Path, sandbox: SandboxServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Discover (it logs in first, as ``check`` does): the catalog's streams by name."""
    source = AirbyteSource(airbyte_bin, sandbox, tmp_path_factory.mktemp("airbyte-discover"))
    catalog = [m for m in source.run("discover", "--config", str(source.config)) if m["type"] == "CATALOG"]
    return {stream["name"]: stream for stream in catalog[0]["catalog"]["streams"]}


def test_airbyte_discovers_the_org(airbyte_streams: dict):
    assert {"Account", "Order", "OrderItem", "Product2", "PricebookEntry"} <= set(airbyte_streams)
    order = airbyte_streams["Order"]
    assert order["supported_sync_modes"] == ["full_refresh", "incremental"]
    assert order["default_cursor_field"] == ["SystemModstamp"]
    assert {"Id", "Status", "TotalAmount"} <= set(order["json_schema"]["properties"])


@pytest.mark.parametrize("api", ["bulk", "rest"])
def test_airbyte_full_and_incremental_read(
    airbyte_bin: Path, airbyte_streams: dict, sandbox: SandboxServer, sf: Salesforce, tmp_path: Path, api: str
):
    source = AirbyteSource(airbyte_bin, sandbox, tmp_path, rest=api == "rest")
    catalog = _configured(airbyte_streams, incremental="Account", full="Order")
    before = sandbox.runtime.stats()["calls"]

    first = source.read(catalog)
    calls = sandbox.runtime.stats()["calls"]
    if api == "bulk":  # Bulk API 2.0 query jobs; their results read by Sforce-Locator, gzip-compressed
        assert calls["bulk_query"] > before["bulk_query"] and calls["query"] == before["query"]
    else:
        assert calls["query"] > before["query"] and calls["bulk_query"] == before["bulk_query"]
    assert {r["Id"] for r in _airbyte_records(first, "Order")} == _ids(sf, "SELECT Id FROM Order")
    accounts = _airbyte_records(first, "Account")
    assert {r["Id"] for r in accounts} == _ids(sf, "SELECT Id FROM Account")

    changed = _touch_account(sf, f"changed for the Airbyte {api} incremental read")
    second = source.read(catalog, _airbyte_state(first, "Account"))
    again = {r["Id"] for r in _airbyte_records(second, "Account")}
    assert changed in again
    assert _oldest_account(sf) not in again
    assert len(again) < len(accounts)


# -- jsforce (Node) --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def jsforce_dir() -> Path:
    return node_client("jsforce", JSFORCE)


def test_jsforce_logs_in_discovers_and_syncs_over_rest_and_bulk(
    jsforce_dir: Path, sandbox: SandboxServer, sf: Salesforce, make_order: Callable[..., str]
):
    for _ in range(3):  # more orders than one 200-record page holds
        make_order()
    creds = sandbox.credentials
    since = sf.query("SELECT SystemModstamp FROM Account ORDER BY SystemModstamp DESC LIMIT 1")["records"][0]
    changed = _touch_account(sf, "changed for the jsforce incremental query")
    sync_input = {
        "clientId": creds["consumer_key"], "clientSecret": creds["consumer_secret"],
        "refreshToken": creds["refresh_token"], "username": creds["username"],
        "password": creds["password"] + creds["security_token"],
        "since": since["SystemModstamp"].replace(".000+0000", "Z"),
    }
    env = sandbox.client_environment() | {
        "NODE_PATH": str(jsforce_dir / "node_modules"), "SYNC_INPUT": json.dumps(sync_input),
    }
    done = run_client(["node", str(JS_DIR / "jsforce_sync.js")], env)
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert seen["instanceUrl"] == sandbox.url
    assert seen["identity"] == creds["username"]
    assert seen["soapUserId"] == sandbox.store.integration_user_id
    assert {"Account", "Order", "OrderItem"} <= set(seen["objects"])
    assert {"Id", "Status", "SystemModstamp"} <= set(seen["orderFields"])
    live_orders = _live_ids(sf, "Order")
    assert len(live_orders) > 200
    assert set(seen["restOrderIds"]) == live_orders and len(seen["restOrderIds"]) == len(live_orders)
    assert seen["changedAccountIds"] == [changed]
    assert set(seen["bulk1AccountIds"]) <= _live_ids(sf, "Account")
    assert set(seen["bulk2OrderIds"]) == live_orders
    assert [r["success"] for r in seen["bulk1Inserted"]] == [True, True]
    assert len(seen["bulk2Inserted"]) == 1
    assert seen["retrievedNames"] == ["jsforce bulk1 one", "jsforce bulk1 two", "jsforce bulk2 one"]


def _live_ids(sf: Salesforce, sobject: str) -> set[str]:
    return {r["Id"] for r in sf.query_all_iter(f"SELECT Id FROM {sobject}")}  # noqa: S608 - a fixed object name


def test_recipe_environment_names_only_the_proxy_and_the_certificate(sandbox: SandboxServer):
    env = sandbox.client_environment()
    assert set(env) == {"HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "REQUESTS_CA_BUNDLE",
                        "NODE_EXTRA_CA_CERTS"}
    assert env["HTTPS_PROXY"] == sandbox.proxy_url and os.path.isfile(env["REQUESTS_CA_BUNDLE"])
