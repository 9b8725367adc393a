"""The run's record in ``import_runs`` and the summary printed at the end of the task log."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from .runs import FULL_RESYNC, INCREMENTAL, SINCE, RunPlan, parse_watermark

STAGES = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back", "mask_card_fields")
_WRITING_BACK = ("write_back", "mask_card_fields")
_RUNS_AFTER_FAILURES = ("mask_card_fields",)  # the DAG runs it whatever happened upstream (trigger rule all_done)


# Runs that read every change from the watermark (or the lookback) on: their success says the
# warehouse is current. A re-sync of chosen orders (by number, or an event run's ids) and a backfill
# of a past interval do not, so a one-order re-sync that succeeds while the scheduled runs fail
# neither silences the freshness alert nor shows a healthy import. (No mode: a run that stopped
# before it planned its window, or one recorded while the import was disabled.)
_KEEPING_CURRENT = (INCREMENTAL, SINCE, FULL_RESYNC)


def keeping_current(runs: sa.Table) -> sa.ColumnElement[bool]:
    """The ``import_runs`` rows of runs that keep the whole warehouse current (see above)."""
    return sa.or_(runs.c.mode.in_(_KEEPING_CURRENT), runs.c.mode.is_(None))


def start_run(engine: sa.Engine, *, run_id: str, dag_run_id: str, run_type: str, plan: RunPlan, schema: str | None = None) -> None:
    from .warehouse.definitions import tables
    from .warehouse.writes import upsert

    window = plan.as_dict()
    row = {
        "run_id": run_id,
        "dag_run_id": dag_run_id,
        "run_type": run_type,
        "mode": plan.mode,
        # a run without a change window (the first, a re-sync) reads back to the lookback date
        "window_start": parse_watermark(window["changed_from"] or window["since"] or window["activated_since"]),
        "window_end": parse_watermark(window["changed_to"]),
        "started_at": datetime.now(UTC),
        "status": "running",
        "updated_at": datetime.now(UTC),
    }
    t = tables(schema).import_runs
    with engine.begin() as conn:
        # A retry of the extract keeps the first try's start: the run's duration includes its retries.
        first_start = conn.execute(sa.select(t.c.started_at).where(t.c.run_id == run_id)).scalar()
        upsert(conn, t, [{**row, "started_at": first_start or row["started_at"]}], ["run_id"])


def keep_api_usage_ceiling(engine: sa.Engine, run_id: str, ceiling: int | None, *, schema: str | None = None) -> int | None:
    """The run's API usage ceiling: ``ceiling`` on its extract's first try, the first try's on a
    retry (which would otherwise take a new share of what the failed try left)."""
    from .warehouse.definitions import tables

    t = tables(schema).import_runs
    with engine.begin() as conn:
        if ceiling is not None:
            conn.execute(sa.update(t).where(t.c.run_id == run_id, t.c.api_usage_ceiling.is_(None)).values(api_usage_ceiling=ceiling))
        return conn.execute(sa.select(t.c.api_usage_ceiling).where(t.c.run_id == run_id)).scalar()


def _written_by(engine: sa.Engine, schema: str | None, run_id: str) -> int:
    """The outbox rows this run's write-backs sent through (DONE, last updated by the run)."""
    from .warehouse.definitions import OUTBOX_DONE, tables

    w = tables(schema).writeback_outbox
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).where(w.c.updated_run_id == run_id, w.c.state == OUTBOX_DONE)).scalar() or 0


REASON_LENGTH = 300  # a failure's reason is one line of the runs table, not the task log


def one_line_reason(error: BaseException) -> str:
    """The error's first line, card numbers masked, cut to one line of the runs table."""
    from .redaction import mask_card_numbers

    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    first = mask_card_numbers(first) or first
    return first if len(first) <= REASON_LENGTH else first[: REASON_LENGTH - 1] + "…"


def record_failure(engine: sa.Engine, *, run_id: str, stage: str, error: BaseException, schema: str | None = None) -> None:
    """Note that a try of ``stage`` failed: the stage, its reason, and how often it has failed in this run.

    Airflow keeps the exception in the task log only; the row lets the runs table say where and why."""
    from .warehouse.definitions import tables
    from .warehouse.writes import upsert

    t = tables(schema).import_runs
    with engine.begin() as conn:
        existing = conn.execute(sa.select(t.c.status, t.c.failed_stage, t.c.failed_tries).where(t.c.run_id == run_id)).first()
        if stage in _RUNS_AFTER_FAILURES and existing is not None and existing.failed_stage not in (None, stage):
            return  # it ran because an earlier stage failed, and failed too (an outage): the earlier one is the cause
        tries = (existing.failed_tries or 0) + 1 if existing is not None and existing.failed_stage == stage else 1
        row = {"run_id": run_id, "status": existing.status if existing is not None else "running",
               "failed_stage": stage, "failure_reason": one_line_reason(error), "failed_tries": tries}
        upsert(conn, t, [row], ["run_id"])


def _get(results: Mapping[str, Mapping[str, Any] | None], stage: str, key: str, default: int = 0) -> Any:
    return (results.get(stage) or {}).get(key, default)


def finish_run(
    engine: sa.Engine,
    *,
    run_id: str,
    results: Mapping[str, Mapping[str, Any] | None],
    schema: str | None = None,
    finished: datetime | None = None,
    disabled: bool = False,
    run_started: datetime | None = None,
) -> dict[str, Any]:
    """Write the run's counts; the run failed when a stage left no result, unless the import is
    ``disabled`` in the config and its extract did nothing (the run is recorded as disabled).

    ``run_started``: when the DAG run started, so the duration includes every retry of every stage
    (the row's own ``started_at`` is the extract's first try)."""
    from .warehouse.definitions import tables
    from .warehouse.writes import upsert

    t = tables(schema).import_runs
    finished = finished or datetime.now(UTC)
    with engine.connect() as conn:
        existing = conn.execute(sa.select(t).where(t.c.run_id == run_id)).mappings().first()
    started = run_started or (existing["started_at"] if existing else None)
    if started is not None and started.tzinfo is None:
        started = started.replace(tzinfo=UTC)
    missing = [s for s in STAGES if results.get(s) is None]
    disabled = disabled and results.get("extract") is None
    written_back = sum(_get(results, stage, "written") for stage in _WRITING_BACK)
    if any(results.get(stage) is None for stage in _WRITING_BACK):
        # A write-back that stopped half-way (a limit, an outage: its error ended the task) had
        # written records already: the outbox says which, the stage's own count went with it.
        written_back = max(written_back, _written_by(engine, schema, run_id))
    row = {
        "run_id": run_id,
        "finished_at": finished,
        "updated_at": finished,
        "status": "disabled" if disabled else "success" if not missing else "failed",
        "extracted": _get(results, "extract", "extracted"),
        "valid": _get(results, "validate", "valid"),
        "quarantined": _get(results, "validate", "invalid"),
        "skipped": _get(results, "transform", "skipped"),
        "inserted": _get(results, "load", "inserted"),
        "updated": _get(results, "load", "updated"),
        "unchanged": _get(results, "load", "unchanged"),
        "written_back": written_back,
        "writeback_failed": sum(_get(results, stage, "failed") + _get(results, stage, "dead") for stage in _WRITING_BACK),
        "deactivated": _get(results, "mark_status_changes", "deactivated"),
        "api_calls": sum(_get(results, s, "api_calls") for s in STAGES),
        "duration_seconds": round((finished - started).total_seconds(), 2) if started else None,
        "message": (
            "import disabled: 'enabled' is false in the salesforce_orders_config Variable"
            if disabled
            else None
            if not missing
            else f"stages without a result (failed, skipped or not reached): {', '.join(missing)}"
        ),
    }
    recorded = existing["failed_stage"] if existing else None
    if not missing or (recorded and results.get(recorded) is not None):
        # the stage noted failed a try and then succeeded: the run did not fail there
        row.update(failed_stage=None, failure_reason=None, failed_tries=None)
    with engine.begin() as conn:
        upsert(conn, t, [row], ["run_id"])
        return dict(conn.execute(sa.select(t).where(t.c.run_id == run_id)).mappings().one())


def summary_lines(row: Mapping[str, Any]) -> list[str]:
    """The run summary as a few log lines an on-call engineer reads at a glance."""
    window = f"{row.get('window_start') or 'lookback start'} .. {row.get('window_end') or 'now'}"
    lines = [
        f"Salesforce orders import {row['run_id']}: {str(row.get('status')).upper()} ({row.get('mode')}, window {window})",
        f"  extracted {row['extracted']}, valid {row['valid']}, quarantined {row['quarantined']}, skipped {row['skipped']}",
        f"  inserted {row['inserted']}, updated {row['updated']}, unchanged {row['unchanged']}, marked deactivated/deleted {row['deactivated']}",
        f"  written back {row['written_back']} records (orders and accounts), write-back failures {row['writeback_failed']}",
        f"  API calls {row['api_calls']}, duration {row.get('duration_seconds')} s",
    ]
    if row.get("message"):
        lines.append(f"  {row['message']}")
    return lines
