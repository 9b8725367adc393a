"""A CeleryExecutor deployment started by the tests themselves, with ``make up-celery``'s own code.

One deployment serves the module (starting it is the slow part): ``CeleryDeployment`` from
``salesforce_orders_local.celery_deployment`` on a free api-server port, its own Redis database
(an empty one, claimed atomically), its own PostgreSQL databases (dropped afterwards), its Airflow
home under the project's ``.local/``, and a sandbox org served from this process so the tests can
change it and see every write Salesforce received.

What differs from ``make up-celery``, for the tests' sake only:

- the schedule is monthly (``SALESFORCE_ORDERS_SCHEDULE``): unpausing creates one real scheduled
  run and no other scheduled run comes while the tests work;
- a task whose worker died is declared failed after 60 s without a heartbeat (Airflow's default
  is 5 minutes), and a failed task is retried after 2 s instead of the DAG's minute: a cluster
  policy (``airflow_local_settings.py`` in the home's ``config/``, Airflow's way for a deployment
  to override task settings) sets the retry delay;
- the workers know the fault points ``extract.page_staged``, ``load.before_commit`` and
  ``write_back.before_send`` (``salesforce_orders.faultpoints``); a point pauses a task only while
  a test has taken the point's ``.resume`` file away (:meth:`CeleryStack.hold`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from salesforce_orders import faultpoints
from salesforce_orders_local import local_airflow
from salesforce_orders_local.airflow_env import DAG_ID
from salesforce_orders_local.celery_deployment import CeleryDeployment
from salesforce_orders_local.local_airflow import ComponentFailed, drop_databases, free_port

PROJECT = Path(__file__).resolve().parents[2]
ORG_ORDERS = 160
ORG_SEED = 29
SCHEDULE = "0 0 1 * *"
HEARTBEAT_TIMEOUT_SECONDS = 60
RETRY_DELAY_SECONDS = 2
PAUSE_POINTS = ("extract.page_staged", "load.before_commit", "write_back.before_send")
# Safety nets for a deployment that hangs: far longer than anything here takes on a slow machine.
# The tests act on events (states seen through the REST API, fault points), never on elapsed time.
WAIT_SECONDS = 420
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
CLAIM_KEY = "salesforce_orders:test_claim"

RETRY_POLICY = f'''"""Test deployment only: retry a failed task after {RETRY_DELAY_SECONDS} s (the DAG says a minute)."""
from datetime import timedelta


def task_policy(task):
    task.retry_delay = timedelta(seconds={RETRY_DELAY_SECONDS})
    task.retry_exponential_backoff = 0
'''


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return ORG_ORDERS, ORG_SEED


def _unreachable(what: str, problem: str) -> None:
    message = f"{what} NOT REACHABLE: {problem}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} -- CI is set, so the Celery deployment test must run")
    pytest.skip(f"{message} -- the Celery deployment test is SKIPPED (start the server, or set CI=1 to fail instead)")


@pytest.fixture(scope="module")
def redis_db() -> Iterator[int]:
    """An empty Redis database of this module's own (claimed atomically), emptied afterwards."""
    import redis

    claim = "if redis.call('dbsize') == 0 then redis.call('set', KEYS[1], ARGV[1]) return 1 end return 0"
    owner = f"{os.getpid()}-{uuid.uuid4().hex}"
    for number in range(1, 16):
        client = redis.Redis.from_url(f"{REDIS_URL}/{number}", socket_connect_timeout=3)
        try:
            if client.eval(claim, 1, CLAIM_KEY, owner):
                break
        except redis.ConnectionError as exc:
            _unreachable(f"REDIS at {REDIS_URL}", str(exc))
        except redis.ResponseError:  # no such database number on this server
            pass
        client.close()
    else:
        pytest.fail(f"no empty Redis database at {REDIS_URL} (1-15) for the Celery broker")
    try:
        yield number
    finally:
        client.flushdb()
        client.close()


class WriteLog:
    """Every update the sandbox org applied, by (sObject, record Id): what Salesforce received."""

    def __init__(self, store: Any) -> None:
        self.writes: Counter[tuple[str, str]] = Counter()
        update, update_each = store.update, store.update_each

        def counted_update(sobject: str, record_id: str, values: dict) -> None:
            update(sobject, record_id, values)
            self.writes[(sobject, record_id)] += 1

        def counted_update_each(sobject: str, updates: Any) -> list:
            updates = list(updates)
            outcomes = update_each(sobject, updates)
            for (record_id, _values), outcome in zip(updates, outcomes, strict=True):
                if outcome is None:
                    self.writes[(sobject, record_id)] += 1
            return outcomes

        store.update, store.update_each = counted_update, counted_update_each

    def clear(self) -> None:
        self.writes.clear()


@dataclass
class CeleryStack:
    """The running deployment, its REST API, its warehouse and the org behind it."""

    deployment: CeleryDeployment
    org: Any
    salesforce_writes: WriteLog
    warehouse: sa.Engine
    point_dir: Path
    _token: str | None = field(default=None, repr=False)

    # -- Airflow's REST API -------------------------------------------------------------

    def token(self) -> str:
        if self._token is None:
            response = requests.post(
                f"{self.deployment.api_url}/auth/token",
                json={"username": "admin", "password": self.deployment.admin_password()},
                timeout=30,
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token()}"}
        return requests.request(method, f"{self.deployment.api_url}{path}", headers=headers, timeout=60, **kwargs)

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, f"/api/v2{path}", **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def dag_runs(self) -> list[dict]:
        return self.api("GET", f"/dags/{DAG_ID}/dagRuns", params={"limit": 100, "order_by": "run_after"})["dag_runs"]

    def task_instances(self, run_id: str) -> dict[str, dict]:
        found = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances", params={"limit": 100})
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def tries(self, run_id: str, task_id: str) -> list[dict]:
        found = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/tries")
        return sorted(found["task_instances"], key=lambda t: t["try_number"])

    # -- waiting for events -------------------------------------------------------------

    def wait_for(self, what: str, found: Callable[[], Any]) -> Any:
        """Poll ``found()`` until it returns something truthy; fail naming ``what`` (with the
        components' logs) if a component dies or the safety net runs out."""
        try:
            return self.deployment.wait_until(found, what, WAIT_SECONDS)
        except ComponentFailed as exc:
            pytest.fail(str(exc))

    def wait_for_run(self, run_id: str) -> dict:
        """Until the run has finished; returns it (whatever its state)."""

        def finished() -> dict | None:
            run = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
            return run if run["state"] in ("success", "failed") else None

        return self.wait_for(f"run {run_id} finish", finished)

    def logs(self) -> str:
        return local_airflow.logs(self.deployment.components.values(), chars=2500)

    # -- Celery's remote control: which worker takes new tasks ------------------------------

    def consume(self, worker: str, on: bool) -> None:
        """Let ``worker`` take tasks from the default queue, or stop it taking new ones (its running
        task goes on): what an operator does to drain a worker."""
        node = self.deployment.worker_node(worker)
        with self.deployment.celery_app() as app:
            if on:
                replies = app.control.add_consumer("default", destination=[node], reply=True, timeout=10)
            else:
                replies = app.control.cancel_consumer("default", destination=[node], reply=True, timeout=10)
        assert replies and all(node in reply for reply in replies), replies

    # -- fault points -------------------------------------------------------------------

    def hold(self, point: str) -> None:
        """The next task to reach ``point`` pauses there (until :meth:`release` or a kill)."""
        (self.point_dir / f"{point}.resume").unlink()
        (self.point_dir / f"{point}.reached").unlink(missing_ok=True)

    def reached(self, point: str) -> bool:
        return (self.point_dir / f"{point}.reached").exists()

    def release(self, point: str) -> None:
        """Tasks go through ``point`` again, a paused one included."""
        (self.point_dir / f"{point}.resume").touch()

    # -- the warehouse and the org --------------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[dict]:
        with self.warehouse.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def org_rows(self, sql: str, *params: Any) -> list[dict]:
        with self.org.store.lock:
            cursor = self.org.store.conn.execute(sql, params)
            names = [c[0] for c in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


@pytest.fixture(scope="module")
def stack(
    request: pytest.FixtureRequest, sandbox: Any, redis_db: int, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryStack]:
    # The PostgreSQL server is checked first, as the other PostgreSQL tests do.
    probe = sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/postgres", connect_args={"connect_timeout": 3})
    try:
        with probe.connect():
            pass
    except sa.exc.OperationalError as exc:
        _unreachable("POSTGRESQL at 127.0.0.1:5432", str(exc.orig).strip().splitlines()[0])
    finally:
        probe.dispose()

    tag = f"{os.getpid()}_{uuid.uuid4().hex[:8]}"
    home = PROJECT / ".local" / f"celery-test-{tag}"
    (home / "config").mkdir(parents=True)
    (home / "config" / "airflow_local_settings.py").write_text(RETRY_POLICY)
    point_dir = tmp_path_factory.mktemp("faultpoints")
    for point in PAUSE_POINTS:  # the points let tasks through until a test holds one
        (point_dir / f"{point}.resume").touch()
    deployment = CeleryDeployment(
        home=home,
        salesforce_connection=sandbox.airflow_connection(),
        database_prefix=f"sfo_celery_{tag}",
        redis_db=redis_db,
        api_port=free_port(),
        extra_env={
            "SALESFORCE_ORDERS_SCHEDULE": SCHEDULE,
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            faultpoints.ENV: ";".join(f"{point}=pause" for point in PAUSE_POINTS),
            faultpoints.DIR_ENV: str(point_dir),
        },
    )
    writes = WriteLog(sandbox.store)
    failures_before = request.session.testsfailed
    try:
        deployment.start()
        warehouse = sa.create_engine(deployment.warehouse_url)
        try:
            yield CeleryStack(deployment, sandbox, writes, warehouse, point_dir)
        finally:
            warehouse.dispose()
    finally:
        deployment.stop()
        drop_databases(deployment.postgres_url, (deployment.metadata_database, deployment.warehouse_database))
        if request.session.testsfailed == failures_before:
            shutil.rmtree(home, ignore_errors=True)
        else:  # the components' and the tasks' logs, for whoever looks into the failure
            print(f"\nThe Celery deployment's Airflow home is kept: {home}")
