"""End-to-end fixtures: the sandbox org, a local Airflow, and a warehouse on SQLite or PostgreSQL.

The DAG runs with ``dag.test()`` in this process; its tasks read the connections and the
Variable from ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` environment variables, exactly as a
deployment may define them.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders_local.airflow_env import (
    connection_env,
    postgres_warehouse_connection,
    sqlite_warehouse_connection,
)

ORG_ORDERS = 240
ORG_SEED = 11


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return ORG_ORDERS, ORG_SEED


def org_rows(server: Any, sql: str, *params: Any) -> list[dict]:
    """Rows straight from the sandbox org's tables (for assertions)."""
    with server.store.lock:
        cursor = server.store.conn.execute(sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@dataclass
class ImportHarness:
    engine: sa.Engine
    schema: str | None
    monkeypatch: pytest.MonkeyPatch
    org: Any
    config: dict[str, Any]

    def set_config(self, **values: Any) -> None:
        self.config.update(values)
        self.monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps(self.config))

    def run(self, conf: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run the DAG once; returns the run's import_runs row (plus ``dag_state``)."""
        from salesforce_orders_local.airflow_env import run_dag

        dag_run = run_dag(conf)
        rows = self.query("SELECT * FROM import_runs WHERE run_id = :r", r=dag_run.run_id)
        row = rows[0] if rows else {"run_id": dag_run.run_id}
        row["dag_state"] = str(getattr(dag_run.state, "value", dag_run.state))
        return row

    def org_rows(self, sql: str, *params: Any) -> list[dict]:
        return org_rows(self.org, sql, *params)

    def query(self, sql: str, **params: Any) -> list[dict]:
        with self.engine.connect() as conn:
            if self.schema:
                conn.execute(sa.text(f'SET search_path TO "{self.schema}"'))
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def harness(
    request: pytest.FixtureRequest, airflow_home: Path, org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ImportHarness]:
    """The DAG wired to the sandbox org and an empty warehouse (SQLite file, or a PostgreSQL schema)."""
    if request.param == "sqlite":
        path = tmp_path / "warehouse.db"
        warehouse_conn = sqlite_warehouse_connection(path)
        from salesforce_orders.warehouse import create_sqlite_engine

        engine, schema = create_sqlite_engine(str(path)), None
    else:
        pg_engine = request.getfixturevalue("postgres_engine")  # skips loudly / fails under CI without a server
        url = pg_engine.url
        warehouse_conn = postgres_warehouse_connection(url.host, url.port or 5432, url.database, url.username, url.password)
        engine, schema = sa.create_engine(url), f"e2e_{uuid.uuid4().hex[:10]}"
    config: dict[str, Any] = {"warehouse_schema": schema} if schema else {}
    for key, value in {
        **connection_env("salesforce_default", org.airflow_connection()),
        **connection_env("orders_warehouse", warehouse_conn),
    }.items():
        monkeypatch.setenv(key, value)
    h = ImportHarness(engine, schema, monkeypatch, org, config)
    h.set_config()
    yield h
    if schema:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()
