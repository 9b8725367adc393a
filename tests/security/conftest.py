"""Security tests: the sandbox org, the DAG wired to it and a SQLite warehouse, and ways to read
every place a run leaves text behind (warehouse tables and views, XCom, task logs)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders_local.airflow_env import connection_env, sqlite_warehouse_connection

ORG_ORDERS = 80
ORG_SEED = 31


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return ORG_ORDERS, ORG_SEED


@dataclass
class WiredImport:
    """The import DAG's connections and Variable pointing at the org and a SQLite warehouse."""

    org: Any
    engine: sa.Engine
    monkeypatch: pytest.MonkeyPatch

    def set_config(self, **config: Any) -> None:
        self.monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps(config))

    def set_connection(self, conn_id: str, connection: dict[str, Any]) -> None:
        for key, value in connection_env(conn_id, connection).items():
            self.monkeypatch.setenv(key, value)

    def run_dag(self) -> Any:
        from salesforce_orders_local.airflow_env import run_dag

        return run_dag()

    def org_rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        with self.org.store.lock:
            cursor = self.org.store.conn.execute(sql, params)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def warehouse_text(self) -> dict[str, str]:
        """Every table and view of the warehouse, all rows and columns, as text (name -> text)."""
        inspector = sa.inspect(self.engine)
        names = inspector.get_table_names() + inspector.get_view_names()
        dump = {}
        with self.engine.connect() as conn:
            for name in names:
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
                rows = [dict(row) for row in conn.execute(sa.select(table)).mappings()]
                dump[name] = json.dumps(rows, default=str, ensure_ascii=False)
        return dump

    def xcom_text(self, run_id: str) -> dict[str, str]:
        """The XComs of a DAG run in Airflow's metadata database (task id -> stored value)."""
        from airflow import settings

        with settings.engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT task_id, key, value FROM xcom WHERE run_id = :run_id"), {"run_id": run_id}
            ).all()
        return {f"{task_id}.{key}": value if isinstance(value, str) else json.dumps(value, default=str) for task_id, key, value in rows}


@pytest.fixture
def wired_import(airflow_home: Path, org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WiredImport]:
    from salesforce_orders.warehouse import create_sqlite_engine

    path = tmp_path / "warehouse.db"
    wired = WiredImport(org, create_sqlite_engine(str(path)), monkeypatch)
    wired.set_connection("salesforce_default", org.airflow_connection())
    wired.set_connection("orders_warehouse", sqlite_warehouse_connection(path))
    wired.set_config()
    yield wired
    wired.engine.dispose()
