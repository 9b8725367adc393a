"""Retention: staged rows and finished write-back rows go after retention_days, run by the report
task at most once an hour; what the views and lifecycles show is the same before and after."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from salesforce_orders.model import COMPLETE
from salesforce_orders.retention import PURGE_EVERY, purge_expired
from salesforce_orders.staging import stage_items, stage_orders
from salesforce_orders.warehouse import tables
from salesforce_orders.writeback import lifecycle_for

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=3)
OLD, FRESH = NOW - timedelta(days=5), NOW - timedelta(days=1)


def outbox_row(record: str, state: str, updated_at: datetime, attempts: int = 1) -> dict:
    return {
        "sf_object": "Order",
        "sf_record_id": record,
        "sf_order_id": record,
        "action": "mark_imported",
        "fields": {"Status": "Imported"},
        "state": state,
        "attempts": attempts,
        "next_attempt_at": None,
        "last_error_code": None if state in ("DONE", "PENDING") else "FIELD_CUSTOM_VALIDATION_EXCEPTION",
        "last_error_message": None,
        "created_run_id": "r",
        "updated_run_id": "r",
        "created_at": updated_at,
        "updated_at": updated_at,
    }


# Per Salesforce record, its outbox rows oldest first: (state, last updated), and whether each stays.
HISTORIES = {
    "written long ago": [("DEAD", OLD, False), ("FAILED", OLD, False), ("DONE", OLD, False)],
    "written lately": [("FAILED", OLD, True), ("DONE", FRESH, True)],
    "given up long ago": [("DONE", OLD, False), ("DEAD", OLD, True)],  # still an open failure
    "failing": [("FAILED", OLD, True)],
    "waiting": [("DONE", OLD, False), ("PENDING", OLD, True)],
}


def fill(target) -> dict[int, tuple[str, bool]]:
    """Staged rows of an old and a fresh run, and the outbox histories; returns {outbox id: (record, stays)}."""
    t = tables(target.schema)
    rows: dict[int, tuple[str, bool]] = {}
    with target.engine.begin() as conn:
        for run, staged_at in (("old-run", OLD), ("fresh-run", FRESH)):
            stage_orders(conn, run, [{"Id": "801000000000001AAA", "SystemModstamp": None}], schema=target.schema, now=staged_at)
            stage_items(conn, run, [{"Id": "802000000000001AAA", "OrderId": "801000000000001AAA"}], schema=target.schema, now=staged_at)
        for record, history in HISTORIES.items():
            for state, updated_at, stays in history:
                row_id = conn.execute(sa.insert(t.writeback_outbox).values(outbox_row(record, state, updated_at))).inserted_primary_key[0]
                rows[row_id] = (record, stays)
    return rows


def snapshot(target) -> tuple[list, dict]:
    """What users see: the open-failure view, and each order's lifecycle as its rows give it (an
    order whose rows all went was complete: its newest row was written)."""
    t = tables(target.schema)
    w = t.writeback_outbox
    view = f"{t.metadata.schema}.v_open_failures" if t.metadata.schema else "v_open_failures"
    with target.engine.connect() as conn:
        failures = conn.execute(sa.text(f"SELECT outbox_id FROM {view} ORDER BY 1")).all()
        rows = conn.execute(sa.select(w).order_by(w.c.id)).all()
    lifecycles = {record: (COMPLETE, None) for record in HISTORIES}
    for record in HISTORIES:
        if own := [row for row in rows if row.sf_record_id == record]:
            lifecycles[record] = lifecycle_for(own)
    return failures, lifecycles


def test_old_staging_and_finished_outbox_rows_go_the_rest_stays(created_warehouse):
    target = created_warehouse
    rows = fill(target)
    before = snapshot(target)
    purged = purge_expired(target.engine, RETENTION, schema=target.schema, now=NOW)
    t = tables(target.schema)
    with target.engine.connect() as conn:
        runs = sorted({r for table in (t.stg_orders, t.stg_order_items) for r in conn.execute(sa.select(table.c.run_id)).scalars()})
        left = set(conn.execute(sa.select(t.writeback_outbox.c.id)).scalars())
    assert runs == ["fresh-run"]
    assert left == {row_id for row_id, (_, stays) in rows.items() if stays}
    assert purged.staged_rows == 2 and purged.outbox_rows == len(rows) - len(left)
    assert snapshot(target) == before


def test_the_purge_runs_at_most_once_an_hour_and_again_deletes_nothing_more(created_warehouse):
    target = created_warehouse
    fill(target)
    assert purge_expired(target.engine, RETENTION, schema=target.schema, now=NOW) is not None
    assert purge_expired(target.engine, RETENTION, schema=target.schema, now=NOW + PURGE_EVERY / 2) is None
    again = purge_expired(target.engine, RETENTION, schema=target.schema, now=NOW + PURGE_EVERY)
    assert (again.staged_rows, again.outbox_rows) == (0, 0)
