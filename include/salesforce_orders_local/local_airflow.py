"""Starting and stopping a local Airflow made of separate processes, on a PostgreSQL metadata DB.

What ``make up-celery`` (celery_deployment.py), ``make bench-latency`` (bench_latency.py) and the
real-scheduler tests (tests/scheduler) share: the PostgreSQL databases, the environment of an
Airflow running this project's DAGs and plugins with its Connections and Variable, the migrated
metadata DB, and the components as processes that are launched, waited for (failing with the end
of their logs), and stopped with everything they started. Each caller chooses its executor, its
components and what it waits for.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from .airflow_env import (
    connection_env,
    ensure_pool,
    postgres_warehouse_connection,
    project_airflow_env,
    variable_env,
)

LOG_TAIL_CHARS = 4000
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ComponentFailed(RuntimeError):
    """A process of the deployment exited or never became ready; the message has its log's end."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# PostgreSQL databases
# ---------------------------------------------------------------------------------------


def database_url(server_url: Any, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(server_url).set(database=database).render_as_string(hide_password=False)


def _for_each_database(server_url: Any, names: tuple[str, ...], act: Callable[[Any, str, str], None]) -> None:
    """``act(connection, quoted name, name)`` for each database name, on the server's maintenance
    database, outside any transaction (CREATE and DROP DATABASE need that)."""
    import sqlalchemy as sa

    engine = sa.create_engine(database_url(server_url, "postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for name in names:
                if not _DATABASE_NAME.match(name):
                    raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
                act(conn, conn.dialect.identifier_preparer.quote(name), name)
    finally:
        engine.dispose()


def create_databases(server_url: Any, names: tuple[str, ...]) -> None:
    """Create the PostgreSQL databases that do not exist yet (others are left as they are)."""
    import sqlalchemy as sa

    def create(conn: Any, quoted: str, name: str) -> None:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
            conn.execute(sa.text(f"CREATE DATABASE {quoted}"))

    _for_each_database(server_url, names, create)


def drop_databases(server_url: Any, names: tuple[str, ...]) -> None:
    """Drop these databases, ending their sessions (for a throw-away deployment only)."""
    import sqlalchemy as sa

    _for_each_database(
        server_url, names, lambda conn, quoted, _name: conn.execute(sa.text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    )


@contextmanager
def throwaway_database(server_url: Any, prefix: str) -> Iterator[str]:
    """A new database named ``<prefix>_<random>`` on the server, dropped on exit; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    create_databases(server_url, (name,))
    try:
        yield database_url(server_url, name)
    finally:
        drop_databases(server_url, (name,))


# ---------------------------------------------------------------------------------------
# The environment and the metadata DB
# ---------------------------------------------------------------------------------------


def metadata_database_env(metadata_db_url: str) -> dict[str, str]:
    """Airflow's metadata DB settings for a PostgreSQL URL through psycopg 3."""
    scheme, rest = metadata_db_url.split("://", 1)
    if scheme != "postgresql+psycopg":
        raise ValueError(f"the metadata database must be PostgreSQL through psycopg 3, not {scheme!r}")
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url,
        # Airflow would derive asyncpg for its async engine; psycopg 3 does async itself.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": f"postgresql+psycopg_async://{rest}",
    }


def local_airflow_env(
    home: Path,
    *,
    metadata_db_url: str,
    api_url: str,
    salesforce_connection: Mapping[str, Any],
    warehouse_url: Any,
    import_config: Mapping[str, Any],
) -> dict[str, str]:
    """The environment of every process of a local Airflow running the import: this machine's,
    without any Airflow or import settings the caller had, plus this project's DAGs and plugins,
    the metadata DB, the api-server (``api_url``, as the task processes reach it), the Salesforce
    and warehouse (PostgreSQL, ``warehouse_url``) Connections and the import's Variable."""
    from sqlalchemy.engine import make_url

    inherited = {
        key: value for key, value in os.environ.items() if not key.startswith(("AIRFLOW", "SALESFORCE_ORDERS_", "_AIRFLOW"))
    }
    server = make_url(warehouse_url)
    warehouse = postgres_warehouse_connection(
        server.host or "127.0.0.1", server.port or 5432, server.database, server.username or "postgres", server.password
    )
    return {
        **inherited,
        **project_airflow_env(home),
        **metadata_database_env(metadata_db_url),
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url.rstrip('/')}/execution/",
        **connection_env("salesforce_default", salesforce_connection),
        **connection_env("orders_warehouse", warehouse),
        **variable_env("salesforce_orders_config", dict(import_config)),
        # the components' commands are the virtual environment's
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }


def airflow_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


def api_server_command(host: str, port: int) -> list[str]:
    return airflow_command("api-server", "--host", host, "--port", str(port), "--workers", "1")


def migrate_metadata_database(env: Mapping[str, str]) -> None:
    """``airflow db migrate`` on the metadata DB ``env`` points at, then the import's pool."""
    result = subprocess.run(airflow_command("db", "migrate"), env=dict(env), capture_output=True, text=True)
    if result.returncode:
        raise ComponentFailed(f"airflow db migrate exited {result.returncode}:\n{result.stderr[-LOG_TAIL_CHARS:]}")
    ensure_pool(env)


# ---------------------------------------------------------------------------------------
# The components as processes
# ---------------------------------------------------------------------------------------


@dataclass
class Component:
    """One Airflow process (``airflow scheduler``, a worker, …) with its log file."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    killed: bool = False  # on purpose (a test's kill): not a failure

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def launch(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            # A session of its own: Ctrl-C reaches only the caller, which stops the components in
            # order, and stopping the group stops what the component started (pools, task processes).
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return ""


def logs(components: Iterable[Component], chars: int = LOG_TAIL_CHARS) -> str:
    return "\n".join(f"--- {c.name} ({c.log_path})\n{c.log_tail(chars)}" for c in components)


def check_running(components: Iterable[Component]) -> None:
    """Raise :class:`ComponentFailed` with its log's end if a component exited (not on purpose)."""
    for component in components:
        if not component.running and not component.killed:
            code = component.process.returncode if component.process else None
            raise ComponentFailed(f"{component.name} exited ({code}); the end of {component.log_path}:\n{component.log_tail()}")


def wait_until(
    condition: Callable[[], Any], what: str, timeout: float, components: Iterable[Component], poll_seconds: float = 1.0
) -> Any:
    """Poll ``condition`` until it gives something truthy, and return that. Raise
    :class:`ComponentFailed` naming ``what`` if a component exits meanwhile, or when ``timeout``
    (a safety net, far beyond what a slow machine takes) runs out."""
    components = list(components)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        try:
            check_running(components)
        except ComponentFailed as exc:
            raise ComponentFailed(f"while waiting for {what}: {exc}") from None
        if time.monotonic() > deadline:
            raise ComponentFailed(f"never saw {what} within {timeout:.0f} s\n{logs(components)}")
        time.sleep(poll_seconds)


def api_answers(api_url: str) -> bool:
    """The api-server answers its health endpoint."""
    import requests

    try:
        return requests.get(f"{api_url}/api/v2/monitor/health", timeout=30).status_code == 200
    except requests.RequestException:  # not listening yet, or too busy starting to answer
        return False


def stop(components: Iterable[Component], timeout: float) -> None:
    """Stop the components, last started first: SIGTERM to each one's process group, then SIGKILL
    for whatever is left of it after ``timeout`` seconds."""
    started = [c for c in components if c.process is not None]
    for component in reversed(started):
        _signal_group(component.process, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for component in started:
        try:
            component.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(component.process, signal.SIGKILL)  # what outlived it (its session is its own)
        component.process.wait()


def kill(component: Component) -> None:
    """SIGKILL a component with everything it started, as if its machine went down."""
    component.killed = True
    _signal_group(component.process, signal.SIGKILL)
    component.process.wait()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except ProcessLookupError:
        pass


@contextmanager
def cleanup_on_signals(signals: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> Iterator[None]:
    """Within: SIGTERM (``timeout``, ``kill``) or SIGINT (Ctrl-C) ends the program as an exception
    would, so the ``with`` blocks and ``finally`` clauses inside stop the components (their own
    process groups) and drop what was created; Python's default for SIGTERM is to exit at once,
    leaving all of that behind. A repeated signal is ignored until that cleanup is done, so it
    cannot cut the cleanup short (SIGKILL still ends everything)."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        for each in signals:
            signal.signal(each, signal.SIG_IGN)
        print(f"\n{signal.Signals(signum).name}: stopping and cleaning up …", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = {each: signal.signal(each, leave) for each in signals}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)
