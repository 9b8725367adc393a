"""A failed warehouse statement never carries the row values it was writing into an exception
text or a task log: the statement's shape and the failing order's id, never the parameters."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from salesforce_orders.schema_versions import create_all
from salesforce_orders.warehouse import COPY_MIN_ROWS, tables, upsert, warehouse_engine

CARD = "4111111111111111"
NAME = "Zoë Personal-Name"
STREET = "12 Private Lane"


def _made_as_the_import_makes_it(target) -> tuple[sa.Engine, str | None]:
    """An engine on ``target``'s database made as the import makes its engines, and the tables."""
    engine = warehouse_engine(target.engine.url)
    create_all(engine, target.schema)
    return engine, target.schema


@pytest.fixture
def engine(warehouse) -> Iterator[tuple[sa.Engine, str | None]]:
    """Once on SQLite, once on PostgreSQL."""
    made = _made_as_the_import_makes_it(warehouse)
    yield made
    made[0].dispose()


@pytest.fixture
def pg_engine(postgres_warehouse) -> Iterator[tuple[sa.Engine, str | None]]:
    made = _made_as_the_import_makes_it(postgres_warehouse)
    yield made
    made[0].dispose()


def order_row(n: int, **changes) -> dict:
    from datetime import UTC, datetime

    now = datetime(2026, 1, 2, tzinfo=UTC)
    row = {
        "sf_order_id": f"801{n:012d}AAA",
        "order_number": f"{n:08d}",
        "external_name": f"SF-{n:08d} {NAME}",
        "salesforce_url": "https://example.my.salesforce.com/x",
        "customer_id": "C-1",
        "sf_account_id": "001000000000001AAA",
        "account_name": NAME,
        "billing_street": STREET,
        "notes": f"card {CARD}",
        "service_address_source": "shipping",
        "destination": "request",
        "metadata": {"po": CARD},
        "is_zero_total": False,
        "content_hash": "h" * 64,
        "lifecycle_state": "READY",
        "sf_state": "active",
        "sf_state_changed_at": now,
        "first_imported_at": now,
        "last_imported_at": now,
        "last_run_id": "run-1",
    }
    row.update(changes)
    return row


def failure_text(exc: BaseException) -> str:
    """Everything a task log shows of an exception: its chained traceback, as Airflow prints it."""
    return "".join(traceback.format_exception(exc))


def assert_tells_no_row_values(text: str) -> None:
    for value in (CARD, NAME, STREET, "Failing row", "DETAIL", "CONTEXT", "[parameters:"):
        assert value not in text, f"{value!r} in:\n{text}"


def write(engine, schema, rows):
    with engine.begin() as conn:
        upsert(conn, tables(schema).external_orders, rows, ["sf_order_id"])


@pytest.mark.parametrize("rows", [1, 5, COPY_MIN_ROWS + 5], ids=["one row", "a few rows", "COPY"])
def test_a_refused_row_is_told_by_the_statements_shape_and_its_order(engine, rows, caplog):
    engine, schema = engine
    bad = min(3, rows - 1)
    batch = [order_row(n, external_name=None if n == bad else f"SF-{n:08d} {NAME}") for n in range(rows)]
    with pytest.raises(sa.exc.IntegrityError) as raised:
        write(engine, schema, batch)
    text = failure_text(raised.value)
    assert_tells_no_row_values(text)
    assert "external_orders" in text and ("INSERT INTO" in text or "COPY" in text)  # the statement's shape
    assert "external_name" in text  # the column the database named
    if rows == 1 or engine.dialect.name == "postgresql":
        assert f"order {batch[bad]['sf_order_id']}" in str(raised.value)
    else:  # SQLite does not say which row of an executemany failed: the batch's orders are named
        assert f"one of {rows} orders, {batch[0]['sf_order_id']} to {batch[-1]['sf_order_id']}" in str(raised.value)
    logging.getLogger("test").exception("load failed", exc_info=raised.value)
    assert_tells_no_row_values(caplog.text)


@pytest.mark.postgres
@pytest.mark.parametrize("rows", [1, COPY_MIN_ROWS + 5], ids=["bound", "COPY"])
def test_a_value_the_column_refuses_is_not_quoted_back(pg_engine, rows):
    """PostgreSQL quotes the value in some messages (and a COPY's context names it): not here."""
    engine, schema = pg_engine
    batch = [order_row(n) for n in range(rows)]
    batch[-1]["effective_date"] = f"{CARD} {NAME}"  # not a date: refused with the value quoted
    for row in batch[:-1]:
        row["effective_date"] = None
    with pytest.raises(sa.exc.DBAPIError) as raised:
        write(engine, schema, batch)
    text = failure_text(raised.value)
    assert_tells_no_row_values(text)
    assert '"…"' in text and batch[-1]["sf_order_id"] in text


@pytest.mark.postgres
def test_a_refused_value_with_a_line_break_is_not_half_quoted_back(pg_engine):
    """The message is cut to its first line; a value with a line break then has only its opening
    quote there, and what comes before the break must not stay in the message."""
    engine, schema = pg_engine
    batch = [order_row(0)]
    batch[0]["effective_date"] = f"{NAME}\n{CARD}"
    with pytest.raises(sa.exc.DBAPIError) as raised:
        write(engine, schema, batch)
    text = failure_text(raised.value)
    assert_tells_no_row_values(text)
    assert NAME not in text and '"…' in text and batch[0]["sf_order_id"] in text


def test_connection_errors_keep_their_wording(tmp_path):
    engine = warehouse_engine(sa.URL.create("sqlite", database=str(tmp_path / "missing" / "w.db")))
    with pytest.raises(sa.exc.OperationalError) as raised, engine.connect():
        pass
    assert "unable to open database file" in str(raised.value)
