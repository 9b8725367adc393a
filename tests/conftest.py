"""Shared fixtures: warehouse engines (SQLite and PostgreSQL) and a TransformedOrder builder.

PostgreSQL is the server at ``TEST_POSTGRES_URL`` (default: 127.0.0.1:5432, user postgres,
database ``test``). Each test session works in its own schema, dropped at the end, so runs do
not collide. Without a reachable server the PostgreSQL tests are skipped with a loud reason,
unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

# Airflow reads its configuration when first imported: point it at the tests' own home inside
# the project (not ~/airflow, not the home `make run` uses) before any test imports it.
_PROJECT = Path(__file__).resolve().parents[1]
# Each pytest-xdist worker gets a home (and a metadata DB) of its own: two processes running
# dag.test() on one SQLite metadata DB would lock each other out.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
_AIRFLOW_HOME = _PROJECT / ".local" / ("airflow-test" if _WORKER is None else f"airflow-test-{_WORKER}")
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_PROJECT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(_PROJECT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"

@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """This session's Airflow home with its metadata DB migrated (once; kept between runs)."""
    from salesforce_orders_local.airflow_env import configure

    home = Path(os.environ["AIRFLOW_HOME"])
    configure(home)
    return home


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    """(orders, seed) of the sandbox org; a test directory's conftest overrides it."""
    return 240, 11


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, org_size: tuple[int, int]) -> Iterator[Any]:
    """A sandbox org on a free port for the module's tests."""
    from salesforce_sandbox.server import SandboxServer

    orders, seed = org_size
    with SandboxServer(port=0, orders=orders, seed=seed, state_dir=tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def org(sandbox: Any, org_size: tuple[int, int]) -> Iterator[Any]:
    """The sandbox org, re-seeded for this test, without faults and with fresh counters."""
    orders, seed = org_size
    sandbox.admin.clear_faults()
    sandbox.admin.reset(orders=orders, seed=seed, with_imported_status=True)
    sandbox.admin.reset_stats()
    yield sandbox
    sandbox.admin.clear_faults()


def activatable_orders(org: Any, count: int) -> list[str]:
    """Ids of ``count`` Draft orders of the sandbox org that have products (so they can be activated)."""
    ids = org.store.activatable_order_ids(count)
    assert len(ids) == count, "the seeded org has too few Draft orders with products"
    return ids


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class WarehouseTarget:
    """An engine and the schema the warehouse lives in (None: the engine's default)."""

    engine: sa.Engine
    schema: str | None

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """A fresh SQLite warehouse file (WAL, foreign keys on) for one test."""
    from salesforce_orders.warehouse import create_sqlite_engine

    engine = create_sqlite_engine(str(tmp_path / "warehouse.db"))
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_schema() -> str:
    """This session's own schema name."""
    return f"test_{os.getpid()}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def postgres_engine(postgres_schema: str) -> Iterator[sa.Engine]:
    """An engine on the test PostgreSQL server whose search_path is this session's schema."""
    from salesforce_orders.warehouse import warehouse_engine

    # as the import makes its engines: JSON through the warehouse's codec (exact amounts)
    engine = warehouse_engine(
        sa.make_url(POSTGRES_URL), connect_args={"options": f"-csearch_path={postgres_schema}", "connect_timeout": 3}
    )
    try:
        with engine.begin() as conn:
            conn.execute(sa.schema.CreateSchema(postgres_schema))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        problem = (
            f"POSTGRESQL NOT REACHABLE at {engine.url.render_as_string(hide_password=True)}: "
            f"{str(exc.orig).strip().splitlines()[0]}"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{problem} -- CI is set, so the PostgreSQL warehouse tests must run")
        pytest.skip(f"{problem} -- every PostgreSQL warehouse test is SKIPPED (start the server, or set CI=1 to fail instead)")
    yield engine
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(postgres_schema, cascade=True, if_exists=True))
    engine.dispose()


@contextmanager
def capture_statements(engine: sa.Engine) -> Iterator[list[str]]:
    """The SQL statements the engine sends to the database while the block runs (one per executemany)."""
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def capture_sql() -> Callable[[sa.Engine], Any]:
    """``with capture_sql(engine) as statements:`` records the SQL sent while the block runs."""
    return capture_statements


def _reset_schema(engine: sa.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
        conn.execute(sa.schema.CreateSchema(schema))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def warehouse(request: pytest.FixtureRequest) -> WarehouseTarget:
    """An empty warehouse target, once on SQLite and once on PostgreSQL (tables not created)."""
    if request.param == "sqlite":
        return WarehouseTarget(request.getfixturevalue("sqlite_engine"), None)
    return request.getfixturevalue("postgres_warehouse")


@pytest.fixture
def postgres_warehouse(postgres_engine: sa.Engine, postgres_schema: str) -> Iterator[WarehouseTarget]:
    """An empty warehouse target on PostgreSQL only (tables not created)."""
    _reset_schema(postgres_engine, postgres_schema)
    yield WarehouseTarget(postgres_engine, postgres_schema)
    _reset_schema(postgres_engine, postgres_schema)


RELEASED_WAREHOUSES = Path(__file__).resolve().parent / "fixtures" / "released_warehouses"


def _restore_release(engine: sa.Engine, schema: str | None, snapshot: str) -> None:
    sql = (RELEASED_WAREHOUSES / f"{snapshot}.{engine.dialect.name}.sql").read_text()
    with engine.begin() as conn:
        if schema:
            conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            conn.exec_driver_sql(f'SET LOCAL search_path TO "{schema}"')
        for statement in sql.split("\n;\n"):
            if statement.strip():
                conn.exec_driver_sql(statement)


@pytest.fixture
def restore_release() -> Callable[[sa.Engine, str | None, str], None]:
    """``restore_release(engine, schema, "release-845346c")``: a released warehouse in ``schema``, as
    that release's create_all left it (the DDL snapshots in tests/fixtures/released_warehouses)."""
    return _restore_release


@pytest.fixture
def created_warehouse(warehouse: WarehouseTarget) -> WarehouseTarget:
    """``warehouse`` with its tables and views created."""
    from salesforce_orders.schema_versions import create_all

    create_all(warehouse.engine, warehouse.schema)
    return warehouse


# ---------------------------------------------------------------------------------------
# TransformedOrder builder
# ---------------------------------------------------------------------------------------


def sf_id(prefix: str, n: int) -> str:
    """An 18-character Salesforce-style id: key prefix + zero-padded number + suffix."""
    return f"{prefix}{n:012d}AAA"


def build_transformed(
    n: int,
    *,
    account: int = 1,
    account_name: str = "Acme Corp",
    customer_id: str | None = None,
    parent_account: int | None = None,
    parent_name: str | None = "Acme Holding",
    items: tuple[tuple[int, str | None, float, float], ...] = ((1, "S1", 1.0, 100.0),),
    street: str = "1 Main St",
    city: str = "Springfield",
    notes: str | None = None,
    modstamp: str = "2026-01-02T03:04:05.000+0000",
    activated_at: str = "2026-01-02T03:00:00.000+0000",
    write_backs: bool = True,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """A TransformedOrder for order number ``n``; ``items``: (item number, service number, quantity, unit price).

    The content hash covers the business content (not ``modstamp``), as the transform's does.
    """
    from salesforce_orders import amounts
    from salesforce_orders.amounts import exact
    from salesforce_orders.model import (
        REQUEST,
        Address,
        CustomerRecord,
        ItemRecord,
        LocationRecord,
        OrderRecord,
        ServiceRecord,
        TransformedOrder,
        WriteBack,
    )

    order_id = sf_id("801", n)
    account_id = sf_id("001", account)
    customer = customer_id or f"C-{account}"
    parent_id = sf_id("001", parent_account) if parent_account else None
    parent_customer = f"C-{parent_account}" if parent_account else None
    address = Address(street, city, "IL", "62701", "United States", "US")
    location_id = hashlib.sha256(f"{customer}|{street}|{city}".encode()).hexdigest()
    item_records = tuple(
        ItemRecord(
            sf_order_item_id=sf_id("802", n * 100 + item_no),
            sf_order_id=order_id,
            product_code=f"P-{item_no}",
            product_name=f"Product {item_no} ü",
            quantity=qty,
            unit_price=price,
            total_price=qty * price,
            service_number=service,
            service_key=f"{order_id}:{service}" if service else f"{order_id}:item:{sf_id('802', n * 100 + item_no)}",
            metadata={},
            list_price=price,
            service_date="2026-01-02",
            sf_product_id=sf_id("01t", item_no),
            sf_pricebook_entry_id=sf_id("01u", item_no),
            product_family="Voice",
            product_is_active=True,
            pricebook_list_price=price,
        )
        for item_no, service, qty, price in ((no, service, exact(qty), exact(price)) for no, service, qty, price in items)
    )
    by_service: dict[str, list[Any]] = {}
    for item in item_records:
        by_service.setdefault(item.service_key, []).append(item)
    services = tuple(
        ServiceRecord(key, order_id, group[0].service_number, len(group), amounts.total(i.total_price for i in group), location_id)
        for key, group in by_service.items()
    )
    total = amounts.total(i.total_price for i in item_records)
    order = OrderRecord(
        sf_order_id=order_id,
        order_number=f"{n:08d}",
        external_name=f"SF-{n:08d} {account_name}",
        salesforce_url=f"https://example.my.salesforce.com/{order_id}",
        customer_id=customer,
        sf_account_id=account_id,
        account_name=account_name,
        status="Activated",
        status_code="Activated",
        order_type="New Service",
        effective_date="2026-01-02",
        activated_at=activated_at,
        total_amount=total,
        currency="USD",
        billing=address,
        service=address,
        service_address_source="shipping",
        location_id=location_id,
        destination=REQUEST,
        notes=notes,
        po_number=None,
        metadata=metadata or {},
        is_zero_total=total == 0,
        sf_created_at="2026-01-01T00:00:00.000+0000",
        sf_system_modstamp=modstamp,
    )
    customer_record = CustomerRecord(customer, account_id, account_name, parent_id, parent_customer, "salesforce", address)
    parent_record = (
        CustomerRecord(parent_customer, parent_id, parent_name, None, None, "salesforce", Address())
        if parent_account
        else None
    )
    wbs = (
        (
            WriteBack("Order", order_id, {"Status": "Imported"}, order_id, "mark_imported"),
            WriteBack("Account", account_id, {"Customer_ID__c": customer}, order_id, "set_customer_id"),
        )
        if write_backs
        else ()
    )
    content = repr((order.order_number, account_name, customer, parent_id, parent_name, items, street, city, notes, metadata))
    return TransformedOrder(
        order=order,
        items=item_records,
        services=services,
        customer=customer_record,
        parent_customer=parent_record,
        location=LocationRecord(location_id, customer, account_id, address),
        write_backs=wbs,
        content_hash=hashlib.sha256(content.encode()).hexdigest(),
    )


@pytest.fixture
def make_transformed() -> Callable[..., Any]:
    """The TransformedOrder builder (see ``build_transformed``)."""
    return build_transformed


# ---------------------------------------------------------------------------------------
# The External Orders pages, in-process
# ---------------------------------------------------------------------------------------


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Which methods on the import DAG's runs Airflow allows the pages' user; GET only by default
    (add "POST" to let them trigger). Airflow's own check is stood in for by this set."""
    from fastapi import HTTPException

    from salesforce_orders_ui import app as app_module

    methods = {"GET"}

    def check(method: str, request: Any, user: Any) -> None:
        if method not in methods:
            raise HTTPException(403, "Forbidden")

    monkeypatch.setattr(app_module, "_check_dag_run_access", check)
    return methods


@pytest.fixture
def external_orders_pages(allowed: set[str]) -> Callable[..., Any]:
    """``external_orders_pages(engine, schema)``: a test client of the External Orders app reading that
    warehouse, signed in as "oncall" (``problem=...`` instead: a warehouse that cannot be read)."""
    import time

    from fastapi.testclient import TestClient

    from salesforce_orders.warehouse import tables
    from salesforce_orders_ui import app as app_module

    @dataclass
    class User:
        name: str = "oncall"

        def get_name(self) -> str:
            return self.name

    @dataclass
    class Source:
        engine: sa.Engine | None
        schema: str | None
        problem: str | None

        def get(self) -> Any:
            if self.problem:
                raise app_module.WarehouseUnavailable(self.problem)
            return app_module.Warehouse(self.engine, tables(self.schema), ("orders_warehouse", self.schema), time.monotonic())

    def open_pages(
        engine: sa.Engine | None = None, schema: str | None = None, *, problem: str | None = None, schedule: Any = None
    ) -> TestClient:
        """``schedule``: what Airflow is to say of the import DAG (a ``salesforce_orders_ui.health.Schedule``)."""
        asked = {"schedule_of": lambda dag_id: schedule} if schedule is not None else {}
        app = app_module.create_app(Source(engine, schema, problem), **asked)
        app.dependency_overrides[app_module.current_user] = User
        return TestClient(app, root_path="/external-orders")

    return open_pages
