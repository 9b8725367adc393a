"""The run's import_runs row (counts per stage, API calls, duration, status) and its log summary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from salesforce_orders.report import STAGES, finish_run, start_run, summary_lines
from salesforce_orders.runs import INCREMENTAL, RunPlan
from salesforce_orders.schema_versions import create_all
from salesforce_orders.soql import ExtractWindow
from salesforce_orders.warehouse import tables

WINDOW_START = datetime(2026, 3, 1, 11, 50, tzinfo=UTC)
WINDOW_END = datetime(2026, 3, 1, 12, 15, tzinfo=UTC)
PLAN = RunPlan(INCREMENTAL, ExtractWindow(WINDOW_START, WINDOW_END, datetime(2024, 3, 1, tzinfo=UTC)))
RESULTS = {
    "extract": {"extracted": 40, "api_calls": 3},
    "validate": {"valid": 37, "invalid": 3},
    "transform": {"skipped": 2},
    "load": {"inserted": 30, "updated": 4, "unchanged": 1},
    "mark_status_changes": {"deactivated": 2, "api_calls": 1},
    "write_back": {"written": 60, "failed": 2, "dead": 1, "api_calls": 5},
    "mask_card_fields": {"written": 2, "failed": 1, "api_calls": 1},
}


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    create_all(sqlite_engine)
    return sqlite_engine


def started(engine: sa.Engine, run_id: str = "run-1") -> datetime:
    start_run(engine, run_id=run_id, dag_run_id="scheduled__2026-03-01T12:00:00+00:00", run_type="scheduled", plan=PLAN)
    t = tables().import_runs
    with engine.connect() as conn:
        return conn.execute(sa.select(t.c.started_at).where(t.c.run_id == run_id)).scalar_one()


def test_start_run_records_the_window_and_a_running_status(engine):
    start_run(engine, run_id="run-1", dag_run_id="manual__1", run_type="manual", plan=PLAN)

    t = tables().import_runs
    with engine.connect() as conn:
        row = conn.execute(sa.select(t)).mappings().one()
    assert (row["run_id"], row["dag_run_id"], row["run_type"], row["mode"]) == ("run-1", "manual__1", "manual", "incremental")
    assert (row["window_start"], row["window_end"]) == (WINDOW_START, WINDOW_END)
    assert row["status"] == "running" and row["started_at"] is not None and row["finished_at"] is None


def test_finish_run_with_every_stage_is_a_success_with_its_counts(engine):
    start = started(engine)
    finished = start + timedelta(seconds=12.5)

    row = finish_run(engine, run_id="run-1", results=RESULTS, finished=finished)

    assert row["status"] == "success" and row["message"] is None
    assert {k: row[k] for k in (
        "extracted", "valid", "quarantined", "skipped", "inserted", "updated", "unchanged",
        "written_back", "writeback_failed", "deactivated", "api_calls",
    )} == {
        "extracted": 40, "valid": 37, "quarantined": 3, "skipped": 2, "inserted": 30, "updated": 4, "unchanged": 1,
        "written_back": 62, "writeback_failed": 4, "deactivated": 2, "api_calls": 10,
    }
    assert (row["finished_at"], row["duration_seconds"]) == (finished, 12.5)
    assert (row["mode"], row["window_start"]) == ("incremental", WINDOW_START)  # kept from the start


def test_a_stage_without_a_result_fails_the_run_and_is_named(engine):
    start = started(engine)
    results = {**RESULTS, "load": None, "mark_status_changes": None, "write_back": None, "mask_card_fields": {"written": 0}}

    row = finish_run(engine, run_id="run-1", results=results, finished=start + timedelta(seconds=3))

    assert row["status"] == "failed"
    assert row["message"] == (
        "stages without a result (failed, skipped or not reached): load, mark_status_changes, write_back"
    )
    assert (row["extracted"], row["quarantined"], row["inserted"], row["written_back"]) == (40, 3, 0, 0)
    assert row["api_calls"] == 3


def test_finish_run_without_a_start_row_still_records_the_run(engine):
    row = finish_run(engine, run_id="run-lost", results={}, finished=WINDOW_END)

    assert row["status"] == "failed" and row["duration_seconds"] is None
    assert all(stage in row["message"] for stage in STAGES)


def test_summary_lines():
    row = {
        "run_id": "run-1", "status": "success", "mode": "incremental",
        "window_start": WINDOW_START, "window_end": WINDOW_END,
        "extracted": 40, "valid": 37, "quarantined": 3, "skipped": 2,
        "inserted": 30, "updated": 4, "unchanged": 1, "deactivated": 2,
        "written_back": 60, "writeback_failed": 3, "api_calls": 9, "duration_seconds": 12.5, "message": None,
    }

    assert summary_lines(row) == [
        "Salesforce orders import run-1: SUCCESS (incremental, window 2026-03-01 11:50:00+00:00 .. 2026-03-01 12:15:00+00:00)",
        "  extracted 40, valid 37, quarantined 3, skipped 2",
        "  inserted 30, updated 4, unchanged 1, marked deactivated/deleted 2",
        "  written back 60 records (orders and accounts), write-back failures 3",
        "  API calls 9, duration 12.5 s",
    ]


def test_summary_lines_of_a_failed_first_run_name_the_missing_stages(engine):
    row = finish_run(engine, run_id="run-1", results={"extract": {"extracted": 5}}, finished=WINDOW_END)

    lines = summary_lines(row)

    assert lines[0].startswith("Salesforce orders import run-1: FAILED (")
    assert lines[0].endswith("window lookback start .. now)")
    assert lines[-1] == (
        "  stages without a result (failed, skipped or not reached): "
        "validate, transform, load, mark_status_changes, write_back, mask_card_fields"
    )
