"""The package as a team adds it to the Airflow it already runs: the built wheel, installed into a
fresh virtualenv where the resolver installs only ``apache-airflow`` and the wheel's declared ranges
(from PyPI, not this repository's lock), then the two-line DAG files, the plugin and a whole import
run against the sandbox.

The Airflow version is the lowest the package supports; this repository's own environment (the
rest of the suite) runs the newest pinned one.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from salesforce_orders_local.airflow_env import connection_env, sqlite_warehouse_connection

PROJECT = Path(__file__).resolve().parents[2]
AIRFLOW_VERSION = "3.3.0"
DAG_FILES = ("salesforce_orders_import.py", "salesforce_orders_freshness_check.py", "salesforce_orders_shipments.py")
POOL = "salesforce_orders_warehouse"
UV = Path(sys.executable).parent / "uv"

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return 60, 3


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheel and sdist built with the standard frontend from the repository's files (a clean copy:
    nothing ignored by git, no build leftovers)."""
    source = tmp_path_factory.mktemp("source")
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for name in filter(None, files):
        if (PROJECT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT / name, source / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--installer", "uv", "--outdir", str(out), str(source)], check=True, capture_output=True
    )
    return out


def the_wheel(dist: Path) -> Path:
    [wheel] = dist.glob("salesforce_orders_airflow-*.whl")
    return wheel


@dataclass
class FreshAirflow:
    """A virtualenv with Airflow and the wheel, an Airflow home and a DAGs folder of its own."""

    venv: Path
    home: Path
    dags: Path

    def env(self, **extra: str) -> dict[str, str]:
        # Built from scratch: nothing of this repository's environment (its DAGs folder, its
        # plugins folder, its metadata DB) leaks into the installed Airflow.
        return {
            "PATH": f"{self.venv / 'bin'}:/usr/bin:/bin",
            "HOME": os.environ.get("HOME", str(self.home)),
            "LANG": "C.UTF-8",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            **extra,
        }

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            env=env or self.env(), capture_output=True, text=True, timeout=timeout,
        )

    def airflow_json(self, *args: str) -> Any:
        """An ``airflow ... -o json`` command's answer (its last line; Airflow logs before it)."""
        done = self.run("airflow", *args, "-o", "json")
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def fresh_airflow(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> FreshAirflow:
    root = tmp_path_factory.mktemp("fresh-airflow")
    venv = root / "venv"
    subprocess.run([str(UV), "venv", "--quiet", "--python", sys.executable, str(venv)], check=True, capture_output=True)
    # Only Airflow and the wheel are asked for: every other package is the resolver's choice within
    # the wheel's declared ranges (uv's cache keeps repeated runs fast).
    subprocess.run(
        [str(UV), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         f"apache-airflow=={AIRFLOW_VERSION}", str(the_wheel(dist))],
        check=True, capture_output=True, env={k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))},
    )
    fresh = FreshAirflow(venv=venv, home=root / "airflow-home", dags=root / "dags")
    fresh.dags.mkdir()
    for name in DAG_FILES:  # the documented DAG files (README step 2), exactly as shipped in dags/
        shutil.copy2(PROJECT / "dags" / name, fresh.dags / name)
    migrated = fresh.run("airflow", "db", "migrate")
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    return fresh


def test_the_wheel_declares_ranges_the_entry_point_and_only_the_product(dist: Path):
    wheel = the_wheel(dist)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [metadata_name] = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
        [entry_points_name] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        entry_points = archive.read(entry_points_name).decode()

    requirements = [Requirement(r) for r in metadata.get_all("Requires-Dist")]
    runtime = {r.name.lower(): r for r in requirements if r.marker is None}
    assert str(runtime["apache-airflow"].specifier) == "<4,>=3.3"
    assert AIRFLOW_VERSION in runtime["apache-airflow"].specifier
    for name in ("apache-airflow-providers-salesforce", "great-expectations", "pandas", "sqlalchemy", "psycopg",
                 "pydantic", "pycountry", "msgspec", "simple-salesforce", "fastapi", "grpcio", "protobuf", "fastavro"):
        assert name in runtime, name
    # Ranges, never this repository's exact pins.
    assert not [r for r in requirements if any(s.operator == "==" for s in r.specifier)]
    assert "sandbox" in metadata.get_all("Provides-Extra")

    assert "[airflow.plugins]\nexternal_orders = salesforce_orders_ui.plugin:ExternalOrdersPlugin" in entry_points
    packages = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    # salesforce_pubsub_api: Salesforce's Pub/Sub interface, which the event trigger (and the sandbox) speak
    assert packages == {"salesforce_orders", "salesforce_orders_ui", "salesforce_pubsub_api", "salesforce_sandbox"}
    assert "salesforce_pubsub_api/pubsub_api_pb2.py" in names
    assert "salesforce_orders/airflow_dags/import_dag.py" in names
    migrations = sorted(PROJECT.glob("include/salesforce_orders/migrations/versions/*.py"))
    assert migrations and {f"salesforce_orders/migrations/versions/{m.name}" for m in migrations} <= set(names)
    warehouse = sorted(PROJECT.glob("include/salesforce_orders/warehouse/*.py"))
    assert warehouse and {f"salesforce_orders/warehouse/{m.name}" for m in warehouse} <= set(names)
    assert any(n.startswith("salesforce_orders_ui/templates/") and n.endswith(".html") for n in names)
    [sdist] = dist.glob("salesforce_orders_airflow-*.tar.gz")
    assert sdist.stat().st_size > 0


def test_the_package_is_imported_from_the_wheel_not_from_this_repository(fresh_airflow: FreshAirflow):
    code = "import salesforce_orders, salesforce_orders_ui, airflow; print(salesforce_orders.__file__); print(airflow.__version__)"
    done = fresh_airflow.run("python", "-c", code)
    assert done.returncode == 0, done.stderr
    module_file, version = done.stdout.split()
    assert Path(module_file).is_relative_to(fresh_airflow.venv)
    assert version == AIRFLOW_VERSION


def test_the_dag_files_parse_without_import_errors(fresh_airflow: FreshAirflow):
    assert fresh_airflow.airflow_json("dags", "list-import-errors", "--local") == []
    dags = {d["dag_id"]: d["fileloc"] for d in fresh_airflow.airflow_json("dags", "list", "--local")}
    assert dags == {
        "salesforce_orders_import": str(fresh_airflow.dags / "salesforce_orders_import.py"),
        "salesforce_orders_freshness_check": str(fresh_airflow.dags / "salesforce_orders_freshness_check.py"),
        # README step 2's third file: without it no shipment is ever sent
        "salesforce_orders_shipments": str(fresh_airflow.dags / "salesforce_orders_shipments.py"),
    }


def test_airflow_lists_the_plugin_from_the_entry_point(fresh_airflow: FreshAirflow):
    plugins = fresh_airflow.airflow_json("plugins")
    [plugin] = [p for p in plugins if p["name"] == "external_orders"]
    assert plugin["source"].startswith("salesforce-orders-airflow==")
    assert "salesforce_orders_ui.plugin:ExternalOrdersPlugin" in plugin["source"]
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/external-orders"]
    assert [view["name"] for view in plugin["external_views"]] == ["External Orders"]


def test_the_import_runs_end_to_end_against_the_sandbox(fresh_airflow: FreshAirflow, org: Any, tmp_path: Path):
    warehouse = tmp_path / "warehouse.db"
    env = fresh_airflow.env(
        **connection_env("salesforce_default", org.airflow_connection()),
        **connection_env("orders_warehouse", sqlite_warehouse_connection(warehouse)),
        AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG=json.dumps({"lookback_days": 3650}),
    )
    # As README's "Adding it to your Airflow" says: the pool the warehouse-writing tasks run in.
    pool = fresh_airflow.run("airflow", "pools", "set", POOL, "1", "one import writes the warehouse at a time", env=env)
    assert pool.returncode == 0, pool.stderr[-3000:]

    done = fresh_airflow.run("airflow", "dags", "test", "salesforce_orders_import", env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]

    with sqlite3.connect(warehouse) as db:
        [(status, extracted, inserted)] = db.execute("SELECT status, extracted, inserted FROM import_runs").fetchall()
        [(orders,)] = db.execute("SELECT count(*) FROM external_orders").fetchall()
        [(complete,)] = db.execute("SELECT count(*) FROM external_orders WHERE lifecycle_state = 'COMPLETE'").fetchall()
    assert status == "success"
    assert inserted == orders > 0 and extracted >= orders
    assert complete == orders  # written back to Salesforce
    with org.store.lock:
        [(imported,)] = org.store.conn.execute("SELECT count(*) FROM \"Order\" WHERE Status = 'Imported'").fetchall()
    assert imported == orders
