"""A real Airflow started by the tests: ``airflow scheduler`` with the LocalExecutor, ``airflow
dag-processor`` and ``airflow api-server`` (and ``airflow triggerer`` when a module's ``STACK`` asks
for it) on a PostgreSQL metadata DB of their own, the sandbox org and a PostgreSQL warehouse.

A test module sets ``STACK``: ``orders``, ``seed``, ``schedule``, ``config`` (the Variable),
``components`` (beyond api-server, dag-processor and scheduler) and ``env`` (Airflow settings). Runs are created the ways users create them (the scheduler, the REST
API, ``airflow backfill create``, clearing a task) and the tests wait for their states, never for
time to pass.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from salesforce_orders_local import local_airflow
from salesforce_orders_local.local_airflow import (
    Component,
    ComponentFailed,
    airflow_command,
    api_server_command,
    free_port,
    local_airflow_env,
    migrate_metadata_database,
    throwaway_database,
)

DAG_ID = "salesforce_orders_import"
# Safety nets for a deployment that hangs, far beyond what a slow machine takes: the tests wait
# for states (a run finished, the DAG parsed), not for time.
START_TIMEOUT_SECONDS = 300
RUN_TIMEOUT_SECONDS = 900
FINISHED = {"success", "failed"}


@dataclass
class Deployment:
    """Airflow's components as separate processes, and the REST API to drive them."""

    home: Path
    env: dict[str, str]
    base_url: str
    components: dict[str, Component] = field(default_factory=dict)

    def start(self, *names: str) -> None:
        port = int(self.base_url.rsplit(":", 1)[1])
        for name in names:
            command = api_server_command("127.0.0.1", port) if name == "api-server" else airflow_command(name)
            self.components[name] = Component(name, command, self.env, self.home / f"{name}.log")
            self.components[name].launch()
        self.wait_until(lambda: local_airflow.api_answers(self.base_url), "the api-server answers", START_TIMEOUT_SECONDS)

    def stop(self) -> None:
        local_airflow.stop(self.components.values(), timeout=60)

    def logs(self) -> str:
        return local_airflow.logs(self.components.values(), chars=3000)

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = RUN_TIMEOUT_SECONDS) -> Any:
        """Poll ``condition`` until it gives something truthy; fail naming ``what`` if a component
        died or the safety net runs out."""
        try:
            return local_airflow.wait_until(condition, what, timeout, self.components.values())
        except ComponentFailed as exc:
            pytest.fail(str(exc))

    # -- the REST API ------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = requests.request(method, f"{self.base_url}/api/v2{path}", timeout=120, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    def dag_runs(self) -> list[dict]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100, "order_by": "run_after"})["dag_runs"]

    def run_state(self, run_id: str) -> str:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")["state"]

    def wait_for_run(self, run_id: str) -> str:
        state = self.wait_until(lambda: (s := self.run_state(run_id)) in FINISHED and s, f"run {run_id} to finish")
        return state

    def task_instances(self, run_id: str = "~") -> list[dict]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]

    def cli(self, *args: str) -> str:
        done = subprocess.run(airflow_command(*args), env=self.env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"airflow {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@dataclass
class Stack:
    airflow: Deployment
    org: Any
    warehouse: sa.Engine
    schema: str

    def query(self, sql: str, **params: Any) -> list[dict]:
        with self.warehouse.connect() as conn:
            conn.execute(sa.text(f'SET search_path TO "{self.schema}"'))
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def org_rows(self, sql: str, *params: Any) -> list[dict]:
        with self.org.store.lock:
            cursor = self.org.store.conn.execute(sql, params)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def org_update(self, sobject: str, record_id: str, **values: Any) -> None:
        with self.org.store.lock:
            self.org.store.update(sobject, record_id, values)



@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from salesforce_sandbox.server import SandboxServer

    params = getattr(request.module, "STACK", {})
    warehouse_engine: sa.Engine = request.getfixturevalue("postgres_engine")  # loud skip, or a failure under CI
    url = warehouse_engine.url
    work = tmp_path_factory.mktemp("scheduler")
    schema = f"sched_{uuid.uuid4().hex[:10]}"
    with warehouse_engine.begin() as conn:
        conn.execute(sa.schema.CreateSchema(schema))

    org = SandboxServer(port=0, orders=params.get("orders", 150), seed=params.get("seed", 5), state_dir=work / "sandbox").start()
    base_url = f"http://127.0.0.1:{free_port()}"
    home = work / "airflow"
    home.mkdir()
    with throwaway_database(url, "airflow_test") as metadata_url:
        env = {
            **local_airflow_env(
                home,
                metadata_db_url=metadata_url,
                api_url=base_url,
                salesforce_connection=org.airflow_connection(),
                warehouse_url=url,
                import_config={"warehouse_schema": schema, **params.get("config", {})},
            ),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            # on a busy machine the execution API answers slowly: workers wait for it rather than fail
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "120",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "3600",
            "SALESFORCE_ORDERS_SCHEDULE": params.get("schedule", "0 * * * *"),
            **params.get("env", {}),
        }
        env.pop("PYTEST_CURRENT_TEST", None)
        airflow = Deployment(home, env, base_url)
        try:
            migrate_metadata_database(env)
            airflow.start("api-server", "dag-processor", "scheduler", *params.get("components", ()))
            airflow.wait_until(
                lambda: requests.get(f"{base_url}/api/v2/dags/{DAG_ID}", timeout=30).status_code == 200, "the import DAG parsed"
            )
            yield Stack(airflow, org, sa.create_engine(url), schema)
        finally:
            airflow.stop()
            org.stop()
            with warehouse_engine.begin() as conn:
                conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))


def json_conf(conf: dict[str, Any]) -> str:
    return json.dumps(conf)
