"""docker-compose.yaml: Airflow's CeleryExecutor layout built from the project's image, plus the
warehouse and the sandbox, wired to each other through the connections the DAG reads; its Airflow
settings are those of the native Celery deployment (``make up-celery``), so the two cannot drift."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from salesforce_orders_local.airflow_env import WAREHOUSE_POOL, WAREHOUSE_POOL_DESCRIPTION
from salesforce_orders_local.celery_deployment import (
    SECRET_FILES,
    CeleryDeployment,
    CeleryLayout,
    shared_airflow_environment,
)

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


# ---------------------------------------------------------------------------------------
# the same Airflow settings as the native Celery deployment
# ---------------------------------------------------------------------------------------

# Settings of these sections are shared by every process of a deployment: all of them come from
# shared_airflow_environment() on both sides, none is set on one side only.
SHARED_SECTIONS = ("AIRFLOW__CELERY__", "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__", "AIRFLOW__DATABASE__", "AIRFLOW__API_AUTH__")


def option(key: str) -> str:
    """``AIRFLOW__SECTION__OPTION`` whether set directly or through ``_CMD`` / ``_SECRET``."""
    return re.sub(r"_(CMD|SECRET)$", "", key)


def compose_layout(services: dict[str, Any]) -> CeleryLayout:
    """Where docker-compose.yaml's services are, described as the native deployment describes its own."""
    database = env(services["postgres"])
    [api_port] = {p.split(":")[-1] for p in services["airflow-apiserver"]["ports"]}
    return CeleryLayout(
        metadata_db_url=(
            f"postgresql+psycopg://{database['POSTGRES_USER']}:{database['POSTGRES_PASSWORD']}"
            f"@postgres:5432/{database['POSTGRES_DB']}"
        ),
        broker_url="redis://redis:6379/0",
        api_server_url=f"http://airflow-apiserver:{api_port}",
        secrets_dir=mount_target(services["airflow-scheduler"], "airflow-secrets"),
    )


def shared_settings(variables: dict[str, str], shared: dict[str, str]) -> set[str]:
    """The keys in ``variables`` that belong to what a deployment's processes share."""
    options = {option(key) for key in shared}
    return {key for key in variables if key.startswith(SHARED_SECTIONS) or option(key) in options}


def test_every_airflow_service_has_the_native_deployments_shared_settings(services: dict[str, Any]):
    expected = shared_airflow_environment(compose_layout(services))
    for name in AIRFLOW_SERVICES:
        variables = env(services[name])
        assert {key: variables.get(key) for key in expected} == expected, name
        assert shared_settings(variables, expected) == set(expected), name


def test_the_native_deployment_sets_the_shared_settings_and_no_others_of_their_kind(tmp_path: Path):
    deployment = CeleryDeployment(home=tmp_path, salesforce_connection={"conn_type": "salesforce"}, redis_db=3, api_port=8181)
    variables = deployment.environment()
    expected = shared_airflow_environment(deployment.layout)

    assert {key: variables[key] for key in expected} == expected
    assert shared_settings(variables, expected) == set(expected)
    assert expected["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert expected["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/3"
    assert expected["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8181/execution/"
    assert expected["AIRFLOW__CELERY__RESULT_BACKEND"] == f"db+{expected['AIRFLOW__DATABASE__SQL_ALCHEMY_CONN']}"
    # the secrets come from files, never from a value in the environment
    assert not {"AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"} & set(variables)


def test_airflow_init_writes_the_shared_secrets_every_service_reads(services: dict[str, Any]):
    secrets_dir = compose_layout(services).secrets_dir
    init = services["airflow-init"]
    assert mount_target(init, "airflow-secrets") == secrets_dir  # writable there
    for name in AIRFLOW_SERVICES:
        assert mount_target(services[name], "airflow-secrets") == secrets_dir, name
    script = init["command"][-1]
    assert f"python -m salesforce_orders_local.celery_deployment secrets {secrets_dir}" in script
    assert f'chown -R "${{AIRFLOW_UID:-50000}}:0" {secrets_dir}' in script
    for variable in ("AIRFLOW__API_AUTH__JWT_SECRET_CMD", "AIRFLOW__CORE__FERNET_KEY_CMD"):
        [path] = [part for part in env(init)[variable].split() if part.startswith(secrets_dir)]
        assert Path(path).name in SECRET_FILES


def test_the_secrets_command_writes_them_once_for_the_owner_only(tmp_path: Path):
    command = [sys.executable, "-m", "salesforce_orders_local.celery_deployment", "secrets", str(tmp_path / "secrets")]
    subprocess.run(command, check=True, timeout=60)
    first = {name: (tmp_path / "secrets" / name).read_text() for name in SECRET_FILES}
    subprocess.run(command, check=True, timeout=60)

    for name in SECRET_FILES:
        path = tmp_path / "secrets" / name
        assert path.read_text() == first[name], f"{name} changed on a second start"
        assert path.stat().st_mode & 0o777 == 0o600
    assert len(first["jwt_secret"]) >= 64
    from cryptography.fernet import Fernet

    Fernet(first["fernet_key"].encode())  # a valid key


def test_airflow_init_creates_the_warehouse_pool(services: dict[str, Any]):
    pool_lines = [line for line in services["airflow-init"]["command"][-1].splitlines() if " pools set " in line]
    [arguments] = [shlex.split(line) for line in pool_lines]
    assert arguments[arguments.index("set") + 1 :] == [WAREHOUSE_POOL, "1", WAREHOUSE_POOL_DESCRIPTION]


@pytest.mark.parametrize("port", [8080, 8091])
def test_make_up_tells_its_tasks_the_execution_api_on_the_port_its_api_listens_on(port: int):
    """``make up UP_ARGS=--port N``: Airflow's default execution API URL names port 8080 whatever
    the API listens on, so tasks on another port would find no API."""
    from salesforce_orders_local.standalone import standalone_env

    env = standalone_env(port)
    execution_api = urlsplit(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert (execution_api.port, execution_api.path) == (int(env["AIRFLOW__API__PORT"]), "/execution/")
    assert int(env["AIRFLOW__API__PORT"]) == port
