"""The warehouse's schema and rights, through the import's stages: an old warehouse upgraded by
the first task of a run, a dropped view brought back, a least-privilege PostgreSQL role running
the import after the owner upgraded, and the warehouse's refusals said in short messages."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowFailException

from salesforce_orders.schema_versions import head_version
from salesforce_orders.warehouse.errors import WarehouseError
from salesforce_orders_local.airflow_env import postgres_warehouse_connection

CLI = Path(sys.executable).with_name("salesforce-orders-warehouse")


def loaded_orders(p) -> int:
    return p.scalar("SELECT COUNT(*) FROM external_orders")


def schema_version(p) -> str | None:
    return p.scalar("SELECT version_num FROM warehouse_schema_version")


def owner_cli(p, *args: str) -> str:
    """``salesforce-orders-warehouse`` as the schema's owner (the tests' superuser) would run it."""
    url = p.engine.url.render_as_string(hide_password=False)
    done = subprocess.run([str(CLI), *args, "--url", url, "--schema", p.schema], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def short_and_without_sql(message: str) -> None:
    assert len(message) < 700, message
    for raw in ("[SQL", "[parameters", "INSERT INTO", "COPY ", "Background on this error"):
        assert raw not in message, message


# ---------------------------------------------------------------------------------------
# Upgrades through a run
# ---------------------------------------------------------------------------------------


def test_a_warehouse_of_the_first_release_is_upgraded_by_the_first_task_and_the_run_completes(pipeline, restore_release):
    restore_release(pipeline.engine, pipeline.schema, "release-845346c")
    expected = pipeline.expected_order_ids()

    run = pipeline.run(until="load")

    assert run.succeeded, run.error
    assert schema_version(pipeline) == head_version()
    assert pipeline.scalar("SELECT COUNT(*) FROM external_orders") == len(expected) - pipeline.scalar(
        "SELECT COUNT(DISTINCT sf_order_id) FROM quarantined_orders"
    )


def test_a_dropped_view_comes_back_with_the_next_run(pipeline):
    assert pipeline.run(until="extract").succeeded
    pipeline.execute("DROP VIEW v_open_failures")
    pipeline.execute("DROP VIEW v_revenue_by_day")

    assert pipeline.run(until="extract").succeeded

    views = set(sa.inspect(pipeline.engine).get_view_names(schema=pipeline.schema))
    assert {"v_open_failures", "v_revenue_by_day"} <= views
    assert pipeline.query("SELECT * FROM v_revenue_by_day") is not None


# ---------------------------------------------------------------------------------------
# A least-privilege role (PostgreSQL)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def import_role(postgres_pipeline) -> Iterator[str]:
    """A login role with no rights of its own: no CREATE on the database, nothing in any schema."""
    p = postgres_pipeline
    role = f"importer_{uuid.uuid4().hex[:8]}"
    with p.engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}" LOGIN')
        database = conn.execute(sa.select(sa.func.current_database())).scalar()
        assert not conn.execute(sa.select(sa.func.has_database_privilege(role, database, "CREATE"))).scalar()
    yield role
    with p.engine.begin() as conn:
        conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"), {"r": role})
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE "{role}"')


def grant_as_documented(p, role: str) -> None:
    """The owner runs what ``salesforce-orders-warehouse grants`` prints (docs/warehouse.md)."""
    statements = owner_cli(p, "grants", role)
    with p.engine.begin() as conn:
        for statement in statements.split(";"):
            if statement.strip():
                conn.exec_driver_sql(statement)


def connect_as(p, role: str, **extra: Any) -> None:
    url = p.engine.url
    connection = postgres_warehouse_connection(url.host, url.port or 5432, url.database, role)
    p.set_connection("orders_warehouse", {**connection, **({"extra": extra} if extra else {})})


def test_a_least_privilege_role_runs_the_import_once_the_owner_has_upgraded(postgres_pipeline, import_role):
    p = postgres_pipeline
    assert f"created at schema version {head_version()}" in owner_cli(p, "upgrade")
    grant_as_documented(p, import_role)
    with p.engine.connect() as conn:
        assert not conn.execute(sa.select(sa.func.has_schema_privilege(import_role, p.schema, "CREATE"))).scalar()
    connect_as(p, import_role)
    expected = p.expected_order_ids()

    first, second = p.run(), p.run()

    assert first.succeeded, first.error
    assert second.succeeded, second.error
    assert p.scalar("SELECT COUNT(*) FROM external_orders") + p.scalar("SELECT COUNT(DISTINCT sf_order_id) FROM quarantined_orders") == len(expected)
    assert p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE state <> 'DONE'") == 0
    assert p.scalar("SELECT status FROM import_runs WHERE run_id = :r", r=second.run_id) == "success"


def test_an_import_role_that_may_not_upgrade_the_schema_says_so_and_who_should(postgres_pipeline, import_role, restore_release):
    p = postgres_pipeline
    restore_release(p.engine, p.schema, "release-7bdb8f0")  # the warehouse the previous release left
    grant_as_documented(p, import_role)
    connect_as(p, import_role)
    calls = p.org.admin.stats()["calls"]["total"]

    run = p.run()

    assert run.failed_stage == "extract"
    assert isinstance(run.error, AirflowFailException)  # not retried: only the owner can fix it
    message = str(run.error)
    assert message.startswith("The warehouse (Airflow connection 'orders_warehouse', postgresql+psycopg://importer_")
    assert f"an upgrade to schema version {head_version()}" in message
    assert "this connection's role may not change the schema (permission denied" in message
    assert "Have the schema's owner run `salesforce-orders-warehouse upgrade`" in message
    assert p.org.admin.stats()["calls"]["total"] == calls  # Salesforce untouched
    assert p.scalar("SELECT COUNT(*) FROM import_runs") == 0

    assert f"upgraded from schema version 0002 to {head_version()}" in owner_cli(p, "upgrade")
    assert p.run(until="load").succeeded


# ---------------------------------------------------------------------------------------
# The warehouse refuses a statement
# ---------------------------------------------------------------------------------------


def test_a_read_only_warehouse_is_named_with_the_table_and_what_to_do(postgres_pipeline):
    p = postgres_pipeline
    assert p.run(until="extract").succeeded
    url = p.engine.url
    connect_as(p, url.username, options="-c default_transaction_read_only=on")

    run = p.run(until="extract")

    assert isinstance(run.error, WarehouseError) and run.error.retry  # Airflow retries: a fail-over may be under way
    message = str(run.error)
    assert message.startswith(
        "extract: The warehouse (Airflow connection 'orders_warehouse') refused a statement on table import_runs: "
        "the database is read-only for this connection. Point the connection at the primary (writable) server"
    )
    short_and_without_sql(message)


def test_a_missing_privilege_is_named_with_the_table_and_not_retried(postgres_pipeline, import_role):
    p = postgres_pipeline
    owner_cli(p, "upgrade")
    grant_as_documented(p, import_role)
    p.execute(f'REVOKE INSERT ON external_orders FROM "{import_role}"')
    connect_as(p, import_role)

    run = p.run()

    assert run.failed_stage == "load"
    assert isinstance(run.error, AirflowFailException)
    message = str(run.error)
    assert message.startswith(
        "load: The warehouse (Airflow connection 'orders_warehouse') refused a statement on table external_orders: "
        "this connection's role lacks a privilege (permission denied for table external_orders"
    )
    assert "). Grant the role what the import needs" in message
    assert "salesforce-orders-warehouse grants" in message
    short_and_without_sql(message)
    assert loaded_orders(p) == 0
    assert p.scalar("SELECT COUNT(*) FROM quarantined_orders WHERE CAST(failed_checks AS TEXT) LIKE '%warehouse_refused%'") == 0


def test_a_duplicate_key_written_by_hand_quarantines_that_order_naming_the_constraint_not_the_values(pipeline):
    """A refusal about one order's row (here a key that a hand-written row holds) is that order's:
    it is quarantined and the rest loaded. Refusals about every row fail the task (tests above)."""
    p = pipeline
    assert p.run(until="load").succeeded
    order = p.query(
        "SELECT o.sf_order_id, o.order_number, c.customer_id, c.sf_account_id FROM external_orders o "
        "JOIN customers c ON c.customer_id = o.customer_id ORDER BY o.sf_order_id LIMIT 1"
    )[0]
    # someone re-pointed the customer row at another account by hand: the account's next load collides on its id
    p.execute("UPDATE customers SET sf_account_id = '001HANDEDITED00001' WHERE customer_id = :c", c=order["customer_id"])
    p.org_update("Order", order["sf_order_id"], Description="changed after the first load")

    run = p.run({"order_numbers": [order["order_number"]]}, until="load")

    assert run.succeeded, run.error
    assert run.results["load"]["refused"] == 1
    (refusal,) = p.query("SELECT failed_checks, details FROM quarantined_orders WHERE run_id = :r", r=run.run_id)
    message = refusal["details"] if isinstance(refusal["details"], str) else json.dumps(refusal["details"])
    constraint = "pk_customers" if p.dialect == "postgresql" else "customers.customer_id"
    assert "warehouse_refused" in str(refusal["failed_checks"]) and constraint in message
    for value in (order["customer_id"], order["sf_account_id"]):
        assert value not in message
