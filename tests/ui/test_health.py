"""The health line of the External Orders view: last success, next run, healthy / failing / stalled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from salesforce_orders.alerts import NOTIFIED_KEY
from salesforce_orders.load import WATERMARK_KEY
from salesforce_orders.schema_versions import create_all
from salesforce_orders.warehouse import tables, upsert
from salesforce_orders_ui.health import Schedule

NOW = datetime.now(UTC).replace(microsecond=0)  # set anew for each test (the fixture below): the page tells ages from the clock


@pytest.fixture(autouse=True)
def now(monkeypatch) -> datetime:
    moment = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setitem(globals(), "NOW", moment)
    return moment


def next_run() -> Schedule:
    return Schedule(paused=False, next_run_after=NOW + timedelta(minutes=9))


@pytest.fixture
def warehouse(sqlite_engine):
    create_all(sqlite_engine)
    return sqlite_engine


def add_run(engine, run_id: str, status: str, finished_minutes_ago: int, **extra) -> None:
    finished = NOW - timedelta(minutes=finished_minutes_ago)
    row = {"run_id": run_id, "dag_run_id": run_id, "status": status, "started_at": finished - timedelta(minutes=2),
           "finished_at": finished, **extra}
    with engine.begin() as conn:
        conn.execute(sa.insert(tables().import_runs).values(**row))


def set_mark(engine, key: str, minutes_ago: int, value: str = "x") -> None:
    with engine.begin() as conn:
        upsert(conn, tables().sync_state, [{"key": key, "value": value, "updated_at": NOW - timedelta(minutes=minutes_ago)}], ["key"])


def health_line(pages, engine, schedule: Schedule | None = None) -> str:
    page = pages(engine, schedule=schedule or next_run()).get("/runs")
    assert page.status_code == 200
    return page.text.split('id="health"', 1)[1].split("</div>", 1)[0]


def test_a_recent_success_is_healthy_with_its_age_and_the_next_run(allowed, external_orders_pages, warehouse):
    add_run(warehouse, "scheduled__1", "success", 7)
    line = health_line(external_orders_pages, warehouse)
    assert 'data-state="healthy"' in line
    assert "<b>7 min ago</b>" in line and "scheduled__1" in line
    assert f"{(NOW + timedelta(minutes=9)):%Y-%m-%d %H:%M:%S} UTC" in line.split('id="next-run"')[1]
    assert "Stalled" not in line


def test_a_failed_latest_run_is_failing_with_its_stage_and_reason(allowed, external_orders_pages, warehouse):
    add_run(warehouse, "scheduled__1", "success", 20)
    add_run(warehouse, "scheduled__2", "failed", 5, failed_stage="validate", failed_tries=1,
            failure_reason="12 of 40 orders (30%) failed validation, more than max_invalid_share 10%")
    line = health_line(external_orders_pages, warehouse)
    assert 'data-state="failing"' in line
    assert "failed at <b>validate</b>: 12 of 40 orders (30%) failed validation" in line
    assert "Stalled" not in line


def test_no_success_past_the_alert_threshold_is_a_stalled_import(allowed, external_orders_pages, warehouse):
    add_run(warehouse, "scheduled__1", "success", 200)
    add_run(warehouse, "scheduled__2", "failed", 3, failed_stage="extract", failed_tries=4,
            failure_reason="extract: Salesforce (Airflow connection 'salesforce_default') did not answer: ...")
    set_mark(warehouse, WATERMARK_KEY, 202)
    set_mark(warehouse, NOTIFIED_KEY, 60, value="scheduled__1")
    line = health_line(external_orders_pages, warehouse)
    assert 'data-state="stalled"' in line
    assert "<b>200 min ago</b>" in line
    assert "no import has succeeded for more than 120 min" in line
    assert f"{(NOW - timedelta(minutes=202)):%Y-%m-%d %H:%M:%S} UTC" in line  # the frozen watermark
    assert f"alert went out {(NOW - timedelta(minutes=60)):%Y-%m-%d %H:%M:%S} UTC" in line


def test_a_resync_of_chosen_orders_or_a_backfill_says_nothing_of_the_imports_health(allowed, external_orders_pages, warehouse):
    """A one-order re-sync or a backfill of a past interval that succeeds while the scheduled runs
    fail shows no healthy import, and one that fails no failing import."""
    add_run(warehouse, "scheduled__1", "success", 200, mode="incremental")
    add_run(warehouse, "scheduled__2", "failed", 20, mode="incremental", failed_stage="extract", failed_tries=4,
            failure_reason="extract: Salesforce (Airflow connection 'salesforce_default') did not answer: ...")
    add_run(warehouse, "manual__resync", "success", 5, mode="order_numbers")
    add_run(warehouse, "backfill__old", "success", 3, mode="backfill")
    line = health_line(external_orders_pages, warehouse)
    assert 'data-state="stalled"' in line and "<b>200 min ago</b>" in line and "scheduled__1" in line

    add_run(warehouse, "scheduled__3", "success", 2, mode="incremental")
    add_run(warehouse, "manual__resync_2", "failed", 1, mode="order_numbers", failed_stage="load", failed_tries=1,
            failure_reason="load: ...")
    assert 'data-state="healthy"' in health_line(external_orders_pages, warehouse)


def test_a_paused_dag_is_said_in_the_health_line_and_in_the_empty_state(allowed, external_orders_pages, warehouse):
    add_run(warehouse, "scheduled__1", "success", 7)
    paused = Schedule(paused=True, next_run_after=None)
    assert "none: the salesforce_orders_import DAG is paused" in health_line(external_orders_pages, warehouse, paused)

    empty = external_orders_pages(problem="The warehouse has no orders table yet: no import has run.", schedule=paused).get("/")
    assert "The salesforce_orders_import DAG is paused: no run starts until it is unpaused" in empty.text
    running = external_orders_pages(problem="The warehouse has no orders table yet: no import has run.", schedule=next_run()).get("/")
    assert "is paused" not in running.text
