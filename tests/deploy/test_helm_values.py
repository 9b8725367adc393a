"""deploy/helm/values.yaml: Apache Airflow's official Helm chart running this project's image.

What this repository alone can check always runs: the image, the executor, the connections from
Kubernetes Secrets and no credential in the values, a valid config Variable, the DAG files baked
into the image, the pool the DAG's tasks use. The chart itself is not part of this repository:

* its ``values.schema.json`` validates the file where one is found: ``$AIRFLOW_CHART_DIR`` (a
  checkout of the chart's folder) or ``helm/airflow-chart-values.schema.json`` in the shared
  folder beside the repository;
* with ``$AIRFLOW_CHART_DIR`` and the ``helm-python-sdk`` and ``kubernetes-validate`` packages
  installed, the chart is rendered with these values (Helm's own Go engine) and every manifest is
  validated against the Kubernetes API schemas.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[2]
VALUES_FILE = PROJECT / "deploy" / "helm" / "values.yaml"
SCHEMA_IN_SHARED = Path("helm") / "airflow-chart-values.schema.json"
POOL = "salesforce_orders_warehouse"
CONNECTIONS = {"AIRFLOW_CONN_SALESFORCE_DEFAULT", "AIRFLOW_CONN_ORDERS_WAREHOUSE"}
KUBERNETES_VERSION = "1.30.0"  # the Kubernetes API version the rendered manifests are checked against
AIRFLOW_CONTAINERS = {  # rendered manifest -> the container that runs Airflow in it
    "scheduler/scheduler-deployment.yaml": "scheduler",
    "workers/worker-deployment.yaml": "worker",
    "api-server/api-server-deployment.yaml": "api-server",
    "dag-processor/dag-processor-deployment.yaml": "dag-processor",
    "triggerer/triggerer-deployment.yaml": "triggerer",
}


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return yaml.safe_load(VALUES_FILE.read_text())


def chart_dir() -> Path | None:
    value = os.environ.get("AIRFLOW_CHART_DIR")
    return Path(value) if value else None


def chart_schema_file() -> Path | None:
    if chart_dir():
        return chart_dir() / "values.schema.json"
    for parent in PROJECT.parents:
        if (parent / "shared" / SCHEMA_IN_SHARED).is_file():
            return parent / "shared" / SCHEMA_IN_SHARED
    return None


def strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in [str(key), *strings(value)]]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_every_airflow_pod_runs_this_projects_image_at_its_airflow_version(values):
    version = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["version"]
    assert values["defaultAirflowRepository"].endswith("/salesforce-orders-airflow")
    assert values["defaultAirflowTag"] == version
    [base] = re.findall(r"^FROM\s+apache/airflow:(\S+)", (PROJECT / "Dockerfile").read_text(), re.MULTILINE)
    assert values["airflowVersion"] == base.split("-")[0]


def test_celery_or_kubernetes_executor(values):
    assert values["executor"] in ("CeleryExecutor", "KubernetesExecutor")


def test_connections_come_from_kubernetes_secrets_and_no_credential_is_in_the_values(values):
    from_secrets = {item["envName"]: item for item in values["secret"]}
    assert set(from_secrets) == CONNECTIONS
    for item in from_secrets.values():
        assert item["secretName"] and item["secretKey"]
    assert not [e for e in values.get("env", []) if e["name"].startswith("AIRFLOW_CONN_")]
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    assert "metadataConnection" not in values["data"]
    for key in ("fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey"):
        assert key not in values, key
    for text in strings(values):
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), text  # user:password@host
        assert not re.search(r"(password|secret|token)\"?\s*[:=]", text, re.IGNORECASE), text


def test_the_config_variable_is_valid_configuration(values):
    from salesforce_orders.config import parse_config

    [variable] = [e for e in values["env"] if e["name"] == "AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG"]
    config = parse_config(json.loads(variable["value"]))
    assert config.enabled is True


def test_the_dag_files_come_with_the_image(values):
    assert values["dags"]["persistence"]["enabled"] is False
    assert values["dags"]["gitSync"]["enabled"] is False
    dockerfile = (PROJECT / "Dockerfile").read_text()
    [copied] = re.findall(r"^COPY .*?((?:dags/\S+\s+)+)/opt/airflow/dags/\s*$", dockerfile, re.MULTILINE)
    assert set(copied.split()) == {
        "dags/salesforce_orders_import.py", "dags/salesforce_orders_freshness_check.py", "dags/salesforce_orders_shipments.py"}


def test_the_migration_job_creates_the_pool_the_dag_uses(values, airflow_home):
    from salesforce_orders_local.airflow_env import load_dag

    [script] = values["migrateDatabaseJob"]["args"][2:]
    assert re.search(r"^airflow db migrate &&", script)
    assert re.search(rf'exec airflow pools set {POOL} 1 "[^"]+"$', script)
    writers = {task.task_id for task in load_dag().tasks if task.pool == POOL}
    assert {"load", "write_back"} <= writers


def test_the_values_validate_against_the_charts_schema(values):
    import jsonschema

    schema_file = chart_schema_file()
    if schema_file is None:
        pytest.skip(
            "NO CHART SCHEMA: set AIRFLOW_CHART_DIR to the official chart's folder, or place its "
            f"values.schema.json at shared/{SCHEMA_IN_SHARED} -- the chart's schema check did NOT run"
        )
    schema = json.loads(schema_file.read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(values), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


@pytest.fixture(scope="module")
def rendered(values) -> dict[str, list[dict[str, Any]]]:
    """The chart rendered with these values: manifest path -> its Kubernetes objects."""
    if chart_dir() is None:
        pytest.skip("NO CHART: set AIRFLOW_CHART_DIR to the official chart's folder -- rendering did NOT run")
    helm = pytest.importorskip("helm_python", reason="pip install helm-python-sdk to render the chart")
    with helm.Chart.load(str(chart_dir())) as chart:
        files = chart.render(values, name="airflow", namespace="airflow")
    return {
        path.split("/templates/", 1)[1]: [doc for doc in yaml.safe_load_all(text) if doc]
        for path, text in files.items()
        if path.endswith(".yaml") and "/templates/" in path
    }


def test_every_rendered_manifest_is_valid_kubernetes(rendered):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    objects = [obj for docs in rendered.values() for obj in docs]
    assert len(objects) > 20
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def airflow_container(rendered, manifest: str) -> dict[str, Any]:
    [deployment] = [d for d in rendered[manifest] if d["kind"] in ("Deployment", "StatefulSet")]
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == AIRFLOW_CONTAINERS[manifest]]
    return container


def test_every_airflow_container_runs_the_image_with_the_connections_from_the_secret(rendered, values):
    image = f"{values['defaultAirflowRepository']}:{values['defaultAirflowTag']}"
    for manifest in AIRFLOW_CONTAINERS:
        container = airflow_container(rendered, manifest)
        assert container["image"] == image, manifest
        env = {e["name"]: e for e in container["env"]}
        for name in CONNECTIONS:
            assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "salesforce-orders-connections", (manifest, name)
        assert "AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG" in env, manifest
    [config_map] = rendered["configmaps/configmap.yaml"]
    assert f"executor = {values['executor']}" in config_map["data"]["airflow.cfg"]


def test_the_rendered_migration_job_creates_the_pool(rendered):
    [job] = rendered["jobs/migrate-database-job.yaml"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert f"airflow pools set {POOL} 1" in container["args"][-1]
