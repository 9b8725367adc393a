"""A local Airflow for running the import DAG on one machine: metadata DB, connections, dag.test().

Used by ``make run``, ``make up`` and the end-to-end tests. Airflow reads its configuration from
the environment when it is first imported, so :func:`configure` must run before any Airflow import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DAGS_FOLDER = PROJECT_ROOT / "dags"
PLUGINS_FOLDER = PROJECT_ROOT / "plugins"
DAG_ID = "salesforce_orders_import"
# The one-slot pool of the import's warehouse-writing tasks (salesforce_orders/airflow_dags/import_dag.py).
WAREHOUSE_POOL = "salesforce_orders_warehouse"
WAREHOUSE_POOL_DESCRIPTION = "one import writes the warehouse at a time"


def project_airflow_env(airflow_home: Path) -> dict[str, str]:
    """The settings every local Airflow of this project shares: its home, this project's DAGs and
    plugins, no examples."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO"),
    }


def configure(airflow_home: Path, extra_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Point this process (and its children) at a local Airflow home; migrate its metadata DB once."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    env = {
        **project_airflow_env(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        **(extra_env or {}),
    }
    os.environ.update(env)
    marker = airflow_home / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            check=True,
            env={**os.environ},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        marker.touch()
    return env


def ensure_pool(env: Mapping[str, str] | None = None) -> None:
    """Create (or reset to one slot) the import's pool in the metadata DB ``env`` points at."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "pools", "set", WAREHOUSE_POOL, "1", WAREHOUSE_POOL_DESCRIPTION],
        check=True,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def connection_env(conn_id: str, connection: Mapping[str, Any]) -> dict[str, str]:
    """An Airflow connection as the ``AIRFLOW_CONN_<ID>`` environment variable (JSON form)."""
    return {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(dict(connection))}


def sqlite_warehouse_connection(path: Path) -> dict[str, Any]:
    return {"conn_type": "sqlite", "host": str(path)}


def postgres_warehouse_connection(host: str, port: int, database: str, login: str, password: str | None = None) -> dict[str, Any]:
    conn = {"conn_type": "postgres", "host": host, "port": port, "schema": database, "login": login}
    if password:
        conn["password"] = password
    return conn


def variable_env(name: str, value: Any) -> dict[str, str]:
    return {f"AIRFLOW_VAR_{name.upper()}": json.dumps(value)}


def store_in_metadata_db(connections: Mapping[str, Mapping[str, Any]], variables: Mapping[str, Any]) -> list[str]:
    """Put the connections and Variables where Airflow users edit them (Admin → Connections /
    Variables, i.e. the metadata DB), each only when absent: an edit made in the UI survives the
    next start. Returns what was added. Call after :func:`configure`."""
    from airflow.models.connection import Connection
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    added = []
    with create_session() as session:
        for conn_id, conn in connections.items():
            if session.query(Connection).filter(Connection.conn_id == conn_id).first() is None:
                fields = dict(conn)
                extra = fields.pop("extra", None)
                session.add(Connection(conn_id=conn_id, extra=json.dumps(extra) if isinstance(extra, dict) else extra, **fields))
                added.append(f"connection {conn_id}")
        for name, value in variables.items():
            if session.query(Variable).filter(Variable.key == name).first() is None:
                session.add(Variable(key=name, val=json.dumps(value, indent=2)))
                added.append(f"variable {name}")
    return added


def load_dag(dag_id: str = DAG_ID):
    """The import DAG (or another of the dags folder), parsed from the dags folder as the DAG processor would."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def run_dag(run_conf: Mapping[str, Any] | None = None, logical_date=None, dag_id: str = DAG_ID) -> Any:
    """Run the import DAG (or ``dag_id``) once in this process with ``dag.test()``; returns the DagRun."""
    from airflow.sdk import timezone

    dag = load_dag(dag_id)
    return dag.test(run_conf=dict(run_conf or {}), logical_date=logical_date or timezone.utcnow())
