"""``make up-celery``: Airflow's CeleryExecutor on one host, with the sandbox and a PostgreSQL warehouse.

The same layout as ``docker-compose.yaml``, as native processes on the services this machine
runs: Redis (127.0.0.1:6379) is the Celery broker; PostgreSQL (127.0.0.1:5432) holds Airflow's
metadata database (which also keeps Celery's task results) and the warehouse, each in a database
of its own that is created when missing. ``airflow api-server``, ``scheduler``, ``dag-processor``,
``triggerer`` and two ``celery worker`` processes share one configuration: this environment plus
the JWT secret and Fernet key generated once into ``<AIRFLOW_HOME>/secrets``.

Ctrl-C stops every process it started. ``python -m salesforce_orders_local.celery_deployment
secrets DIR`` writes the shared secrets only (docker-compose.yaml's ``airflow-init`` runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import local_airflow
from .local_airflow import (
    Component,
    ComponentFailed,
    airflow_command,
    api_server_command,
    create_databases,
    database_url,
    local_airflow_env,
    metadata_database_env,
    migrate_metadata_database,
)
from .worker_hostname import WORKER_NAME_ENV, node_name

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379"
WORKERS = ("worker-1", "worker-2")
SECRET_FILES = ("jwt_secret", "fernet_key")
READY_TIMEOUT_SECONDS = 240
STOP_TIMEOUT_SECONDS = 30
VISIBILITY_TIMEOUT_SECONDS = 3 * 3600


# ---------------------------------------------------------------------------------------
# The configuration every Airflow process shares (here and in docker-compose.yaml)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CeleryLayout:
    """Where the shared services are, as every Airflow process reaches them."""

    metadata_db_url: str  # SQLAlchemy URL of Airflow's metadata database (psycopg 3)
    broker_url: str  # Celery's broker: a Redis database
    api_server_url: str  # the api-server, as workers and the scheduler reach it
    secrets_dir: str  # the folder holding the shared JWT secret and Fernet key


def shared_airflow_environment(layout: CeleryLayout) -> dict[str, str]:
    """The settings that must be the same in every Airflow process of a Celery deployment.

    Celery keeps task results in the metadata database. The secrets are read from files through
    Airflow's ``_CMD`` options, so their values are in no process's environment: the JWT secret
    signs the tokens the scheduler gives each task and the api-server checks, the Fernet key
    encrypts connections and variables stored in the metadata database.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        **metadata_database_env(layout.metadata_db_url),
        "AIRFLOW__CELERY__BROKER_URL": layout.broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{layout.metadata_db_url}",
        # a task still running after this long is handed to another worker: longer than the
        # import's execution_timeout (2 hours)
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT_SECONDS),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{layout.api_server_url.rstrip('/')}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET_CMD": f"cat {layout.secrets_dir}/jwt_secret",
        "AIRFLOW__CORE__FERNET_KEY_CMD": f"cat {layout.secrets_dir}/fernet_key",
    }


def ensure_shared_secrets(directory: Path) -> Path:
    """Write the JWT secret and the Fernet key into ``directory`` unless they are there (kept
    between starts: tokens and encrypted values stay valid). Only the owner may read them."""
    from cryptography.fernet import Fernet

    directory.mkdir(parents=True, exist_ok=True)
    values = {"jwt_secret": lambda: secrets.token_urlsafe(64), "fernet_key": lambda: Fernet.generate_key().decode()}
    for name in SECRET_FILES:
        path = directory / name
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(descriptor, "w") as out:
            out.write(values[name]())
    return directory


# ---------------------------------------------------------------------------------------
# The deployment
# ---------------------------------------------------------------------------------------


@dataclass
class CeleryDeployment:
    """Airflow with the CeleryExecutor on this host: one process per component, two workers.

    ``database_prefix`` names the PostgreSQL databases (``<prefix>_airflow`` for Airflow's metadata
    and Celery's results, ``<prefix>_warehouse`` for the import's warehouse); ``redis_db`` is the
    broker's Redis database number. ``extra_env`` adds settings for every process.
    """

    home: Path
    salesforce_connection: Mapping[str, Any]
    database_prefix: str = "salesforce_orders"
    redis_db: int = 0
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    postgres_url: str = DEFAULT_POSTGRES_URL
    redis_url: str = DEFAULT_REDIS_URL
    worker_concurrency: int = 2
    import_config: Mapping[str, Any] = field(default_factory=lambda: {"enabled": True})
    extra_env: Mapping[str, str] = field(default_factory=dict)
    components: dict[str, Component] = field(default_factory=dict)

    # -- where things are ---------------------------------------------------------------

    @property
    def metadata_database(self) -> str:
        return f"{self.database_prefix}_airflow"

    @property
    def warehouse_database(self) -> str:
        return f"{self.database_prefix}_warehouse"

    @property
    def api_url(self) -> str:
        return f"http://{self.api_host}:{self.api_port}"

    @property
    def warehouse_url(self) -> str:
        return database_url(self.postgres_url, self.warehouse_database)

    @property
    def layout(self) -> CeleryLayout:
        return CeleryLayout(
            metadata_db_url=database_url(self.postgres_url, self.metadata_database),
            broker_url=f"{self.redis_url.rstrip('/')}/{self.redis_db}",
            api_server_url=self.api_url,
            secrets_dir=str(self.home / "secrets"),
        )

    def worker_node(self, worker: str) -> str:
        """The worker's Celery node name, which its task instances record as their hostname."""
        return node_name(worker)

    def environment(self) -> dict[str, str]:
        """The environment of every Airflow process: this machine's, without any Airflow settings
        the caller had, plus the deployment's."""
        return {
            **local_airflow_env(
                self.home,
                metadata_db_url=self.layout.metadata_db_url,
                api_url=self.api_url,
                salesforce_connection=self.salesforce_connection,
                warehouse_url=self.warehouse_url,
                import_config=self.import_config,
            ),
            **shared_airflow_environment(self.layout),
            # the workers report their own names (worker_hostname.py); the others the host's
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "salesforce_orders_local.worker_hostname.worker_hostname",
            **self.extra_env,
        }

    # -- lifecycle ------------------------------------------------------------------------

    def prepare(self) -> None:
        """Databases, shared secrets, the migrated metadata DB and the import's pool."""
        self.home.mkdir(parents=True, exist_ok=True)
        create_databases(self.postgres_url, (self.metadata_database, self.warehouse_database))
        ensure_shared_secrets(self.home / "secrets")
        migrate_metadata_database(self.environment())

    def _components(self) -> list[Component]:
        env = self.environment()
        logs = self.home / "processes"
        components = [
            Component("api-server", api_server_command(self.api_host, self.api_port), env, logs / "api-server.log"),
            *(Component(name, airflow_command(name), env, logs / f"{name}.log") for name in ("scheduler", "dag-processor", "triggerer")),
        ]
        for worker in WORKERS:
            # The workers share this host's log folder with the api-server, which reads task logs
            # from it: no log server of their own (two would want the same port).
            command = [
                *airflow_command("celery", "worker"), "--celery-hostname", self.worker_node(worker),
                "--concurrency", str(self.worker_concurrency), "--skip-serve-logs",
            ]
            components.append(Component(worker, command, {**env, WORKER_NAME_ENV: worker}, logs / f"{worker}.log"))
        return components

    def start(self) -> CeleryDeployment:
        """Prepare, start every component and wait until they all work."""
        self.prepare()
        for component in self._components():
            component.launch()
            self.components[component.name] = component
        try:
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def check_running(self) -> None:
        local_airflow.check_running(self.components.values())

    def wait_until(self, condition: Any, what: str, timeout: float) -> Any:
        """``local_airflow.wait_until`` on this deployment's components."""
        return local_airflow.wait_until(condition, what, timeout, self.components.values(), poll_seconds=0.5)

    def wait_until_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Until the api-server reports the scheduler, DAG processor and triggerer healthy and
        both workers answer a Celery ping."""
        waiting_for = "the api-server"

        def ready() -> bool:
            nonlocal waiting_for
            waiting_for = self._not_ready()
            return waiting_for is None

        try:
            self.wait_until(ready, "every component ready", timeout)
        except ComponentFailed as exc:
            raise ComponentFailed(f"{exc}\n(the last one not ready: {waiting_for})") from None

    def _not_ready(self) -> str | None:
        import requests

        try:
            health = requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).json()
        except (requests.RequestException, ValueError):
            return "the api-server"
        for part in ("metadatabase", "scheduler", "dag_processor", "triggerer"):
            if (health.get(part) or {}).get("status") != "healthy":
                return part
        answered = self.ping_workers()
        missing = [w for w in WORKERS if self.worker_node(w) not in answered]
        return f"workers {', '.join(missing)}" if missing else None

    @contextmanager
    def celery_app(self) -> Iterator[Any]:
        """A Celery app on the deployment's broker, for Celery's remote control of the workers."""
        from celery import Celery

        app = Celery(broker=self.layout.broker_url)
        try:
            yield app
        finally:
            app.close()

    def ping_workers(self) -> set[str]:
        """The Celery node names that answer a ping through the broker."""
        with self.celery_app() as app:
            replies = app.control.ping(timeout=1.0)
        return {name for reply in replies for name in reply}

    def kill_worker(self, worker: str) -> None:
        """SIGKILL a worker with everything it started (its pool and the task processes), as if
        its machine went down."""
        local_airflow.kill(self.components[worker])

    def restart_worker(self, worker: str) -> None:
        """Start a stopped worker again and wait until it answers."""
        component = self.components[worker]
        if component.running:
            raise RuntimeError(f"{worker} is running")
        component.launch()
        component.killed = False
        self.wait_until_ready()

    def stop(self) -> None:
        """Stop every component started here: SIGTERM, then SIGKILL for what is left of it."""
        local_airflow.stop(self.components.values(), STOP_TIMEOUT_SECONDS)

    def admin_password(self) -> str:
        """The password Airflow's simple auth manager generated for ``admin`` on first start."""
        return json.loads((self.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]


# ---------------------------------------------------------------------------------------
# make up-celery
# ---------------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def up(args: argparse.Namespace) -> int:
    from .demo import STATE_DIR, start_sandbox

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    server = start_sandbox(STATE_DIR, args.orders, args.seed, port=args.sandbox_port)
    deployment = CeleryDeployment(
        home=STATE_DIR / "celery" / "airflow",
        salesforce_connection=server.airflow_connection(),
        redis_db=args.redis_db,
        api_port=args.port,
    )
    print(f"Sandbox: {server.url}. Starting Airflow with the CeleryExecutor (logs in {deployment.home / 'processes'}) ...", flush=True)
    try:
        deployment.start()
        print(
            f"\nAirflow UI: {deployment.api_url}  (user admin, password {deployment.admin_password()})\n"
            f"Components: api-server, scheduler, dag-processor, triggerer, Celery workers {', '.join(WORKERS)}\n"
            f"Broker: {deployment.layout.broker_url}; metadata DB: {deployment.metadata_database}; "
            f"warehouse: {deployment.warehouse_url}\n"
            "Unpause salesforce_orders_import in the UI to start importing. Ctrl-C stops everything.",
            flush=True,
        )
        while True:
            deployment.check_running()
            time.sleep(1)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
        return 0
    except ComponentFailed as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 1
    finally:
        deployment.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    start = commands.add_parser("up", help="start the deployment (the default)")
    start.add_argument("--orders", type=int, default=500, help="orders in the demo org (first start only)")
    start.add_argument("--seed", type=int, default=7)
    start.add_argument("--port", type=int, default=8080, help="Airflow UI and API port")
    start.add_argument("--sandbox-port", type=int, default=8443)
    start.add_argument("--redis-db", type=int, default=0, help="the broker's Redis database number")
    write_secrets = commands.add_parser("secrets", help="write the shared JWT secret and Fernet key into DIR")
    write_secrets.add_argument("directory", type=Path)
    args = parser.parse_args(argv or sys.argv[1:] or ["up"])
    if args.command == "secrets":
        ensure_shared_secrets(args.directory)
        return 0
    return up(args)


if __name__ == "__main__":
    sys.exit(main())
