"""The health line at the top of the External Orders view: is the import working, and when is it next?

From the warehouse: the last successful run, the latest run, the freshness check's alert (the
``sync_state`` mark ``salesforce_orders.alerts`` keeps) and the watermark's last move. From
Airflow's metadata DB: whether the import DAG is paused and when its next run is due.

The import is *stalled* when no run has succeeded within ``notifications.no_success_after_minutes``
(the freshness alert's threshold) although runs were tried: failing runs and a frozen watermark.
Runs are the import's runs, those that read every change up to now (``report.keeping_current``):
a re-sync of chosen orders or a backfill says nothing of its health.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from salesforce_orders.alerts import NOTIFIED_KEY
from salesforce_orders.load import WATERMARK_KEY
from salesforce_orders.report import keeping_current
from salesforce_orders.warehouse.definitions import Tables

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schedule:
    """What Airflow says of the import DAG (None: it could not be asked)."""

    paused: bool | None
    next_run_after: datetime | None


@dataclass(frozen=True)
class Health:
    state: str  # "healthy", "failing", "stalled", "disabled" or "no runs yet"
    last_success: dict[str, Any] | None
    minutes_since_success: int | None
    latest: dict[str, Any] | None
    watermark_moved_at: datetime | None
    threshold_minutes: int
    freshness_alerted_at: datetime | None  # the "no successful import" alert of the current spell
    schedule: Schedule


def _aware(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def import_schedule(dag_id: str) -> Schedule:
    """Paused, and the next run's time, from Airflow's metadata DB (the api-server's own session)."""
    try:
        from airflow.models.dag import DagModel
        from airflow.utils.session import create_session

        with create_session() as session:
            dag = session.get(DagModel, dag_id)
            if dag is None:
                return Schedule(None, None)
            return Schedule(bool(dag.is_paused), _aware(dag.next_dagrun_create_after))
    except Exception as exc:  # noqa: BLE001 - the health line says "unknown" rather than failing the page
        log.warning("Could not read the schedule of %s from Airflow: %s", dag_id, exc)
        return Schedule(None, None)


def health(conn: sa.Connection, t: Tables, *, threshold_minutes: int, schedule: Schedule, now: datetime | None = None) -> Health:
    now = now or datetime.now(UTC)
    runs = t.import_runs
    imports = sa.select(runs).where(keeping_current(runs))  # a re-sync of chosen orders or a backfill says nothing of it
    latest = conn.execute(imports.order_by(runs.c.started_at.desc().nulls_last(), runs.c.run_id.desc()).limit(1)).mappings().first()
    last_success = (
        conn.execute(imports.where(runs.c.status == "success").order_by(runs.c.finished_at.desc()).limit(1)).mappings().first()
    )
    marks_query = sa.select(t.sync_state.c.key, t.sync_state.c.updated_at).where(t.sync_state.c.key.in_([WATERMARK_KEY, NOTIFIED_KEY]))
    marks = {key: updated_at for key, updated_at in conn.execute(marks_query)}
    since_success = None
    if last_success is not None and last_success["finished_at"] is not None:
        since_success = int((now - _aware(last_success["finished_at"])).total_seconds() // 60)
    overdue = since_success is None or since_success > threshold_minutes
    if latest is None:
        state = "no runs yet"
    elif latest["status"] in ("success", "disabled"):
        state = "healthy" if latest["status"] == "success" else "disabled"
    elif overdue and (latest["status"] == "failed" or last_success is not None):
        state = "stalled"  # runs were tried, none succeeded within the alert's threshold: the watermark is frozen
    elif latest["status"] == "failed":
        state = "failing"
    else:
        state = "healthy"  # a run under way, the last success recent enough
    alerted = _aware(marks.get(NOTIFIED_KEY)) if state == "stalled" else None
    return Health(
        state=state,
        last_success=dict(last_success) if last_success else None,
        minutes_since_success=since_success,
        latest=dict(latest) if latest else None,
        watermark_moved_at=_aware(marks.get(WATERMARK_KEY)),
        threshold_minutes=threshold_minutes,
        freshness_alerted_at=alerted,
        schedule=schedule,
    )
