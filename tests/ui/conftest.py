"""The External Orders view against a real Airflow: a sandbox org, one import, an api-server, a browser.

One module-scoped stack serves every browser test (starting it is the slow part): the sandbox org
(two orders' write-backs made to fail), the warehouse filled by one ``dag.test()`` run of the import
DAG, and ``airflow api-server`` in a subprocess on the tests' metadata DB, with the simple auth
manager and two users: ``oncall`` (role USER: may trigger DAGs) and ``analyst`` (role VIEWER).
The browser is Playwright driving the system's Chromium (``make test`` installs it).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ORG_ORDERS = 120
ORG_SEED = 11
FAILING_ORDERS = 3  # orders whose write-back the sandbox rejects, so the page has red marks
REJECTION = ("FIELD_CUSTOM_VALIDATION_EXCEPTION", "PO Number is required before an order can be marked Imported")
USERS = {"oncall": "user", "analyst": "viewer"}
# A safety net for an api-server that never starts, far beyond what a slow, busy machine takes.
API_SERVER_START_SECONDS = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class AirflowStack:
    """The running stack, and ways to look behind the page."""

    base_url: str
    warehouse: sa.Engine
    passwords: dict[str, str]
    failing_order_numbers: set[str]
    org: Any
    log_path: Path
    screenshot_dir: Path
    started: datetime  # runs after this were created by the tests
    _tokens: dict[str, str] = field(default_factory=dict)

    def token(self, user: str) -> str:
        if user not in self._tokens:
            response = requests.post(
                f"{self.base_url}/auth/token", json={"username": user, "password": self.passwords[user]}, timeout=30
            )
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        return self._tokens[user]

    def api(self, method: str, path: str, user: str = "oncall", **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token(user)}"}
        return requests.request(method, f"{self.base_url}/api/v2{path}", headers=headers, timeout=30, **kwargs)

    def dag_runs(self) -> dict[str, dict]:
        """The import DAG's runs created since the stack started (the metadata DB is shared with other tests)."""
        params = {"limit": 100, "run_after_gte": self.started.isoformat()}
        response = self.api("GET", "/dags/salesforce_orders_import/dagRuns", params=params)
        response.raise_for_status()
        return {run["dag_run_id"]: run for run in response.json()["dag_runs"]}

    def query(self, sql: str, **params: Any) -> list[dict]:
        with self.warehouse.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def browser_context(self, browser: Any, user: str | None) -> Any:
        """A fresh browser session, signed in as ``user`` (Airflow's session cookie), or anonymous."""
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        if user:
            context.add_cookies([{"name": "_token", "value": self.token(user), "url": self.base_url}])
        return context


def _wait_for_api_server(process: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + API_SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow api-server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/api/v2/monitor/health", timeout=30).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        time.sleep(0.5)
    raise RuntimeError(f"airflow api-server did not answer within {API_SERVER_START_SECONDS} s:\n{log_path.read_text()[-4000:]}")


def _choose_failing_orders(org: Any) -> dict[str, str]:
    """A few recent Activated orders (id -> OrderNumber) whose write-back the sandbox will reject."""
    with org.store.lock:
        rows = org.store.conn.execute(
            'SELECT Id, OrderNumber FROM "Order" WHERE StatusCode = \'Activated\' AND IsDeleted = 0 '
            "ORDER BY ActivatedDate DESC LIMIT ?",
            (FAILING_ORDERS,),
        ).fetchall()
    return {row[0]: row[1] for row in rows}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowStack]:
    from salesforce_orders.warehouse import create_sqlite_engine
    from salesforce_orders_local.airflow_env import (
        configure,
        connection_env,
        run_dag,
        sqlite_warehouse_connection,
    )
    from salesforce_sandbox.server import SandboxServer

    work = tmp_path_factory.mktemp("ui")
    configure(Path(os.environ["AIRFLOW_HOME"]))
    org = SandboxServer(port=0, orders=ORG_ORDERS, seed=ORG_SEED, state_dir=work / "sandbox").start()
    failing = _choose_failing_orders(org)
    org.admin.set_faults(fail_rows={order_id: list(REJECTION) for order_id in failing})

    warehouse_path = work / "warehouse.db"
    env = {
        **connection_env("salesforce_default", org.airflow_connection()),
        **connection_env("orders_warehouse", sqlite_warehouse_connection(warehouse_path)),
        "AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG": json.dumps({}),
    }
    process = None
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        try:
            dag_run = run_dag()
            assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"

            passwords = {user: secrets.token_urlsafe(12) for user in USERS}
            passwords_file = work / "passwords.json"
            passwords_file.write_text(json.dumps(passwords))
            port = _free_port()
            base_url = f"http://127.0.0.1:{port}"
            server_env = {
                **os.environ,
                "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{role}" for u, role in USERS.items()),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__BASE_URL": base_url,
                "AIRFLOW__API__WORKERS": "1",
            }
            log_path = work / "api-server.log"
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    env=server_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            _wait_for_api_server(process, base_url, log_path)
            screenshots = Path(os.environ.get("UI_SCREENSHOT_DIR") or work / "screenshots")
            screenshots.mkdir(parents=True, exist_ok=True)
            stack = AirflowStack(
                base_url=base_url,
                warehouse=create_sqlite_engine(str(warehouse_path)),
                passwords=passwords,
                failing_order_numbers=set(failing.values()),
                org=org,
                log_path=log_path,
                screenshot_dir=screenshots,
                started=datetime.now(UTC),
            )
            yield stack
            # The runs the tests queued (no scheduler runs them) leave the shared metadata DB again.
            for run_id in stack.dag_runs():
                stack.api("DELETE", f"/dags/salesforce_orders_import/dagRuns/{run_id}")
            stack.warehouse.dispose()
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            org.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
