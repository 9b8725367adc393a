"""The warehouse: tables, identifiers, engines, upserts, views and staging, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from salesforce_orders import warehouse
from salesforce_orders.load import load_run, record_quarantine
from salesforce_orders.schema_versions import create_all
from salesforce_orders.staging import (
    clear_run,
    clear_transformed,
    iter_staged,
    iter_transformed,
    mark_validation,
    purge_staging,
    stage_items,
    stage_orders,
    stage_transformed,
    transformed_from_json,
    transformed_to_json,
)
from salesforce_orders.warehouse import (
    COLUMN_LIMITS,
    ITEM_COLUMN_LIMITS,
    VIEWS,
    WarehouseConnectionError,
    engine_from_connection,
    tables,
    upsert,
    validate_identifier,
    warehouse_metadata,
    writes,
)

TABLES = {
    "customers", "customer_locations", "external_orders", "external_order_items", "order_services",
    "quarantined_orders", "skipped_orders", "products", "external_order_versions",
    "external_order_item_versions", "import_runs", "writeback_outbox", "currency_rates", "sync_state",
    "stg_orders", "stg_order_items", "stg_transformed_batches", "warehouse_schema_version",
    "order_shipments", "order_shipment_lines",
}
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rows(target, table_name: str, order_by: str) -> list[dict]:
    t = getattr(tables(target.schema), table_name)
    with target.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c[order_by])).mappings()]


# ---------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------


def test_create_all_twice_creates_every_table_and_view(warehouse):
    create_all(warehouse.engine, warehouse.schema)
    create_all(warehouse.engine, warehouse.schema)

    inspector = sa.inspect(warehouse.engine)
    assert set(inspector.get_table_names(schema=warehouse.schema)) == TABLES
    assert set(inspector.get_view_names(schema=warehouse.schema)) == set(VIEWS)
    order_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("external_orders", schema=warehouse.schema)}
    assert {("order_number",), ("customer_id",), ("lifecycle_state",), ("last_imported_at",)} <= order_indexes
    outbox_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("writeback_outbox", schema=warehouse.schema)}
    assert ("state", "next_attempt_at") in outbox_indexes


def test_views_are_recreated_only_when_their_definition_changes(warehouse, capture_sql, monkeypatch):
    create_all(warehouse.engine, warehouse.schema)
    with capture_sql(warehouse.engine) as statements:
        create_all(warehouse.engine, warehouse.schema)
    assert not [s for s in statements if any(ddl in s.upper() for ddl in ("DROP ", "CREATE TABLE", "CREATE VIEW", "CREATE INDEX"))]

    monkeypatch.setitem(VIEWS, "v_revenue_by_day", lambda t, dialect: sa.select(t.external_orders.c.sf_order_id))
    with capture_sql(warehouse.engine) as statements:
        create_all(warehouse.engine, warehouse.schema)
    assert len([s for s in statements if "DROP VIEW" in s.upper()]) == len(VIEWS)
    columns = sa.inspect(warehouse.engine).get_columns("v_revenue_by_day", schema=warehouse.schema)
    assert [c["name"] for c in columns] == ["sf_order_id"]


@pytest.mark.postgres
def test_create_all_creates_a_missing_postgres_schema(postgres_engine, postgres_schema):
    schema = f"{postgres_schema}_new"
    try:
        create_all(postgres_engine, schema)
        assert "external_orders" in sa.inspect(postgres_engine).get_table_names(schema=schema)
    finally:
        with postgres_engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))


def test_sqlite_has_no_named_schemas(sqlite_engine):
    with pytest.raises(ValueError, match="SQLite warehouses have no schema 'analytics'"):
        create_all(sqlite_engine, "analytics")


def salesforce_length(org, sobject: str, path: str) -> int:
    """The org's length of a staged field name such as ``Account.Parent.Name``, following relationships."""
    *relationships, field_name = path.split(".")
    obj = org.get(sobject)
    for relationship in relationships:
        obj = org.get(obj.relationship(relationship).reference_to[0])
    return obj.field(field_name).length


def test_column_lengths_follow_salesforce_field_lengths():
    from salesforce_sandbox.schema import build_schema

    org = build_schema()
    assert {name: salesforce_length(org, "Order", name) for name in COLUMN_LIMITS} == COLUMN_LIMITS
    assert {name: salesforce_length(org, "OrderItem", name) for name in ITEM_COLUMN_LIMITS} == ITEM_COLUMN_LIMITS

    t = tables()
    assert t.external_orders.c.order_number.type.length == 30
    assert t.external_orders.c.billing_city.type.length == t.external_orders.c.service_city.type.length == 40
    assert t.external_orders.c.service_postal_code.type.length == 20
    assert t.external_orders.c.account_name.type.length == 255
    assert t.external_orders.c.po_number.type.length == 80
    assert t.external_orders.c.external_name.type.length == 330
    assert t.customer_locations.c.state.type.length == 80


def test_timestamps_are_stored_and_returned_as_utc(created_warehouse):
    sync_state = tables(created_warehouse.schema).sync_state
    plus_two = datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    with created_warehouse.engine.begin() as conn:
        conn.execute(sa.insert(sync_state), [{"key": "k", "value": "v", "updated_at": plus_two}])
    with created_warehouse.engine.connect() as conn:
        stored = conn.execute(sa.select(sync_state.c.updated_at).where(sync_state.c.key == "k")).scalar_one()
    assert stored == plus_two and stored.tzinfo == UTC and stored.hour == 3

    with pytest.raises(sa.exc.StatementError, match="naive datetime"), created_warehouse.engine.begin() as conn:
        conn.execute(sa.insert(sync_state), [{"key": "n", "value": "v", "updated_at": datetime(2026, 1, 2)}])


# ---------------------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["warehouse", "_private", "Orders_2026", "a" * 63])
def test_validate_identifier_accepts_plain_names(name):
    assert validate_identifier(name) == name


@pytest.mark.parametrize(
    "name", ["x; DROP TABLE y", "orders--", 'a"b', "1orders", "my-schema", "a b", "", "a" * 64, "schéma", "x.y", "orders\n"]
)
def test_validate_identifier_rejects_anything_else(name):
    with pytest.raises(ValueError, match="invalid warehouse identifier") as excinfo:
        validate_identifier(name)
    assert repr(name) in str(excinfo.value)


def test_schema_names_are_validated_before_any_sql():
    with pytest.raises(ValueError, match="x; DROP TABLE y"):
        warehouse_metadata("x; DROP TABLE y")
    with pytest.raises(ValueError, match="invalid warehouse identifier"):
        tables("public; DROP SCHEMA public")


# ---------------------------------------------------------------------------------------
# Engines from Airflow connections
# ---------------------------------------------------------------------------------------


def test_engine_from_sqlite_connection(monkeypatch, tmp_path):
    path = tmp_path / "wh.db"
    monkeypatch.setenv("AIRFLOW_CONN_WH_SQLITE_TEST", json.dumps({"conn_type": "sqlite", "host": str(path)}))
    engine = engine_from_connection("wh_sqlite_test")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert engine.url.database == str(path) and path.exists()
    finally:
        engine.dispose()


def postgres_connection(password: str) -> str:
    return json.dumps(
        {
            "conn_type": "postgres",
            "host": "127.0.0.1",
            "port": 5432,
            "login": "postgres",
            "password": password,
            "schema": "test",
            "extra": {"sslmode": "disable", "connect_timeout": 3, "unrelated": "ignored"},
        }
    )


def test_engine_from_postgres_connection_builds_psycopg_url_and_hides_password(monkeypatch, caplog):
    password = "s3cr3t/p@ss:word"
    monkeypatch.setenv("AIRFLOW_CONN_WH_PG_TEST", postgres_connection(password))
    with caplog.at_level(logging.DEBUG):
        engine = engine_from_connection("wh_pg_test")
    url = engine.url
    assert (url.drivername, url.host, url.port, url.database, url.username) == (
        "postgresql+psycopg", "127.0.0.1", 5432, "test", "postgres",
    )
    assert url.password == password  # escaped by SQLAlchemy, not mangled
    assert dict(url.query) == {"sslmode": "disable", "connect_timeout": "3"}
    assert password not in str(url) and password not in repr(engine)
    assert "wh_pg_test" in caplog.text and password not in caplog.text
    engine.dispose()


@pytest.mark.postgres
def test_engine_from_postgres_connection_connects(monkeypatch, postgres_engine):
    monkeypatch.setenv("AIRFLOW_CONN_WH_PG_LIVE", postgres_connection(""))
    engine = engine_from_connection("wh_pg_live")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar() == "test"
    finally:
        engine.dispose()


def test_missing_connection_names_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_NO_SUCH_WAREHOUSE", raising=False)
    with pytest.raises(WarehouseConnectionError, match="'no_such_warehouse' is not defined"):
        engine_from_connection("no_such_warehouse")


def test_unsupported_connection_type_names_it(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WH_MYSQL_TEST", json.dumps({"conn_type": "mysql", "host": "db"}))
    with pytest.raises(WarehouseConnectionError, match="'wh_mysql_test' has conn_type 'mysql'"):
        engine_from_connection("wh_mysql_test")


# ---------------------------------------------------------------------------------------
# Upserts
# ---------------------------------------------------------------------------------------


def run_row(run_id: str, status: str = "running", **counts) -> dict:
    return {"run_id": run_id, "status": status, "started_at": NOW, **counts}


def test_upsert_inserts_then_updates(created_warehouse):
    runs = tables(created_warehouse.schema).import_runs
    with created_warehouse.engine.begin() as conn:
        upsert(conn, runs, [run_row("a"), run_row("b")], ["run_id"])
    with created_warehouse.engine.begin() as conn:
        upsert(conn, runs, [{"run_id": "a", "status": "success", "inserted": 5}], ["run_id"])
    stored = {r["run_id"]: r for r in rows(created_warehouse, "import_runs", "run_id")}
    assert (stored["a"]["status"], stored["a"]["inserted"], stored["a"]["started_at"]) == ("success", 5, NOW)
    assert (stored["b"]["status"], stored["b"]["inserted"]) == ("running", 0)


def test_upsert_updates_only_the_given_columns(created_warehouse):
    runs = tables(created_warehouse.schema).import_runs
    with created_warehouse.engine.begin() as conn:
        upsert(conn, runs, [run_row("a", inserted=1)], ["run_id"])
        upsert(conn, runs, [run_row("a", status="failed", inserted=9)], ["run_id"], update_columns=["inserted"])
    [stored] = rows(created_warehouse, "import_runs", "run_id")
    assert (stored["status"], stored["inserted"]) == ("running", 9)


def test_upsert_without_update_columns_only_inserts_missing_rows(created_warehouse):
    runs = tables(created_warehouse.schema).import_runs
    with created_warehouse.engine.begin() as conn:
        upsert(conn, runs, [run_row("a", inserted=1)], ["run_id"])
        upsert(conn, runs, [run_row("a", inserted=2), run_row("b", inserted=3)], ["run_id"], update_columns=[])
    assert [(r["run_id"], r["inserted"]) for r in rows(created_warehouse, "import_runs", "run_id")] == [("a", 1), ("b", 3)]


def test_upsert_where_condition_guards_the_update(created_warehouse):
    runs = tables(created_warehouse.schema).import_runs
    only_growing = lambda incoming: incoming.inserted > runs.c.inserted  # noqa: E731
    with created_warehouse.engine.begin() as conn:
        upsert(conn, runs, [run_row("a", inserted=5), run_row("b", inserted=5)], ["run_id"])
        upsert(conn, runs, [run_row("a", inserted=3), run_row("b", inserted=7)], ["run_id"], update_where=only_growing)
    assert [r["inserted"] for r in rows(created_warehouse, "import_runs", "run_id")] == [5, 7]


def test_upsert_collapses_duplicate_keys_and_batches(created_warehouse, monkeypatch, capture_sql):
    monkeypatch.setattr(writes, "UPSERT_BATCH_SIZE", 3)
    runs = tables(created_warehouse.schema).import_runs
    batch = [run_row(f"r{i}", inserted=i) for i in range(7)] + [run_row("r0", inserted=99)]
    with capture_sql(created_warehouse.engine) as statements, created_warehouse.engine.begin() as conn:
        upsert(conn, runs, batch, ["run_id"])
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 3  # 7 distinct keys in batches of 3
    stored = rows(created_warehouse, "import_runs", "run_id")
    assert len(stored) == 7 and stored[0]["inserted"] == 99


# ---------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------


def view(target, name: str, order_by: str) -> list[dict]:
    prefix = f'"{target.schema}".' if target.schema else ""
    with target.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {prefix}{name} ORDER BY {order_by}")).mappings()]


def test_views_answer_the_analyst_questions(created_warehouse, make_transformed):
    target = created_warehouse
    orders = [
        make_transformed(1, account=10, account_name="Holding", items=((1, None, 1.0, 100.0),)),
        make_transformed(2, account=11, parent_account=10, items=((1, None, 2.0, 10.0),), activated_at="2026-01-03T23:30:00.000+0000"),
        make_transformed(3, account=12, parent_account=10, street="9 Side St", items=((1, None, 1.0, 5.0),)),
        make_transformed(4, account=12, parent_account=10, street="7 Other Rd", items=((1, None, 1.0, 7.5),)),
    ]
    load_run(target.engine, "run-1", [orders], schema=target.schema, now=NOW, watermark=None)
    t = tables(target.schema)
    with target.engine.begin() as conn:
        record_quarantine(conn, "run-1", [
            {"sf_order_id": "801000000000099AAA", "order_number": "00000099", "account_name": "Bad",
             "failed_checks": ["has_products"], "details": {"has_products": "the order has no products"}},
        ], schema=target.schema)
        outbox = t.writeback_outbox
        open_id, retried_id = [
            conn.execute(sa.select(outbox.c.id).where(outbox.c.sf_object == "Order", outbox.c.sf_order_id == o.order.sf_order_id)).scalar_one()
            for o in orders[:2]
        ]
        conn.execute(sa.update(outbox).where(outbox.c.id.in_([open_id, retried_id])).values(
            state="FAILED", last_error_code="FIELD_CUSTOM_VALIDATION_EXCEPTION", last_error_message="PO required"))
        # the second failure was retried later with success: no longer open
        conn.execute(sa.insert(outbox), [{
            "sf_object": "Order", "sf_record_id": orders[1].order.sf_order_id, "sf_order_id": orders[1].order.sf_order_id,
            "action": "mark_imported", "fields": {"Status": "Imported"}, "state": "DONE", "attempts": 1,
            "created_run_id": "run-2", "updated_run_id": "run-2", "created_at": NOW, "updated_at": NOW,
        }])

    by_customer = {r["customer_id"]: r for r in view(target, "v_orders_by_customer", "customer_id")}
    assert (by_customer["C-10"]["own_orders"], by_customer["C-10"]["orders_including_children"]) == (1, 4)
    assert float(by_customer["C-10"]["amount_including_children"]) == 132.5
    assert (by_customer["C-12"]["own_orders"], float(by_customer["C-12"]["own_amount"])) == (2, 12.5)

    revenue = [(str(r["day"]), r["orders"], float(r["revenue"])) for r in view(target, "v_revenue_by_day", "day")]
    assert revenue == [("2026-01-02", 3, 112.5), ("2026-01-03", 1, 20.0)]

    failures = view(target, "v_open_failures", "outbox_id")
    assert [(f["outbox_id"], f["order_number"], f["last_error_code"]) for f in failures] == [
        (open_id, "00000001", "FIELD_CUSTOM_VALIDATION_EXCEPTION")
    ]

    [quarantined] = view(target, "v_quarantined_orders", "id")
    assert quarantined["order_number"] == "00000099"
    checks = quarantined["failed_checks"]
    assert (json.loads(checks) if isinstance(checks, str) else checks) == ["has_products"]

    multi = {r["customer_id"]: r for r in view(target, "v_multi_location_customers", "customer_id")}
    assert set(multi) == {"C-10", "C-12"}
    assert (multi["C-10"]["child_accounts"], multi["C-10"]["location_count"]) == (2, 1)
    assert (multi["C-12"]["child_accounts"], multi["C-12"]["location_count"]) == (0, 2)


# ---------------------------------------------------------------------------------------
# Staging
# ---------------------------------------------------------------------------------------


def staged_order(n: int, modstamp: str = "2026-01-02T03:04:05.000+0000", **fields) -> dict:
    return {"Id": f"801{n:012d}AAA", "OrderNumber": f"{n:08d}", "SystemModstamp": modstamp, "Account.Name": "Acme", **fields}


def staged_item(order: int, n: int) -> dict:
    return {"Id": f"802{order * 100 + n:012d}AAA", "OrderId": f"801{order:012d}AAA", "Quantity": 1.0, "Product2.Name": "X"}


def stage(target, run_id: str, orders: list[dict], items: list[dict] = ()) -> None:
    with target.engine.begin() as conn:
        stage_orders(conn, run_id, orders, schema=target.schema, now=NOW)
        stage_items(conn, run_id, list(items), schema=target.schema, now=NOW)


def staged_records(target, run_id: str, status=None) -> list[dict]:
    return [order for chunk in iter_staged(target.engine, run_id, status=status, schema=target.schema) for order, _ in chunk]


def test_staged_duplicates_keep_the_latest_modstamp(created_warehouse):
    target = created_warehouse
    early, late = "2026-01-02T03:04:05.000+0000", "2026-01-02T04:00:00Z"
    # the same order twice in one page, the newer first
    stage(target, "r", [staged_order(1, late, Status="new"), staged_order(1, early, Status="old")])
    # a later page brings an older copy (ignored), then a newer one (kept)
    stage(target, "r", [staged_order(2, late, Status="new")])
    stage(target, "r", [staged_order(2, early, Status="old")])
    stage(target, "r", [staged_order(3, early, Status="old")])
    stage(target, "r", [staged_order(3, late, Status="new")])

    assert [o["Status"] for o in staged_records(target, "r")] == ["new", "new", "new"]


def test_restaging_a_newer_version_resets_its_validation(created_warehouse):
    target = created_warehouse
    stage(target, "r", [staged_order(1), staged_order(2)])
    with target.engine.begin() as conn:
        mark_validation(conn, "r", {staged_order(1)["Id"]: ["has_products"]}, schema=target.schema)
    stage(target, "r", [staged_order(1, "2026-02-01T00:00:00.000+0000")])
    assert [o["Id"] for o in staged_records(target, "r", status="staged")] == [staged_order(1)["Id"]]
    assert [o["Id"] for o in staged_records(target, "r", status="valid")] == [staged_order(2)["Id"]]


def test_iter_staged_pages_in_bounded_chunks_with_their_items(created_warehouse):
    target = created_warehouse
    orders = [staged_order(n) for n in (5, 3, 7, 1, 6, 2, 4)]
    items = [staged_item(n, i) for n in (1, 2, 3, 4, 5, 6, 7) for i in range(n % 3)]
    stage(target, "r", orders, items)
    stage(target, "other-run", [staged_order(8)], [staged_item(8, 1)])

    chunks = list(iter_staged(target.engine, "r", status=None, chunk_size=3, schema=target.schema))
    assert [len(c) for c in chunks] == [3, 3, 1]
    ids = [order["Id"] for chunk in chunks for order, _ in chunk]
    assert ids == sorted(o["Id"] for o in orders)
    for chunk in chunks:
        for order, order_items in chunk:
            assert [i["OrderId"] for i in order_items] == [order["Id"]] * (int(order["OrderNumber"]) % 3)

    exact = list(iter_staged(target.engine, "r", status=None, chunk_size=7, schema=target.schema))
    assert [len(c) for c in exact] == [7]  # no trailing empty chunk
    with pytest.raises(ValueError, match="chunk_size"):
        next(iter_staged(target.engine, "r", chunk_size=0, schema=target.schema))


def test_iter_staged_by_status_passes_over_the_items_of_other_orders_in_its_range(created_warehouse):
    # A page's items are read as one id range: orders of another status inside it keep theirs.
    target = created_warehouse
    stage(target, "r", [staged_order(n) for n in range(1, 8)], [staged_item(n, i) for n in range(1, 8) for i in range(2)])
    invalid = {staged_order(n)["Id"] for n in (2, 3, 6)}
    with target.engine.begin() as conn:
        mark_validation(conn, "r", invalid, schema=target.schema)
    chunks = list(iter_staged(target.engine, "r", status="valid", chunk_size=2, schema=target.schema))
    got = {order["Id"]: sorted(i["Id"] for i in order_items) for chunk in chunks for order, order_items in chunk}
    assert got == {
        staged_order(n)["Id"]: sorted(staged_item(n, i)["Id"] for i in range(2)) for n in (1, 4, 5, 7)
    }


def test_one_of_matches_what_in_matches(created_warehouse):
    target = created_warehouse
    t = tables(target.schema).stg_orders
    stage(target, "r", [staged_order(n) for n in range(1, 6)])
    wanted = [staged_order(n)["Id"] for n in (1, 3, 5)] + ["801NOTSTAGED000000"]
    with target.engine.connect() as conn:
        found = conn.execute(sa.select(t.c.sf_order_id).where(warehouse.one_of(conn, t.c.sf_order_id, wanted))).scalars()
        assert sorted(found) == sorted(wanted[:3])
        assert conn.execute(sa.select(t.c.sf_order_id).where(warehouse.one_of(conn, t.c.sf_order_id, []))).all() == []


def test_analyze_refreshes_postgres_statistics(postgres_engine):
    schema = f"an_{uuid.uuid4().hex[:8]}"
    create_all(postgres_engine, schema)
    t = tables(schema).stg_orders
    with postgres_engine.begin() as conn:
        warehouse.analyze(conn, t)
        analyzed = conn.execute(
            sa.text("SELECT last_analyze FROM pg_stat_user_tables WHERE schemaname = :s AND relname = :t"),
            {"s": schema, "t": t.name},
        ).scalar()
        conn.execute(sa.schema.DropSchema(schema, cascade=True))
    assert analyzed is not None


def test_json_columns_are_written_compactly_and_read_back_even_when_old_rows_hold_nan():
    value = {"name": "Zoë", "amount": 12.5, "tags": ["a", None], "nested": {"n": 1}}
    assert warehouse.json_loads(warehouse.json_dumps(value)) == value
    assert warehouse.json_dumps(value) == json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    assert str(warehouse.json_loads('{"x": NaN}')["x"]) == "nan"  # json.dumps wrote NaN into older SQLite rows


def test_mark_validation_by_chunk_and_for_the_rest(created_warehouse):
    target = created_warehouse
    stage(target, "r", [staged_order(n) for n in range(1, 6)])
    ids = [staged_order(n)["Id"] for n in range(1, 6)]
    with target.engine.begin() as conn:
        mark_validation(conn, "r", {ids[1]: ["order_number_present", "has_products"]}, checked_ids=ids[:3], schema=target.schema)
    assert [o["Id"] for o in staged_records(target, "r", "valid")] == [ids[0], ids[2]]
    assert [o["Id"] for o in staged_records(target, "r", "staged")] == ids[3:]
    with target.engine.begin() as conn:
        mark_validation(conn, "r", {ids[4]}, schema=target.schema)
    assert [o["Id"] for o in staged_records(target, "r", "valid")] == [ids[0], ids[2], ids[3]]
    stg = {r["sf_order_id"]: r for r in rows(target, "stg_orders", "sf_order_id")}
    assert stg[ids[1]]["status"] == "invalid" and stg[ids[1]]["failed_checks"] == ["order_number_present", "has_products"]
    assert stg[ids[4]]["status"] == "invalid" and stg[ids[4]]["failed_checks"] is None


def test_transformed_order_json_round_trip_is_exact(make_transformed):
    record = make_transformed(
        1,
        account_name="Société Générale — 東京 ☎",
        street="Straße 1\nHinterhaus",
        notes="Bitte läuten 🔔",
        parent_account=2,
        items=((1, "S-ü", 1.5, 0.1), (2, None, 3.0, 19.99)),
        metadata={"Région": "Île-de-France", "nested": {"list": [1, 2.5, None, True]}},
    )
    text = transformed_to_json(record)
    assert "東京" in text  # stored readable, not \\u-escaped
    assert transformed_from_json(text) == record
    bare = make_transformed(2, parent_account=None, write_backs=False)
    assert transformed_from_json(transformed_to_json(bare)) == bare


def test_transformed_records_round_trip_through_staging_in_chunks(created_warehouse, make_transformed):
    target = created_warehouse
    records = [make_transformed(n, account_name=f"Kunde Nr. {n} — Müller") for n in (4, 1, 3, 2, 5)]
    with target.engine.begin() as conn:
        stage_transformed(conn, "r", records, schema=target.schema)
    formats, pages = [], []

    def result_format(_conn, cursor, statement, *_args):
        if "stg_transformed_batches" in statement and "payload" in statement:
            formats.append(getattr(cursor, "format", None))
        if "stg_transformed_batches" in statement and "LIMIT" in statement:
            pages.append(statement)

    sa.event.listen(target.engine, "after_cursor_execute", result_format)
    try:
        chunks = list(iter_transformed(target.engine, "r", chunk_size=2, schema=target.schema))
    finally:
        sa.event.remove(target.engine, "after_cursor_execute", result_format)
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [r for chunk in chunks for r in chunk] == sorted(records, key=lambda r: r.order.sf_order_id)
    # paged by key alone: a page's sort never reads (and converts) the payloads of the batches left
    assert pages and not any("payload" in statement for statement in pages)
    if target.engine.dialect.name == "postgresql":  # the payloads' bytes as they are, not as hex text
        assert formats and set(formats) == {1}  # psycopg.pq.Format.BINARY
    with target.engine.begin() as conn:
        clear_transformed(conn, "r", schema=target.schema)
    assert list(iter_transformed(target.engine, "r", schema=target.schema)) == []


def test_clear_run_and_purge_staging(created_warehouse, make_transformed):
    target = created_warehouse
    stage(target, "old", [staged_order(1)], [staged_item(1, 1)])
    stage(target, "keep", [staged_order(2)], [staged_item(2, 1)])
    with target.engine.begin() as conn:
        stage_transformed(conn, "old", [make_transformed(1)], schema=target.schema, now=NOW)
        stage_transformed(conn, "fresh", [make_transformed(3)], schema=target.schema, now=NOW + timedelta(days=6))
        clear_run(conn, "keep", schema=target.schema)
    assert staged_records(target, "keep") == []

    assert purge_staging(target.engine, timedelta(days=3), schema=target.schema, now=NOW + timedelta(days=7)) == 3
    assert staged_records(target, "old") == []
    assert [len(c) for c in iter_transformed(target.engine, "fresh", schema=target.schema)] == [1]


def test_stage_orders_refuses_records_without_id(created_warehouse):
    with pytest.raises(ValueError, match="without Id"), created_warehouse.engine.begin() as conn:
        stage_orders(conn, "r", [{"OrderNumber": "1"}], schema=created_warehouse.schema)


def test_unique_run_ids_do_not_collide(created_warehouse):
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    stage(created_warehouse, run_a, [staged_order(1, Status="a")])
    stage(created_warehouse, run_b, [staged_order(1, Status="b")])
    assert [o["Status"] for o in staged_records(created_warehouse, run_a)] == ["a"]
    assert [o["Status"] for o in staged_records(created_warehouse, run_b)] == ["b"]


def test_staged_batches_are_compressed_with_lz4_on_postgres(postgres_engine):
    schema = f"lz_{uuid.uuid4().hex[:8]}"
    create_all(postgres_engine, schema)
    create_all(postgres_engine, schema)  # a second task finds it set already
    query = sa.text(
        "SELECT attcompression FROM pg_attribute WHERE attrelid = CAST(:t AS regclass) AND attname = 'payload'"
    )
    with postgres_engine.begin() as conn:
        compression = conn.execute(query, {"t": f"{schema}.stg_transformed_batches"}).scalar()
        conn.execute(sa.schema.DropSchema(schema, cascade=True))
    assert compression == "l"
