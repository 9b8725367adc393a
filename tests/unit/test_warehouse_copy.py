"""PostgreSQL's COPY path for large writes (``upsert``, ``update_rows``, ``insert_rows``) against
the executemany path: the same rows, the same conflict handling, the same transaction; and the
keyed lookups (``select_in``) and bulk updates (``update_rows``) that stay index probes whatever
the planner's statistics say."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders import currencies
from salesforce_orders.load import load_run, record_quarantine, record_skipped
from salesforce_orders.model import SkippedOrder
from salesforce_orders.schema_versions import create_all
from salesforce_orders.shipments import add_shipment
from salesforce_orders.staging import stage_items, stage_orders, stage_transformed
from salesforce_orders.warehouse import (
    VIEWS_KEY,
    analyze,
    insert_rows,
    select_in,
    tables,
    update_rows,
    upsert,
    writes,
)

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
PATHS = {"copy": 1, "executemany": 10**9}  # COPY_MIN_ROWS forcing one path or the other


def use_path(monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    monkeypatch.setattr(writes, "COPY_MIN_ROWS", PATHS[path])


@pytest.fixture
def fresh_schemas(postgres_engine: sa.Engine, postgres_schema: str) -> Iterator[Any]:
    """``make(suffix)``: an empty warehouse schema of this session; all dropped afterwards."""
    made: list[str] = []

    def make(suffix: str) -> str:
        schema = f"{postgres_schema}_{suffix}"
        with postgres_engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
        create_all(postgres_engine, schema)
        made.append(schema)
        return schema

    yield make
    with postgres_engine.begin() as conn:
        for schema in made:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))


def temporary_upsert_tables(conn: sa.Connection) -> int:
    return conn.execute(
        sa.text("SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema() AND relname LIKE 'upsert%'")
    ).scalar_one()


# ---------------------------------------------------------------------------------------
# Both paths leave identical rows
# ---------------------------------------------------------------------------------------


def write_everything(engine: sa.Engine, schema: str, make_transformed: Any) -> None:
    """Every kind of warehouse write, with values that tell conversions apart."""
    tricky = make_transformed(
        1,
        account=1,
        parent_account=9,
        account_name="Société — 東京 \\ \"quoted\"",
        street="Straße 1\tHof\nHinterhaus",
        notes="back\\slash, tab\t, \\N, empty next",
        # 1e15 + 0.2 has 17 significant digits: a float amount is bound by its shortest repr, exactly
        items=((1, "S1", 1.5, 0.1), (2, None, 3.0, 19.99), (3, "S1", 1.0, 1e15 + 0.2)),
        metadata={"Région": "Île-de-France", "none": None, "nested": {"list": [1, 2.5, None, True]}},
        modstamp="2026-01-02T05:04:05.123456+02:00",
        activated_at="2026-01-02T03:00:00.000+0000",
    )
    plain = [make_transformed(n, account=n % 3 + 1, notes="" if n == 2 else None) for n in range(2, 6)]
    load_run(engine, "run-1", [[tricky, *plain]], schema=schema, now=T0, watermark="2026-01-02T03:04:05Z", keep_history=True)

    # a second version of order 2 (update, replaced children and pending write-backs), a known
    # parent (DO NOTHING) and an unchanged customer (its update refused by the content hash)
    changed = make_transformed(2, account=3, notes="v2", items=((2, "S9", 2.0, 0.5), (3, None, 1.0, 0.01)))
    second = [changed, make_transformed(6, account=2, parent_account=9, parent_name="Other name"), make_transformed(7, account=3)]
    load_run(engine, "run-2", [second], schema=schema, now=T1, watermark="2026-01-03T00:00:00+01:00", keep_history=True)

    t = tables(schema)
    with engine.begin() as conn:
        record_quarantine(conn, "run-2", [
            {"sf_order_id": "801000000000099AAA", "order_number": None, "account_name": "Bad\x7f",
             "failed_checks": ["has_products"], "details": {"has_products": None}},
            {"sf_order_id": "801000000000098AAA", "order_number": "x" * 40, "account_name": None,
             "failed_checks": [], "details": {}},
        ], schema=schema, now=T1)
        record_skipped(conn, "run-2", [
            SkippedOrder("801000000000097AAA", "00000097", "zero total", "2026-01-02T03:04:05.000+0000", "Zoë \\ Co", 0.0, "EUR"),
        ], schema=schema, now=T1)
        staged = [{"Id": f"801{n:012d}AAA", "SystemModstamp": "2026-01-02T03:04:05.000+0000", "Amount": 0.1 + 0.2,
                   "Empty": "", "Missing": None, "Nested": {"a": [None]}} for n in range(1, 4)]
        stage_orders(conn, "run-2", staged, schema=schema, now=T1)
        stage_items(conn, "run-2", [{"Id": f"802{n:012d}AAA", "OrderId": f"801{n:012d}AAA", "Quantity": 2}
                                    for n in range(1, 4)], schema=schema, now=T1)
        stage_transformed(conn, "run-2", [tricky, changed], schema=schema, now=T1)
        # Python None: JSON null in a plain sa.JSON column, SQL NULL where none_as_null
        upsert(conn, t.stg_orders, [
            {"run_id": "raw", "sf_order_id": "801000000000001AAA", "system_modstamp": None, "record": None,
             "status": "staged", "failed_checks": None, "staged_at": T1},
            {"run_id": "raw", "sf_order_id": "801000000000002AAA", "system_modstamp": T1, "record": {"k": None},
             "status": "invalid", "failed_checks": ["a", None], "staged_at": T1},
        ], ["run_id", "sf_order_id"])
        currencies.store(conn, t.currency_rates, [
            {"source": "CurrencyType", "iso_code": "EUR", "start_date": date(1, 1, 1), "next_start_date": date(9999, 12, 31),
             "conversion_rate": 0.923456, "is_corporate": False},
        ], T1)
        add_shipment(conn, t, {"shipment_key": "SHIP-é1", "order_number": "00000002", "carrier": "UPS", "shipped_date": "2026-01-02"},
                     [{"sf_order_item_id": "802000000000002AAA", "quantity": "1.5"}], now=T1)
        upsert(conn, t.import_runs, [
            {"run_id": "r1", "status": "success", "started_at": T0, "finished_at": None, "inserted": 5,
             "duration_seconds": 0.1 + 0.2, "message": "ok ✓"},
            {"run_id": "r2", "status": "failed", "started_at": T0, "finished_at": T1, "inserted": 0,
             "duration_seconds": None, "message": None},
        ], ["run_id"])


def dump(engine: sa.Engine, schema: str) -> dict[str, Any]:
    """Every table's rows as Python values, their types, and their text in the database (which
    tells SQL NULL from JSON null, and shows stored numerics and timestamps as they are)."""
    t = tables(schema)
    out = {}
    with engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            values = [tuple(row) for row in conn.execute(sa.select(table).order_by(*order))]
            texts = [tuple(row) for row in conn.execute(sa.select(*(sa.cast(c, sa.Text) for c in table.c)).order_by(*order))]
            if table is t.sync_state:  # the views' fingerprint row names the schema
                values = [row for row in values if row[0] != VIEWS_KEY]
                texts = [row for row in texts if row[0] != VIEWS_KEY]
            out[table.name] = {"values": values, "types": [tuple(type(v) for v in row) for row in values], "text": texts}
    return out


def test_copy_and_executemany_leave_identical_rows(
    postgres_engine, fresh_schemas, make_transformed, monkeypatch, capture_sql
):
    dumps, statements = {}, {}
    for path in PATHS:
        use_path(monkeypatch, path)
        schema = fresh_schemas(path)
        with capture_sql(postgres_engine) as sent:
            write_everything(postgres_engine, schema, make_transformed)
        dumps[path] = dump(postgres_engine, schema)
        statements[path] = sent

    copied, bound = dumps["copy"], dumps["executemany"]
    assert set(copied) == set(bound)
    for name in bound:
        assert bound[name]["values"], f"{name}: the scenario writes no row"
        assert copied[name] == bound[name], name

    assert any("FROM pg_temp.upsert_" in s for s in statements["copy"])
    assert not any("pg_temp" in s for s in statements["executemany"])
    # what the comparison covers: JSON null vs SQL NULL, amounts bound exactly, zone conversion
    raw = {row[1]: row for row in bound["stg_orders"]["text"] if row[0] == "raw"}
    assert raw["801000000000001AAA"][3] == "null" and raw["801000000000001AAA"][5] is None
    assert max(Decimal(row[6]) for row in bound["external_order_items"]["text"]) == Decimal("1000000000000000.20")
    order = bound["external_orders"]["values"][0]
    assert order[tables().external_orders.c.keys().index("sf_system_modstamp")] == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


# ---------------------------------------------------------------------------------------
# Conflict handling, errors and the transaction, on each path
# ---------------------------------------------------------------------------------------


@pytest.fixture(params=list(PATHS))
def pg_path(request, monkeypatch, fresh_schemas) -> str:
    """A fresh warehouse schema, written through the COPY path or the executemany path."""
    use_path(monkeypatch, request.param)
    return fresh_schemas(request.param)


def run_row(run_id: str, inserted: int) -> dict:
    return {"run_id": run_id, "status": "running", "started_at": T0, "inserted": inserted}


def test_update_where_guards_the_update_on_both_paths(postgres_engine, pg_path):
    runs = tables(pg_path).import_runs
    with postgres_engine.begin() as conn:
        upsert(conn, runs, [run_row("a", 5), run_row("b", 5)], ["run_id"])
        upsert(conn, runs, [run_row("a", 3), run_row("b", 7)], ["run_id"],
               update_where=lambda incoming: incoming.inserted > runs.c.inserted)
        stored = conn.execute(sa.select(runs.c.run_id, runs.c.inserted).order_by(runs.c.run_id)).all()
    assert [tuple(r) for r in stored] == [("a", 5), ("b", 7)]


def customer(account: int, customer_id: str, name: str) -> dict:
    return {"customer_id": customer_id, "sf_account_id": f"001{account:015d}", "name": name,
            "customer_id_source": "salesforce", "first_imported_at": T0, "updated_at": T0, "content_hash": name}


def test_do_nothing_skips_every_conflict_on_both_paths(postgres_engine, pg_path):
    c = tables(pg_path).customers
    with postgres_engine.begin() as conn:
        upsert(conn, c, [customer(1, "C-1", "kept")], ["sf_account_id"])
        upsert(conn, c, [
            customer(1, "C-1", "same key"),  # conflicts on the key
            customer(2, "C-1", "same customer id"),  # conflicts on another unique constraint
            customer(3, "C-3", "new"),
            customer(4, "C-4", "first of two"),
            customer(5, "C-4", "second of two"),  # conflicts with a row of the same statement
        ], ["sf_account_id"], update_columns=[])
        stored = conn.execute(sa.select(c.c.customer_id, c.c.name).order_by(c.c.customer_id)).all()
    assert [tuple(r) for r in stored] == [("C-1", "kept"), ("C-3", "new"), ("C-4", "first of two")]


def test_naive_datetimes_are_refused_on_both_paths(postgres_engine, pg_path):
    s = tables(pg_path).sync_state
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), postgres_engine.begin() as conn:
        upsert(conn, s, [{"key": "k", "value": "v", "updated_at": datetime(2026, 1, 2)}], ["key"])
    with postgres_engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(s).where(s.c.key == "k")).scalar_one() == 0


def test_database_errors_are_raised_as_sqlalchemy_errors_on_both_paths(postgres_engine, pg_path):
    s = tables(pg_path).sync_state
    with pytest.raises(sa.exc.DataError), postgres_engine.begin() as conn:
        upsert(conn, s, [{"key": "k" * 101, "value": "v", "updated_at": T0}], ["key"])  # key is VARCHAR(100)


def test_writes_in_one_transaction_commit_or_roll_back_together(postgres_engine, pg_path):
    t = tables(pg_path)
    plus_two = timezone(timedelta(hours=2))

    def write(conn: sa.Connection) -> None:
        # two target tables, and the same table twice, in one transaction
        upsert(conn, t.customers, [customer(n, f"C-{n}", "a") for n in range(1, 4)], ["sf_account_id"])
        upsert(conn, t.sync_state, [{"key": f"k{n}", "value": "v", "updated_at": T0.astimezone(plus_two)} for n in range(3)], ["key"])
        upsert(conn, t.customers, [customer(n, f"C-{n}", "b") for n in range(2, 5)], ["sf_account_id"])

    with pytest.raises(RuntimeError), postgres_engine.begin() as conn:
        write(conn)
        raise RuntimeError("the task died")
    with postgres_engine.connect() as conn:
        with conn.begin():
            assert conn.execute(sa.select(sa.func.count()).select_from(t.customers)).scalar_one() == 0
            write(conn)
        assert temporary_upsert_tables(conn) == 0  # dropped with the commit (reused within it)
    with postgres_engine.connect() as conn:
        names = conn.execute(sa.select(t.customers.c.customer_id, t.customers.c.name).order_by(t.customers.c.customer_id)).all()
        stamps = set(conn.execute(sa.select(t.sync_state.c.updated_at).where(t.sync_state.c.key.like("k%"))).scalars())
    assert [tuple(r) for r in names] == [("C-1", "a"), ("C-2", "b"), ("C-3", "b"), ("C-4", "b")]
    assert stamps == {T0}


def test_a_temporary_table_is_reused_within_the_transaction_emptied_after_each_write(postgres_engine, fresh_schemas, monkeypatch):
    # Rows left from an earlier write would be merged again (here: the same key twice in one
    # statement, which PostgreSQL refuses); a savepoint rolled back takes its rows with it.
    use_path(monkeypatch, "copy")
    c = tables(fresh_schemas("reuse")).customers
    with postgres_engine.connect() as conn:
        with conn.begin():
            upsert(conn, c, [customer(1, "C-1", "a")], ["sf_account_id"])
            upsert(conn, c, [customer(1, "C-1", "b")], ["sf_account_id"])
            with pytest.raises(sa.exc.DBAPIError), conn.begin_nested():
                upsert(conn, c, [customer(1, "C-1", "x"), customer(2, "C-2", "x" * 1000)], ["sf_account_id"])
            upsert(conn, c, [customer(2, "C-2", "c")], ["sf_account_id"])
            assert temporary_upsert_tables(conn) == 1
        assert temporary_upsert_tables(conn) == 0
        names = conn.execute(sa.select(c.c.customer_id, c.c.name).order_by(c.c.customer_id)).all()
    assert [tuple(r) for r in names] == [("C-1", "b"), ("C-2", "c")]


def test_a_load_that_fails_midway_leaves_nothing_on_the_copy_path(postgres_engine, fresh_schemas, make_transformed, monkeypatch):
    use_path(monkeypatch, "copy")
    schema = fresh_schemas("crash")
    load_run(postgres_engine, "run-1", [[make_transformed(1)]], schema=schema, now=T0, watermark="2026-01-02T03:04:05Z")
    before = dump(postgres_engine, schema)

    def chunks():
        yield [make_transformed(1, notes="changed"), make_transformed(2), make_transformed(3, account=3, parent_account=4)]
        yield [make_transformed(4, account=4)]
        raise ConnectionError("extract source went away")

    with pytest.raises(ConnectionError):
        load_run(postgres_engine, "run-2", chunks(), schema=schema, now=T1, watermark="2026-02-01T00:00:00Z")
    assert dump(postgres_engine, schema) == before


def test_analyze_of_some_columns_counts_the_table_and_leaves_the_rest_to_autovacuum(postgres_engine, fresh_schemas):
    schema = fresh_schemas("analyze")
    c = tables(schema).customers
    with postgres_engine.begin() as conn:
        insert_rows(conn, c, [customer(n, f"C-{n}", "a") for n in range(1, 501)])
        analyze(conn, c, columns={"customers": ["customer_id", "name"]})
    with postgres_engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT reltuples FROM pg_class WHERE oid = '{schema}.customers'::regclass")).scalar_one() == 500
        analyzed = conn.execute(sa.text(f"SELECT attname FROM pg_stats WHERE schemaname = '{schema}' AND tablename = 'customers'")).scalars()
        assert set(analyzed) == {"customer_id", "name"}


def test_temporary_table_names_differ_per_table_and_schema():
    names = {writes._temporary_name(tables(schema).customers) for schema in (None, "a", "b")}
    names.add(writes._temporary_name(tables("a").stg_orders))
    long = writes._temporary_name(tables("s" * 63).stg_transformed_batches)
    assert len(names) == 4 and len(long) <= 63


def test_columns_with_python_defaults_have_the_same_server_defaults():
    # The COPY path leaves columns the rows do not carry to the server; the executemany path
    # sends SQLAlchemy's Python default. Both store the same value only if the two agree.
    for table in tables().metadata.sorted_tables:
        for column in table.c:
            if column.default is not None:
                assert column.server_default is not None, f"{table.name}.{column.name}"
                assert str(column.default.arg).lower() == str(column.server_default.arg).lower(), column


# ---------------------------------------------------------------------------------------
# Keyed lookups
# ---------------------------------------------------------------------------------------


def outbox_row(n: int, state: str) -> dict:
    record_id = f"801{n:015d}"
    return {"sf_object": "Order", "sf_record_id": record_id, "sf_order_id": record_id, "action": "mark_imported",
            "fields": {}, "state": state, "attempts": 0, "created_run_id": "r", "updated_run_id": "r",
            "created_at": T0, "updated_at": T0}


@pytest.mark.parametrize("history", [0, 2000], ids=["new table", "statistics without this load"])
def test_outbox_lookup_probes_the_record_index_mid_load(postgres_engine, fresh_schemas, history):
    schema = fresh_schemas("lookup")
    w = tables(schema).writeback_outbox
    if history:  # statistics from before the load: hardly any PENDING row
        with postgres_engine.begin() as conn:
            insert_rows(conn, w, [outbox_row(n, "DONE") for n in range(history)])
            conn.execute(sa.text(f'ANALYZE "{schema}".writeback_outbox'))
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if "LATERAL" in statement:
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    with postgres_engine.begin() as conn:
        insert_rows(conn, w, [outbox_row(n, "PENDING") for n in range(10_000, 30_000)])  # this load's rows
        sa.event.listen(postgres_engine, "before_cursor_execute", explain)
        try:
            wanted = [f"801{n:015d}" for n in range(29_000, 31_000)]
            found = select_in(conn, w, [w.c.id, w.c.sf_record_id], w.c.sf_record_id, wanted, w.c.sf_object == "Order")
        finally:
            sa.event.remove(postgres_engine, "before_cursor_execute", explain)
    assert len(found) == 1000
    assert plans and all("ix_writeback_outbox_sf_object_sf_record_id" in plan for plan in plans), plans
    assert not any("Seq Scan on writeback_outbox" in plan or "state_next_attempt_at" in plan for plan in plans), plans


@pytest.mark.parametrize(
    "keys",
    [["801A", "801B"], ["", "801A"], [""], ["a,b", "c"], ["it's", 'a "quoted" \\ {key}', " spaced "], [1, 2, 3]],
    ids=["ids", "an empty text", "only an empty text", "a comma", "quotes and braces", "integers"],
)
def test_keys_bound_as_one_text_or_as_a_list_find_exactly_their_rows(postgres_engine, fresh_schemas, keys):
    # integers, and texts without a comma, travel as one comma-joined text the server splits
    schema = fresh_schemas("keys")
    w = tables(schema).writeback_outbox
    column = w.c.id if isinstance(keys[0], int) else w.c.sf_record_id
    stored = list(range(1, 6)) if column is w.c.id else [*keys, "801A,801B", "other"]
    with postgres_engine.begin() as conn:
        insert_rows(conn, w, [{**outbox_row(n, "DONE"), "sf_record_id": None if column is w.c.id else value}
                              for n, value in enumerate(stored, start=1)])
    with postgres_engine.connect() as conn:
        by_one_of = conn.execute(sa.select(column).where(writes.one_of(conn, column, keys))).scalars().all()
        by_select_in = [row[0] for row in select_in(conn, w, [column], column, keys)]
    assert sorted(by_one_of) == sorted(by_select_in) == sorted(keys)
    assert (writes._joined_keys(keys) is None) == (keys in (["a,b", "c"], [""]))


def order_row(n: int) -> dict:
    order_id = f"801{n:015d}"
    return {"sf_order_id": order_id, "order_number": f"{n:08d}", "external_name": f"SF-{n}",
            "salesforce_url": f"https://example.my.salesforce.com/{order_id}", "customer_id": f"C-{n}",
            "sf_account_id": f"001{n:015d}", "service_address_source": "billing", "destination": "domestic",
            "metadata": {}, "is_zero_total": False, "content_hash": "h", "lifecycle_state": "READY",
            "sf_state": "active", "sf_state_changed_at": T0, "first_imported_at": T0, "last_imported_at": T0,
            "last_run_id": "r"}


# The tables and keys update_rows is called with, each key a primary key: a row of the table,
# and the update its callers make (the write-back's outcomes, the orders' lifecycle).
UPDATED_TABLES = {
    "writeback_outbox": ("id", lambda n: outbox_row(n, "DONE"), {"state": "PENDING", "attempts": 1, "updated_run_id": "u"}),
    "external_orders": ("sf_order_id", order_row, {"lifecycle_state": "COMPLETE", "lifecycle_error": None}),
}


@pytest.mark.parametrize("target", list(UPDATED_TABLES))
def test_bulk_updates_probe_the_key_index_of_a_large_table(postgres_engine, fresh_schemas, monkeypatch, target):
    # Joined on the key alone, the UPDATE read the whole table (old rows included) as soon as
    # the planner knew how many rows came in; the incoming rows are analyzed to tell it.
    use_path(monkeypatch, "copy")
    schema = fresh_schemas("updates")
    table = getattr(tables(schema), target)
    key, make_row, change = UPDATED_TABLES[target]
    with postgres_engine.begin() as conn:
        insert_rows(conn, table, [make_row(n) for n in range(50_000)])
        analyze(conn, table)
        keys = conn.execute(sa.select(table.c[key]).order_by(table.c[key])).scalars().all()[::25]
    assert len(keys) == 2000
    plans: list[str] = []

    def explain(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE"):
            incoming = re.search(r"FROM (pg_temp[.]\w+)", statement).group(1)
            cursor.execute(f"ANALYZE {incoming}")
            cursor.execute("EXPLAIN " + statement, parameters)
            plans.append("\n".join(row[0] for row in cursor.fetchall()))

    sa.event.listen(postgres_engine, "before_cursor_execute", explain)
    try:
        with postgres_engine.begin() as conn:
            update_rows(conn, table, [{key: value, **change} for value in keys], [key])
    finally:
        sa.event.remove(postgres_engine, "before_cursor_execute", explain)
    assert len(plans) == 1, plans
    assert f"Index Scan using pk_{target} on {target}" in plans[0], plans[0]
    assert not re.search(rf"Seq Scan on {target}\b", plans[0]), plans[0]
    changed_column, changed_value = next(iter(change.items()))
    with postgres_engine.connect() as conn:
        changed = conn.execute(sa.select(table.c[key]).where(table.c[changed_column] == changed_value)).scalars().all()
    assert sorted(changed) == keys


def staged_row(run_id: str, n: int, status: str) -> dict:
    return {"run_id": run_id, "sf_order_id": f"801{n:015d}", "system_modstamp": T0, "record": {"n": n},
            "status": status, "failed_checks": None, "staged_at": T0}


def test_bulk_updates_change_the_rows_of_their_keys_alone_on_both_paths(postgres_engine, pg_path):
    # a composite key: the same order in another run, and other orders of the same run, stay as they are
    staged = tables(pg_path).stg_orders
    with postgres_engine.begin() as conn:
        insert_rows(conn, staged, [staged_row(run, n, "staged") for run in ("r1", "r2") for n in range(400)])
        update_rows(conn, staged, [
            {"run_id": "r2", "sf_order_id": f"801{n:015d}", "status": "invalid", "failed_checks": [f"check {n}"]}
            for n in range(0, 400, 2)
        ], ["run_id", "sf_order_id"])
        stored = conn.execute(sa.select(staged.c.run_id, staged.c.sf_order_id, staged.c.status, staged.c.failed_checks,
                                        staged.c.record)).all()
    assert len(stored) == 800
    for run_id, order_id, status, failed_checks, record in stored:
        n = int(order_id[3:])
        assert record == {"n": n}
        if run_id == "r2" and n % 2 == 0:
            assert (status, failed_checks) == ("invalid", [f"check {n}"])
        else:
            assert (status, failed_checks) == ("staged", None)


def test_bulk_updates_of_changed_rows_only_leave_rows_holding_the_values_untouched_on_both_paths(postgres_engine, pg_path):
    # only_changed: a row already holding every value gets no new version (its xmin stays the
    # insert's), a NULL counts as a value (IS DISTINCT FROM), and updated_at moves only where a value did
    orders = tables(pg_path).external_orders
    with postgres_engine.begin() as conn:
        insert_rows(conn, orders, [{**order_row(n), "lifecycle_error": "e" if n % 4 == 0 else None} for n in range(400)])
    with postgres_engine.begin() as conn:
        update_rows(conn, orders, [
            {"sf_order_id": f"801{n:015d}", "lifecycle_state": "COMPLETE" if n % 2 else "READY", "lifecycle_error": None}
            for n in range(400)
        ], ["sf_order_id"], only_changed=True)
        this_transaction = conn.execute(sa.text("SELECT pg_current_xact_id()::xid::text")).scalar_one()
    with postgres_engine.connect() as conn:
        stored = conn.execute(sa.select(
            orders.c.sf_order_id, orders.c.lifecycle_state, orders.c.lifecycle_error, orders.c.updated_at,
            sa.literal_column("xmin::text"),
        ).select_from(orders)).all()
    assert len(stored) == 400
    for order_id, state, error, updated_at, xmin in stored:
        n = int(order_id[3:])
        assert (state, error) == ("COMPLETE" if n % 2 else "READY", None)
        rewritten = n % 2 == 1 or n % 4 == 0  # a state or an error to change
        assert (xmin == this_transaction) is rewritten, n
        assert (updated_at is not None) is rewritten, n


def test_copy_converts_a_column_whole_only_when_its_bind_processor_would_change_a_value(postgres_engine):
    dialect = postgres_engine.dialect
    o = tables(None).external_orders

    def convert(column: sa.Column, values: list[Any]) -> list[Any]:
        converter = writes._copy_converter(column.type, dialect)
        return converter(values) if converter else values

    stamps = [T0, None, T1]
    assert convert(o.c.sf_system_modstamp, stamps) is stamps  # taken whole, nothing to do
    plus_two = timezone(timedelta(hours=2))
    assert convert(o.c.sf_system_modstamp, [T0, T1.astimezone(plus_two)]) == [T0, T1]
    with pytest.raises(ValueError, match="naive datetime"):
        convert(o.c.sf_system_modstamp, [T0, datetime(2026, 1, 2), T1])
    amounts = [Decimal("1.10"), 2, None]
    assert convert(o.c.total_amount, amounts) is amounts
    assert convert(o.c.total_amount, [Decimal("1.10"), 0.1 + 0.2]) == [Decimal("1.10"), Decimal("0.30000000000000004")]
    rates = [Decimal("0.923456"), None]
    assert convert(o.c.conversion_rate, rates) is rates
    assert convert(o.c.conversion_rate, [1 / 3, None]) == ["0.333333333333333", None]
    flags = [True, False, None]
    assert convert(o.c.is_zero_total, flags) is flags
    assert convert(o.c.is_zero_total, [1, 0, None]) == [True, False, None]


def test_copy_goes_binary_only_when_every_value_suits_its_columns_binary_dumper(postgres_engine):
    dialect = postgres_engine.dialect
    o = tables(None).external_orders
    columns = [
        o.c.sf_order_id,
        o.c.effective_date,
        o.c.total_amount,
        o.c.is_zero_total,
        o.c.sf_system_modstamp,
    ]

    def binary_types(*column_values: list[Any]) -> list[str] | None:
        values = [list(v) for v in column_values]
        return writes._binary_copy_types(columns, values, [set(map(type, v)) for v in values], dialect)

    ids, dates, flags, stamps = ["801A", None], [date(2026, 1, 2), None], [True, None], [T0, None]
    assert binary_types(ids, dates, [Decimal("1.10"), 2], flags, stamps) == [
        "varchar",
        "date",
        "numeric",
        "boolean",
        "timestamp with time zone",
    ]
    # as text, as before: PostgreSQL parses what the binary dumper would not take
    assert binary_types(ids, dates, ["0.333333333333333", None], flags, stamps) is None  # a float amount
    assert binary_types(ids, ["not a date", None], [Decimal(1), None], flags, stamps) is None
    # a datetime in a date column
    assert binary_types(ids, [T0, None], [Decimal(1), None], flags, stamps) is None
    assert binary_types([1, None], dates, [Decimal(1), None], flags, stamps) is None
    services = tables(None).order_services
    counts = [services.c.item_count]
    assert writes._binary_copy_types(counts, [[3, None]], [{int, type(None)}], dialect) == ["integer"]
    assert writes._binary_copy_types(counts, [[2**31, None]], [{int, type(None)}], dialect) is None


def test_numeric_fields_are_the_dumpers_bytes_of_each_value_as_written():
    """Equal Decimals written differently (1.0, 1.00) keep their own fields; None stays NULL."""
    import psycopg
    from psycopg.pq import Format

    dump = psycopg.adapters.get_dumper_by_oid(psycopg.adapters.types["numeric"].oid, Format.BINARY)(Decimal).dump
    values = [Decimal("1.0"), Decimal("1.00"), None, Decimal("1.0"), Decimal("-0"), Decimal("1E+1")]
    assert writes._numeric_field_bytes(values, dump) == [None if v is None else bytes(dump(v)) for v in values]
    assert writes._numeric_field_bytes(values, dump)[0] != writes._numeric_field_bytes(values, dump)[1]


def test_rows_converted_ahead_are_written_as_converted_then_and_a_refused_value_is_raised_by_the_write(
    postgres_engine, fresh_schemas
):
    """The load converts a batch's COPY input in its read-ahead thread (``convert_for_copy``): the
    write sends what was converted, only into the table it was converted for; a value that could
    not be converted is raised by the write, as if nothing had been done ahead."""
    schema = fresh_schemas("ahead")
    s = tables(schema).sync_state
    good = writes.Columns(["key", "value", "updated_at"], [[f"k{n}" for n in range(300)], ["v"] * 300, [T0] * 300])
    with postgres_engine.begin() as conn:
        writes.convert_for_copy(conn, s, good)
    assert good.copy_input is not None and good.copy_input.target is s
    good.copy_input.values[1][0] = "converted ahead"  # what the write sends is what was converted
    with postgres_engine.begin() as conn:
        insert_rows(conn, s, good)
        stored = dict(conn.execute(sa.select(s.c.key, s.c.value).where(s.c.key.startswith("k"))).all())
    assert len(stored) == 300 and stored["k0"] == "converted ahead" and stored["k1"] == "v"

    naive = writes.Columns(["key", "value", "updated_at"], [[f"n{n}" for n in range(300)], ["v"] * 300, [datetime(2026, 1, 2)] * 300])
    with postgres_engine.begin() as conn:
        writes.convert_for_copy(conn, s, naive)
    assert naive.copy_input is None
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), postgres_engine.begin() as conn:
        insert_rows(conn, s, naive)
