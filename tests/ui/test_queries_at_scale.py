"""The Orders page on 100,000 orders: every filter pages right, and the unfiltered page reads an index
instead of sorting everything. (How long a page takes is measured, not asserted: a test does not
depend on the machine's speed. The figures are printed with ``-s``: 10-150 ms per page with its count.)"""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from salesforce_orders.warehouse import tables
from salesforce_orders_ui import queries

ORDERS = 100_000

# 100k orders generated inside the database: a customer per 10 orders, every 50th FAILED, one a minute.
_GENERATE = {
    "sqlite": """
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :count)
        INSERT INTO external_orders (sf_order_id, order_number, external_name, salesforce_url, customer_id, sf_account_id,
            account_name, service_address_source, destination, metadata, is_zero_total, content_hash, lifecycle_state,
            lifecycle_error, sf_state, sf_state_changed_at, first_imported_at, last_imported_at, last_run_id)
        SELECT printf('801%012dAAA', i), printf('%08d', i), printf('%08d Account %d', i, i / 10),
            'https://example.my.salesforce.com/' || i, 'C-' || (i / 10), printf('001%012dAAA', i / 10),
            'Account ' || (i / 10), 'billing', 'request', '{}', 0, 'h',
            CASE WHEN i % 50 = 0 THEN 'FAILED' ELSE 'COMPLETE' END,
            CASE WHEN i % 50 = 0 THEN 'Order: INVALID_FIELD: bad' END, 'active',
            datetime('2026-01-01', '+' || i || ' minutes'), datetime('2026-01-01', '+' || i || ' minutes'),
            datetime('2026-01-01', '+' || i || ' minutes'), 'run'
        FROM n
    """,
    "postgresql": """
        INSERT INTO external_orders (sf_order_id, order_number, external_name, salesforce_url, customer_id, sf_account_id,
            account_name, service_address_source, destination, metadata, is_zero_total, content_hash, lifecycle_state,
            lifecycle_error, sf_state, sf_state_changed_at, first_imported_at, last_imported_at, last_run_id)
        SELECT format('801%s', lpad(i::text, 12, '0')) || 'AAA', lpad(i::text, 8, '0'), lpad(i::text, 8, '0') || ' Account ' || (i / 10),
            'https://example.my.salesforce.com/' || i, 'C-' || (i / 10), format('001%s', lpad((i / 10)::text, 12, '0')) || 'AAA',
            'Account ' || (i / 10), 'billing', 'request', '{}'::jsonb, false, 'h',
            CASE WHEN i % 50 = 0 THEN 'FAILED' ELSE 'COMPLETE' END,
            CASE WHEN i % 50 = 0 THEN 'Order: INVALID_FIELD: bad' END, 'active',
            timestamptz '2026-01-01 00:00+00' + i * interval '1 minute', timestamptz '2026-01-01 00:00+00' + i * interval '1 minute',
            timestamptz '2026-01-01 00:00+00' + i * interval '1 minute', 'run'
        FROM generate_series(1, :count) AS i
    """,
}


@pytest.fixture
def big_warehouse(created_warehouse):
    target = created_warehouse
    with target.engine.begin() as conn:
        if target.schema:
            conn.execute(sa.text(f'SET LOCAL search_path TO "{target.schema}"'))
        conn.execute(sa.text(_GENERATE[target.dialect]), {"count": ORDERS})
        if target.dialect == "postgresql":
            conn.execute(sa.text("ANALYZE external_orders"))
    return target


CASES = [
    (queries.OrderFilter(), 1, ORDERS),
    (queries.OrderFilter(), 1500, ORDERS),
    (queries.OrderFilter(state="FAILED"), 3, ORDERS // 50),
    (queries.OrderFilter(failed_only=True), 1, ORDERS // 50),
    (queries.OrderFilter(search="00054321"), 1, 1),
    (queries.OrderFilter(search="account 4321"), 1, 10),
]


def test_every_filter_pages_through_100k_orders(big_warehouse):
    t = tables(big_warehouse.schema)
    with big_warehouse.engine.connect() as conn:
        for flt, page, expected_total in CASES:
            started = time.perf_counter()
            result = queries.list_orders(conn, t, flt, page)
            elapsed = time.perf_counter() - started
            assert result.total == expected_total, flt
            assert len(result.rows) == min(queries.DEFAULT_PAGE_SIZE, expected_total - (page - 1) * queries.DEFAULT_PAGE_SIZE)
            stamps = [r["last_imported_at"] for r in result.rows]
            assert stamps == sorted(stamps, reverse=True)
            print(f"{big_warehouse.dialect} {flt} page {page}: {elapsed * 1000:.0f} ms")


def test_the_unfiltered_page_reads_the_last_import_index_instead_of_sorting(big_warehouse):
    t = tables(big_warehouse.schema)
    query = sa.select(t.external_orders.c.sf_order_id).order_by(
        t.external_orders.c.last_imported_at.desc(), t.external_orders.c.sf_order_id.desc()
    ).limit(50)
    explain = "EXPLAIN QUERY PLAN" if big_warehouse.dialect == "sqlite" else "EXPLAIN"
    with big_warehouse.engine.connect() as conn:
        if big_warehouse.schema:
            conn.execute(sa.text(f'SET search_path TO "{big_warehouse.schema}"'))
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        plan = " | ".join(str(row[-1]) for row in conn.exec_driver_sql(f"{explain} {sql}"))
    assert "ix_external_orders_last_imported_at" in plan, plan
