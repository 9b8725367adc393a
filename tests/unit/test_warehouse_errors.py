"""Statements the warehouse refuses, turned into short messages: real errors from SQLite and
PostgreSQL, each naming the connection, the table and what to do, never a bound value."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from salesforce_orders.schema_versions import create_all
from salesforce_orders.warehouse import create_sqlite_engine, tables, upsert
from salesforce_orders.warehouse.errors import explain

NOW = datetime(2026, 3, 1, tzinfo=UTC)
CARD = "4111 1111 1111 1111"


def customer(n: int, **values) -> dict:
    return {
        "customer_id": f"C-{n}", "sf_account_id": f"001{n:012d}AAA", "name": f"Customer {n}", "customer_id_source": "salesforce",
        "first_imported_at": NOW, "updated_at": NOW, "content_hash": "h" * 64, **values,
    }


def refused(engine: sa.Engine, write, *, schema: str | None = None, role: str | None = None) -> sa.exc.DBAPIError:
    """The error of ``write(conn)`` (as ``role``, when given)."""
    with pytest.raises(sa.exc.DBAPIError) as caught, engine.begin() as conn:
        if role:
            conn.exec_driver_sql(f'SET LOCAL ROLE "{role}"')
        write(conn)
    return caught.value


@pytest.fixture
def no_rights_role(postgres_engine, postgres_schema):
    """A role that may read the warehouse tables but not write them."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{role}"')
        conn.exec_driver_sql(f'GRANT USAGE ON SCHEMA "{postgres_schema}" TO "{role}"')
        conn.exec_driver_sql(f'GRANT SELECT ON ALL TABLES IN SCHEMA "{postgres_schema}" TO "{role}"')
    yield role
    with postgres_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
        conn.exec_driver_sql(f'DROP ROLE "{role}"')


def test_a_duplicate_key_names_the_table_and_constraint_not_the_values(created_warehouse):
    target = created_warehouse
    t = tables(target.schema)
    with target.engine.begin() as conn:
        conn.execute(sa.insert(t.customers), [customer(1)])
    same_id = customer(1, sf_account_id="001000000000999AAA", name=f"Card {CARD}")

    error = explain(refused(target.engine, lambda conn: conn.execute(sa.insert(t.customers), [same_id])), "orders_warehouse", stage="load")

    constraint = "pk_customers" if target.dialect == "postgresql" else "customers.customer_id"
    assert str(error).startswith(
        "load: The warehouse (Airflow connection 'orders_warehouse') refused a statement on table customers: "
        f"a row with the same key is there already (constraint {constraint}). Rows written by hand"
    )
    assert error.retry
    for value in ("C-1", "001000000000999AAA", CARD):
        assert value not in str(error) and value not in error.statement
    assert error.statement.startswith("INSERT INTO")


def test_raw_errors_of_warehouse_engines_hide_their_values(tmp_path: Path):
    engine = create_sqlite_engine(str(tmp_path / "w.db"))
    create_all(engine)
    t = tables()
    row = customer(1, name=f"Card {CARD}")
    with engine.begin() as conn:
        conn.execute(sa.insert(t.customers), [row])

    raw = refused(engine, lambda conn: conn.execute(sa.insert(t.customers), [row]))

    assert "[parameters:" not in str(raw) and "Card" not in str(raw)  # the statement's shape only
    assert CARD not in str(raw)


def test_a_read_only_sqlite_file_is_named(tmp_path: Path):
    path = tmp_path / "w.db"
    create_all(create_sqlite_engine(str(path)))
    read_only = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")

    error = explain(
        refused(read_only, lambda conn: conn.execute(sa.insert(tables().sync_state), [{"key": "k", "value": "v", "updated_at": NOW}])),
        "orders_warehouse",
    )

    assert str(error).startswith(
        "The warehouse (Airflow connection 'orders_warehouse') refused a statement on table sync_state: "
        "the database file is read-only for the Airflow worker. Make the file and its directory"
    )


@pytest.mark.postgres
def test_a_read_only_postgres_transaction_is_named(postgres_engine, postgres_schema):
    create_all(postgres_engine, postgres_schema)
    t = tables(postgres_schema)

    def write(conn):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")
        conn.execute(sa.insert(t.customers), [customer(1)])

    error = explain(refused(postgres_engine, write), "orders_warehouse")

    assert str(error).startswith(
        "The warehouse (Airflow connection 'orders_warehouse') refused a statement on table customers: "
        "the database is read-only for this connection. Point the connection at the primary"
    )
    assert error.retry


@pytest.mark.postgres
@pytest.mark.parametrize("rows", [1, 250], ids=["statement", "copy"])
def test_a_missing_privilege_names_the_table_and_is_not_retried(postgres_engine, postgres_schema, no_rights_role, rows):
    create_all(postgres_engine, postgres_schema)
    t = tables(postgres_schema)
    customers = [customer(n) for n in range(rows)]

    error = explain(
        refused(postgres_engine, lambda conn: upsert(conn, t.customers, customers, ["sf_account_id"]), role=no_rights_role),
        "orders_warehouse",
    )

    assert str(error).startswith(
        "The warehouse (Airflow connection 'orders_warehouse') refused a statement on table customers: this connection's "
        "role lacks a privilege (permission denied for table customers). Grant the role what the import needs"
    )
    assert not error.retry


@pytest.mark.postgres
def test_an_unexpected_refusal_keeps_the_servers_first_line_with_card_numbers_removed(postgres_engine):
    # an engine of its own, not the import's: the import's already hides the values a server echoes
    bare = sa.create_engine(postgres_engine.url)
    try:
        error = explain(refused(bare, lambda conn: conn.execute(sa.select(sa.cast(sa.literal(CARD), sa.Integer)))), "orders_warehouse")
    finally:
        bare.dispose()

    assert str(error) == (
        "The warehouse (Airflow connection 'orders_warehouse') refused a statement: invalid input syntax for type integer: "
        '"[card ending 1111]" (SQLSTATE 22P02). The failed statement\'s shape is in the log above. Airflow retries the task.'
    )
    assert CARD not in error.statement
