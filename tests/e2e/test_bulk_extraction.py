"""Extraction by volume: the REST path and the Bulk API 2.0 path give identical warehouse results."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from salesforce_orders.warehouse import create_sqlite_engine
from salesforce_orders_local.airflow_env import connection_env, sqlite_warehouse_connection

NO_WRITE_BACK = {"mark_imported": False, "set_customer_id": False, "x_out_card_fields": False, "x_out_card_fields_not_imported": False}
VOLATILE = {"first_imported_at", "last_imported_at", "last_run_id", "sf_state_changed_at", "updated_at", "first_seen_at", "id", "run_id", "quarantined_at", "staged_at"}


def snapshot(engine: sa.Engine) -> dict[str, list[tuple]]:
    tables = ("external_orders", "external_order_items", "order_services", "customers", "customer_locations", "quarantined_orders")
    out = {}
    with engine.connect() as conn:
        for table in tables:
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
            out[table] = sorted(tuple((k, str(v)) for k, v in sorted(r.items()) if k not in VOLATILE) for r in rows)
    return out


@pytest.mark.parametrize("harness", ["sqlite"], indirect=True)
def test_rest_and_bulk_extraction_load_the_same(harness, tmp_path):
    harness.set_config(write_back=NO_WRITE_BACK, bulk_threshold=10**9)
    rest = harness.run()
    assert rest["status"] == "success" and rest["extracted"] > 0
    rest_tables = snapshot(harness.engine)

    bulk_path = tmp_path / "bulk.db"
    harness.monkeypatch.setenv(*next(iter(connection_env("orders_warehouse", sqlite_warehouse_connection(bulk_path)).items())))
    rest_engine, harness.engine = harness.engine, create_sqlite_engine(str(bulk_path))
    harness.org.admin.reset_stats()
    harness.set_config(bulk_threshold=0)
    bulk = harness.run()
    assert bulk["status"] == "success"
    stats = harness.org.admin.stats()
    assert stats["calls"].get("bulk_query", 0) > 0, stats
    assert (bulk["extracted"], bulk["valid"], bulk["quarantined"], bulk["inserted"]) == (
        rest["extracted"], rest["valid"], rest["quarantined"], rest["inserted"]
    )
    assert snapshot(harness.engine) == rest_tables
    rest_engine.dispose()
