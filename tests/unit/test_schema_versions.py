"""The warehouse's schema versions: every released warehouse upgraded to what a fresh create makes,
on SQLite and PostgreSQL; empty warehouses created; views recreated; upgraders serialised.

The released warehouses are DDL snapshots of what each release's ``create_all`` left
(``tests/fixtures/released_warehouses``, rebuilt from git history by ``snapshot.py`` there,
replayed by the ``restore_release`` fixture).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from salesforce_orders import schema_versions
from salesforce_orders.schema_versions import (
    VERSION_TABLE,
    SchemaVersionError,
    head_version,
    read_state,
    upgrade,
)
from salesforce_orders.warehouse import VIEWS, create_sqlite_engine, tables, views_fingerprint

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# snapshot -> the schema version it is recognised as, per dialect. SQLite has no lz4: the
# second and third releases' SQLite warehouses are the same, so both are the third's.
RELEASED = {
    "release-845346c": {"sqlite": "0001", "postgresql": "0001"},
    "release-7bdb8f0": {"sqlite": "0003", "postgresql": "0002"},
    "release-296dda5": {"sqlite": "0003", "postgresql": "0003"},
    "kept-up-845346c-7bdb8f0-296dda5": {"sqlite": "0001", "postgresql": "0001"},
}

ORDER_ID, ACCOUNT_ID = "801000000000001AAA", "001000000000001AAA"
# A loaded order with everything around it, in the columns the first release already had:
# it must come through every upgrade as it was.
SAMPLE_ROWS: dict[str, dict[str, Any]] = {
    "customers": {
        "customer_id": "C-1", "sf_account_id": ACCOUNT_ID, "name": "Zoë's Café", "customer_id_source": "salesforce",
        "is_multi_location": False, "location_count": 1, "billing_city": "Springfield", "first_imported_at": NOW,
        "updated_at": NOW, "content_hash": "c" * 64,
    },
    "external_orders": {
        "sf_order_id": ORDER_ID, "order_number": "00000101", "external_name": "SF-00000101 Zoë's Café",
        "salesforce_url": f"https://example.my.salesforce.com/{ORDER_ID}", "customer_id": "C-1", "sf_account_id": ACCOUNT_ID,
        "total_amount": 150.25, "activated_at": NOW, "service_address_source": "shipping", "destination": "request",
        "metadata": {"Region": "EMEA"}, "is_zero_total": False, "content_hash": "o" * 64, "lifecycle_state": "COMPLETE",
        "sf_state": "active", "sf_state_changed_at": NOW, "first_imported_at": NOW, "last_imported_at": NOW,
        "last_run_id": "scheduled__2026-03-01",
    },
    "external_order_items": {
        "sf_order_item_id": "802000000000001AAA", "sf_order_id": ORDER_ID, "quantity": 1.0, "unit_price": 150.25,
        "total_price": 150.25, "service_key": f"{ORDER_ID}:S1", "service_number": "S1", "metadata": {},
        "last_run_id": "scheduled__2026-03-01",
    },
    "order_services": {"service_key": f"{ORDER_ID}:S1", "sf_order_id": ORDER_ID, "item_count": 1, "total_amount": 150.25},
    "writeback_outbox": {
        "sf_object": "Order", "sf_record_id": ORDER_ID, "sf_order_id": ORDER_ID, "action": "mark_imported",
        "fields": {"Status": "Imported"}, "state": "DONE", "attempts": 1, "created_run_id": "scheduled__2026-03-01",
        "updated_run_id": "scheduled__2026-03-01", "created_at": NOW, "updated_at": NOW,
    },
    "quarantined_orders": {
        "run_id": "scheduled__2026-03-01", "sf_order_id": "801000000000002AAA", "order_number": "00000102",
        "failed_checks": ["has_products"], "details": {"has_products": "no products"}, "quarantined_at": NOW,
    },
    "import_runs": {"run_id": "scheduled__2026-03-01", "status": "success", "extracted": 2, "inserted": 1, "started_at": NOW},
    "sync_state": {"key": "orders.system_modstamp", "value": "2026-03-01T11:59:00Z", "updated_at": NOW},
}


def _columns_of(table: str, names: list[str], schema: str | None) -> sa.TableClause:
    """Just these columns of the table, typed as today's code types them (how it will read them)."""
    current = getattr(tables(schema), table)
    return sa.table(table, *(sa.column(name, current.c[name].type) for name in names), schema=schema)


def insert_sample_rows(engine: sa.Engine, schema: str | None) -> None:
    with engine.begin() as conn:
        for table, row in SAMPLE_ROWS.items():
            conn.execute(sa.insert(_columns_of(table, list(row), schema)).values(row))


def sample_rows_as_stored(engine: sa.Engine, schema: str | None) -> dict[str, list[dict[str, Any]]]:
    """The sample rows as they are stored now, each found by its first column."""
    stored = {}
    with engine.connect() as conn:
        for table, row in SAMPLE_ROWS.items():
            columns = _columns_of(table, list(row), schema)
            first = next(iter(row))
            stored[table] = [dict(r) for r in conn.execute(sa.select(columns).where(columns.c[first] == row[first])).mappings()]
    return stored


def structure(engine: sa.Engine, schema: str | None) -> dict[str, Any]:
    """Tables (columns, types, keys, indexes, constraints), views and, on PostgreSQL, column
    compression: what must be the same after an upgrade as after a fresh create."""
    def unqualified(text: str) -> str:
        text = " ".join(text.split())
        return text.replace(f'"{schema}".', "").replace(f"{schema}.", "") if schema else text

    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        result: dict[str, Any] = {}
        for name in sorted(inspector.get_table_names(schema=schema)):
            foreign_keys = [{**fk, "referred_schema": None} for fk in inspector.get_foreign_keys(name, schema=schema)]
            result[name] = {
                "columns": {
                    c["name"]: (str(c["type"]), c["nullable"], unqualified(str(c.get("default")))) for c in inspector.get_columns(name, schema=schema)
                },
                "primary_key": inspector.get_pk_constraint(name, schema=schema),
                "foreign_keys": sorted(json.dumps(fk, sort_keys=True) for fk in foreign_keys),
                "indexes": sorted((ix["name"], tuple(ix["column_names"]), bool(ix["unique"])) for ix in inspector.get_indexes(name, schema=schema)),
                "unique": sorted((u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints(name, schema=schema)),
                "checks": sorted((c["name"], unqualified(c["sqltext"])) for c in inspector.get_check_constraints(name, schema=schema)),
            }
        result["views"] = {
            name: unqualified(inspector.get_view_definition(name, schema=schema)) for name in sorted(inspector.get_view_names(schema=schema))
        }
        if conn.dialect.name == "postgresql":
            result["compression"] = sorted(
                conn.execute(
                    sa.text(
                        "SELECT c.relname, a.attname, a.attcompression FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND a.attnum > 0 "
                        "AND a.attcompression <> ''"
                    ),
                    {"schema": schema},
                ).all()
            )
    return result


@pytest.fixture
def fresh(warehouse, tmp_path) -> Iterator[Callable[[], dict[str, Any]]]:
    """The structure of a warehouse created from scratch by today's code, next to ``warehouse``."""
    if warehouse.dialect == "sqlite":
        engine, schema = create_sqlite_engine(str(tmp_path / "fresh.db")), None
    else:
        engine, schema = warehouse.engine, f"{warehouse.schema}_fresh"

    def build() -> dict[str, Any]:
        upgrade(engine, schema)
        return structure(engine, schema)

    yield build
    if schema:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    else:
        engine.dispose()


def version_rows(target) -> list[str]:
    with target.engine.connect() as conn:
        return conn.execute(sa.select(sa.table(VERSION_TABLE, sa.column("version_num"), schema=target.schema))).scalars().all()


def state(target):
    with target.engine.connect() as conn:
        return read_state(conn, tables(target.schema))


# ---------------------------------------------------------------------------------------
# Released warehouses
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("snapshot", list(RELEASED))
def test_a_released_warehouse_is_recognised_and_upgraded_to_what_a_fresh_create_makes(warehouse, fresh, snapshot, restore_release):
    restore_release(warehouse.engine, warehouse.schema, snapshot)
    insert_sample_rows(warehouse.engine, warehouse.schema)
    before = sample_rows_as_stored(warehouse.engine, warehouse.schema)
    recognised_as = RELEASED[snapshot][warehouse.dialect]

    done = upgrade(warehouse.engine, warehouse.schema)

    assert done[0] == f"created before schema versions; recognised as schema version {recognised_as}"
    if recognised_as != head_version():
        assert f"upgraded from schema version {recognised_as} to {head_version()}" in done
    assert version_rows(warehouse) == [head_version()]
    assert structure(warehouse.engine, warehouse.schema) == fresh()
    assert sample_rows_as_stored(warehouse.engine, warehouse.schema) == before == {t: [row] for t, row in SAMPLE_ROWS.items()}
    assert state(warehouse).views_fingerprint == views_fingerprint(tables(warehouse.schema), warehouse.engine.dialect)
    assert upgrade(warehouse.engine, warehouse.schema) == []


def test_a_versioned_warehouse_at_an_older_version_is_migrated_to_the_newest(warehouse, fresh, restore_release):
    restore_release(warehouse.engine, warehouse.schema, "release-845346c")
    with warehouse.engine.begin() as conn:  # as an earlier deployment of versioned code would have left it
        command.stamp(schema_versions._alembic_config(conn, warehouse.schema), "0001")

    done = upgrade(warehouse.engine, warehouse.schema)

    assert done[0] == f"upgraded from schema version 0001 to {head_version()}"
    assert version_rows(warehouse) == [head_version()]
    assert structure(warehouse.engine, warehouse.schema) == fresh()


def test_a_batch_staged_before_migration_0011_is_read_as_staged_after_it(warehouse, restore_release, make_transformed):
    """A run that staged its transformed batches as JSON (release 296dda5) and is retried after the
    upgrade: its load reads the same orders from the bytes the batches became."""
    from salesforce_orders.staging import iter_transformed, transformed_to_json

    restore_release(warehouse.engine, warehouse.schema, "release-296dda5")
    records = [make_transformed(n, account_name=f"Kunde Nr. {n} — Müller 東京") for n in (1, 2, 3)]
    as_json = sa.table(
        "stg_transformed_batches", sa.column("run_id"), sa.column("first_order_id"), sa.column("order_count"),
        sa.column("payload", sa.JSON), sa.column("staged_at"), schema=warehouse.schema,
    )
    with warehouse.engine.begin() as conn:  # as the released code staged it: a json column
        conn.execute(as_json.insert().values(
            run_id="r", first_order_id=records[0].order.sf_order_id, order_count=3, staged_at=NOW,
            payload=[json.loads(transformed_to_json(r)) for r in records],
        ))

    upgrade(warehouse.engine, warehouse.schema)

    assert [r for chunk in iter_transformed(warehouse.engine, "r", schema=warehouse.schema) for r in chunk] == records


def test_an_empty_warehouse_is_created_at_the_newest_version(warehouse, fresh):
    done = upgrade(warehouse.engine, warehouse.schema)

    assert done == [f"created at schema version {head_version()}", f"views created: {', '.join(VIEWS)}"]
    assert version_rows(warehouse) == [head_version()]
    assert set(state(warehouse).views) == set(VIEWS)
    assert structure(warehouse.engine, warehouse.schema) == fresh()


def test_a_dropped_view_comes_back_and_a_current_warehouse_costs_no_ddl(created_warehouse, capture_sql):
    target = created_warehouse
    with capture_sql(target.engine) as statements:
        assert upgrade(target.engine, target.schema) == []
    assert not [s for s in statements if s.lstrip().upper().startswith(("CREATE", "DROP", "ALTER", "INSERT", "UPDATE"))]

    prefix = f'"{target.schema}".' if target.schema else ""
    with target.engine.begin() as conn:
        conn.exec_driver_sql(f"DROP VIEW {prefix}v_revenue_by_day")
        conn.exec_driver_sql(f"DROP VIEW {prefix}v_open_failures")

    assert upgrade(target.engine, target.schema) == ["views created: v_revenue_by_day, v_open_failures"]
    assert set(state(target).views) == set(VIEWS)


def test_a_task_at_the_head_never_imports_alembic_or_its_migrations(tmp_path):
    """Every task checks the schema first; at the head that check reads the head from the scripts'
    names: Alembic and the migrations are imported only when there is work to do."""
    path = tmp_path / "warehouse.db"
    check = (
        "import sys\n"
        "from salesforce_orders.schema_versions import upgrade\n"
        "from salesforce_orders.warehouse import create_sqlite_engine\n"
        f"done = upgrade(create_sqlite_engine({str(path)!r}))\n"
        "print(bool(done), sorted(m for m in sys.modules if m == 'alembic' or 'migrations.versions' in m))\n"
    )

    def task() -> str:
        return subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True).stdout.strip()

    assert task().startswith("True ['alembic'")  # the first one creates the warehouse, through Alembic
    assert task() == "False []"


def test_a_warehouse_newer_than_the_code_is_refused_untouched(created_warehouse):
    target = created_warehouse
    with target.engine.begin() as conn:
        conn.execute(sa.update(sa.table(VERSION_TABLE, sa.column("version_num"), schema=target.schema)).values(version_num="0099"))

    with pytest.raises(SchemaVersionError, match=rf"schema version 0099, which this code does not know \(its newest is {head_version()}\)"):
        upgrade(target.engine, target.schema)
    assert version_rows(target) == ["0099"]


def test_tables_that_are_not_a_warehouse_are_left_alone(warehouse):
    prefix = f'"{warehouse.schema}".' if warehouse.schema else ""
    with warehouse.engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {prefix}customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.exec_driver_sql(f"INSERT INTO {prefix}customers VALUES (1, 'kept')")

    with pytest.raises(SchemaVersionError, match="not a warehouse any release created. Nothing was changed"):
        upgrade(warehouse.engine, warehouse.schema)
    with warehouse.engine.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT name FROM {prefix}customers").scalars().all() == ["kept"]
    assert set(state(warehouse).tables) == {"customers"}


def test_a_failed_upgrade_leaves_the_warehouse_as_it_was(warehouse, monkeypatch, restore_release):
    restore_release(warehouse.engine, warehouse.schema, "release-845346c")
    before = structure(warehouse.engine, warehouse.schema)

    def broken(*_args: Any) -> list[str]:
        raise RuntimeError("disk full")

    monkeypatch.setattr(schema_versions, "ensure_views", broken)  # the last step, after the migrations
    with pytest.raises(RuntimeError, match="disk full"):
        upgrade(warehouse.engine, warehouse.schema)

    assert structure(warehouse.engine, warehouse.schema) == before
    assert VERSION_TABLE not in state(warehouse).tables


# ---------------------------------------------------------------------------------------
# Two upgraders at once
# ---------------------------------------------------------------------------------------


def _engine_like(target, tmp_path: Path) -> sa.Engine:
    """Another engine on the same warehouse, as another task process would have."""
    if target.dialect == "sqlite":
        return create_sqlite_engine(target.engine.url.database)
    return sa.create_engine(target.engine.url, connect_args={"options": f"-csearch_path={target.schema}"})


def _waiting_for_advisory_lock(engine: sa.Engine) -> bool:
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted").scalar())


@pytest.mark.parametrize("snapshot", [None, "release-845346c"], ids=["empty", "first-release"])
def test_two_runs_upgrading_at_once_both_succeed_and_the_work_is_done_once(warehouse, fresh, tmp_path, snapshot, restore_release):
    """The first upgrader holds the lock until the second has seen the old schema and is waiting
    for the lock (on PostgreSQL: blocked on it, as pg_locks shows). The second then finds the work done."""
    if snapshot:
        restore_release(warehouse.engine, warehouse.schema, snapshot)
    first_engine, second_engine = _engine_like(warehouse, tmp_path), _engine_like(warehouse, tmp_path)
    first_locked, second_at_lock = threading.Event(), threading.Event()
    lock_statement = "BEGIN IMMEDIATE" if warehouse.dialect == "sqlite" else "pg_advisory_xact_lock"

    def first_holds_the_lock(_conn, _cursor, statement, *_args):
        if lock_statement in statement:
            first_locked.set()
            assert second_at_lock.wait(60), "the second upgrader never reached the lock"
            deadline = time.monotonic() + 60
            while warehouse.dialect == "postgresql" and not _waiting_for_advisory_lock(warehouse.engine):
                assert time.monotonic() < deadline, "the second upgrader never waited for the lock"

    def second_reaches_the_lock(_conn, _cursor, statement, *_args):
        if lock_statement in statement:
            second_at_lock.set()

    sa.event.listen(first_engine, "after_cursor_execute", first_holds_the_lock)
    sa.event.listen(second_engine, "before_cursor_execute", second_reaches_the_lock)
    results: dict[str, Any] = {}

    def run(name: str, engine: sa.Engine) -> None:
        try:
            results[name] = upgrade(engine, warehouse.schema)
        except Exception as exc:  # reported by the assertions below
            results[name] = exc

    first = threading.Thread(target=run, args=("first", first_engine))
    first.start()
    assert first_locked.wait(60)
    second = threading.Thread(target=run, args=("second", second_engine))
    second.start()
    first.join(120)
    second.join(120)
    first_engine.dispose()
    second_engine.dispose()

    assert not isinstance(results["first"], Exception), results["first"]
    assert results["second"] == []  # it waited, then found nothing to do
    assert any("schema version" in line for line in results["first"])
    assert version_rows(warehouse) == [head_version()]
    assert structure(warehouse.engine, warehouse.schema) == fresh()


# ---------------------------------------------------------------------------------------
# The migrations themselves
# ---------------------------------------------------------------------------------------


def test_migrations_form_one_line_numbered_in_their_file_names():
    scripts = schema_versions._scripts()
    assert scripts.get_heads() == [head_version()]
    versions = schema_versions.known_versions()
    assert versions == [f"{n:04d}" for n in range(1, len(versions) + 1)]
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_")


def test_a_new_migration_is_numbered_after_the_head_and_follows_it(tmp_path, monkeypatch):
    head = head_version()
    number = f"{int(head) + 1:04d}"
    copy = tmp_path / "migrations"
    shutil.copytree(schema_versions.MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(schema_versions, "MIGRATIONS_DIR", copy)
    schema_versions._scripts.cache_clear()
    try:
        path = schema_versions.new_migration("add card_data_masked to external_orders")
        text = path.read_text()
    finally:
        schema_versions._scripts.cache_clear()

    assert path.parent == copy / "versions"
    assert path.name == f"{number}_add_card_data_masked_to_external_orders.py"
    assert f'revision = "{number}"' in text and f'down_revision = "{head}"' in text
    compile(text, str(path), "exec")
