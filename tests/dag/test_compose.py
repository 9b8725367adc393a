"""docker-compose.yaml: Airflow's CeleryExecutor layout built from the project's image, plus the
warehouse and the sandbox, wired to each other through the connections the DAG reads."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
AIRFLOW_SERVICES = (
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
)
INFRASTRUCTURE = ("postgres", "redis", "warehouse", "sandbox")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    return service.get("environment") or {}


def connection(services: dict[str, Any], conn_id: str) -> dict[str, Any]:
    """The connection every Airflow service gets from ``AIRFLOW_CONN_<ID>`` (all must agree)."""
    values = {env(services[name])[f"AIRFLOW_CONN_{conn_id.upper()}"] for name in AIRFLOW_SERVICES}
    assert len(values) == 1, f"the Airflow services disagree on {conn_id}"
    return json.loads(values.pop())


def pinned_airflow_version() -> str:
    [version] = re.findall(r"^apache-airflow==(\S+)$", (PROJECT / "requirements.txt").read_text(), re.MULTILINE)
    return version


def mount_target(service: dict[str, Any], volume: str) -> str:
    """Where ``service`` mounts the named volume (without a ``:ro`` suffix)."""
    [target] = [v.split(":")[1] for v in service["volumes"] if v.split(":")[0] == volume]
    return target


def test_every_service_is_there(services: dict[str, Any]):
    assert set(AIRFLOW_SERVICES) | set(INFRASTRUCTURE) <= set(services)


def test_airflow_services_run_the_project_image_built_from_the_dockerfile(services: dict[str, Any]):
    images = {services[name]["image"] for name in AIRFLOW_SERVICES}
    assert len(images) == 1
    for name in AIRFLOW_SERVICES:
        assert services[name]["build"] == ".", name
    assert (PROJECT / "Dockerfile").is_file()
    # The sandbox runs from the same image: it is one of the project's packages.
    assert services["sandbox"]["image"] in images and services["sandbox"]["build"] == "."


def test_the_image_is_the_pinned_airflow_version(services: dict[str, Any]):
    version = pinned_airflow_version()
    [base] = re.findall(r"^FROM\s+(\S+)", (PROJECT / "Dockerfile").read_text(), re.MULTILINE)
    image, _, tag = base.partition(":")
    assert image == "apache/airflow"
    assert tag.split("-")[0] == version
    assert services["airflow-worker"]["image"].endswith(f":{version}")


def test_celery_executor_on_postgres_and_redis(services: dict[str, Any]):
    for name in AIRFLOW_SERVICES:
        variables = env(services[name])
        assert variables["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert urlsplit(variables["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).hostname == "postgres", name
        assert urlsplit(variables["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis", name
    assert services["airflow-worker"]["command"] == "celery worker"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-worker", "airflow-triggerer"):
        assert services[name]["depends_on"]["airflow-init"] == {"condition": "service_completed_successfully"}, name


def test_orders_warehouse_points_at_the_warehouse_service(services: dict[str, Any]):
    conn = connection(services, "orders_warehouse")
    database = env(services["warehouse"])

    assert conn["conn_type"] == "postgres"
    assert (conn["host"], conn["port"]) == ("warehouse", 5432)
    assert (conn["login"], conn["password"], conn["schema"]) == (
        database["POSTGRES_USER"],
        database["POSTGRES_PASSWORD"],
        database["POSTGRES_DB"],
    )


def flag_value(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_salesforce_default_points_at_the_sandbox_service(services: dict[str, Any]):
    conn = connection(services, "salesforce_default")
    sandbox = services["sandbox"]
    extra = conn["extra"]

    assert conn["conn_type"] == "salesforce"
    port = flag_value(sandbox["command"], "--port")
    for key in ("instance_url", "login_url"):
        url = urlsplit(extra[key])
        assert (url.scheme, url.hostname, str(url.port)) == ("https", "sandbox", port), key
    # The Airflow services trust the certificate the sandbox writes into the shared state volume.
    state_dir = flag_value(sandbox["command"], "--state-dir")
    assert mount_target(sandbox, "sandbox-state") == state_dir
    assert extra["ca_bundle"] == f"{mount_target(services['airflow-worker'], 'sandbox-state')}/sandbox-cert.pem"


def test_the_sandbox_command_uses_flags_its_cli_accepts(services: dict[str, Any]):
    sandbox = services["sandbox"]
    assert sandbox["entrypoint"] == ["python", "-m", "salesforce_sandbox"]
    subcommand, *arguments = sandbox["command"]
    help_text = subprocess.run(
        [sys.executable, "-m", "salesforce_sandbox", subcommand, "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    accepted = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))

    flags = [a for a in arguments if a.startswith("--")]
    assert flags and set(flags) <= accepted, set(flags) - accepted


def test_mounted_project_folders_exist(services: dict[str, Any]):
    mounts = {
        v.split(":")[1]: v.split(":")[0]
        for v in services["airflow-scheduler"]["volumes"]
        if v.startswith("./")
    }
    for target in ("/opt/airflow/dags", "/opt/airflow/plugins"):
        assert (PROJECT / mounts[target]).is_dir(), target
    assert (PROJECT / mounts["/opt/airflow/dags"] / "salesforce_orders_import.py").is_file()
