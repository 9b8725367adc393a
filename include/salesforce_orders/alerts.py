"""Alerts for on-call: a failed import run, and no successful import for too long.

Both carry the run's summary from ``import_runs`` and a link to Airflow, and go out through the
Airflow providers' notifiers (``SmtpNotifier``, ``SlackWebhookNotifier``) to the channels of the
config's ``notifications`` section. With no channel set nothing is sent: the alert is only logged.

The import DAG calls :func:`notify_failure` as its failure callback; the freshness-check DAG calls
:func:`check_recent_success` every 15 minutes.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from .redaction import mask_card_numbers

log = logging.getLogger(__name__)

DAG_ID = "salesforce_orders_import"


@dataclass(frozen=True)
class Alert:
    subject: str
    text: str

    @property
    def html(self) -> str:
        return f"<pre style=\"font-family: monospace\">{html.escape(self.text)}</pre>"


def runs_url(base_url: str | None = None) -> str:
    """The import DAG's runs in the Airflow UI (under ``[api] base_url`` when set)."""
    if base_url is None:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    return f"{base_url.rstrip('/')}/dags/{DAG_ID}/runs"


def run_url(run_id: str, base_url: str | None = None) -> str:
    """One run's page in the Airflow UI."""
    return f"{runs_url(base_url)}/{quote(run_id, safe='')}"


def _orders_line(row: Mapping[str, Any]) -> str:
    return (
        f"Orders: {row.get('extracted', 0)} extracted in the window, {row.get('quarantined', 0)} quarantined, "
        f"{row.get('inserted', 0)} inserted, {row.get('updated', 0)} updated, {row.get('unchanged', 0)} unchanged, "
        f"{row.get('writeback_failed', 0)} write-back failures."
    )


def failure_alert(run_id: str, row: Mapping[str, Any] | None, *, reason: str | None, url: str) -> Alert:
    """The alert for a failed run: what failed, the orders it concerned, where to look."""
    from .report import summary_lines

    lines = [f"The Salesforce orders import run {run_id} failed."]
    if reason:
        lines.append(f"What failed: {reason}")
    if row:
        if row.get("message"):
            lines.append(f"Stages: {row['message']}")
        lines.append(_orders_line(row))
        lines += ["", *summary_lines(row)]
    else:
        lines.append("The run left no summary in import_runs: it failed before its first stage recorded anything.")
    lines += ["", f"Run and task logs: {url}", "What to do: docs/runbook.md, section of the failed task."]
    return Alert(subject=f"[Airflow] {DAG_ID} failed: {run_id}", text="\n".join(lines))


def no_success_alert(
    last_success: Mapping[str, Any] | None, latest: Mapping[str, Any] | None, *, minutes: int, url: str
) -> Alert:
    """The alert for "no import has succeeded for ``minutes``": the last success and the latest attempt."""
    since = last_success["finished_at"] if last_success else None
    lines = [
        f"No Salesforce orders import has succeeded since {since:%Y-%m-%d %H:%M UTC} (alert threshold {minutes} minutes)."
        if since
        else f"No Salesforce orders import has succeeded yet (alert threshold {minutes} minutes).",
    ]
    if last_success:
        lines.append(f"Last successful run: {last_success['run_id']}. {_orders_line(last_success)}")
    if latest and (not last_success or latest["run_id"] != last_success["run_id"]):
        lines.append(f"Latest run: {latest['run_id']}, {latest.get('status')}: {latest.get('message') or 'no message'}")
    lines += ["", f"Runs: {url}", "What to do: docs/runbook.md, 'No successful import'."]
    return Alert(subject=f"[Airflow] {DAG_ID}: no successful import for {minutes} minutes", text="\n".join(lines))


def notifiers(notifications: Any, alert: Alert) -> list[Any]:
    """The providers' notifiers for the configured channels, carrying ``alert``."""
    found: list[Any] = []
    if notifications.email is not None:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        email = notifications.email
        found.append(
            SmtpNotifier(
                to=list(email.to),
                from_email=email.from_email,
                smtp_conn_id=email.smtp_conn_id,
                subject=alert.subject,
                html_content=alert.html,
            )
        )
    if notifications.slack is not None:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        found.append(
            SlackWebhookNotifier(
                slack_webhook_conn_id=notifications.slack.slack_webhook_conn_id, text=f"*{alert.subject}*\n{alert.text}"
            )
        )
    return found


def send(alert: Alert, notifications: Any) -> int:
    """Send ``alert`` to every configured channel; returns how many took it. A failing channel does not stop the others."""
    log.warning("%s\n%s", alert.subject, alert.text)
    if not notifications.enabled:
        log.warning("No alert channel is configured (salesforce_orders_config: notifications): the alert is only logged")
        return 0
    sent = 0
    for notifier in notifiers(notifications, alert):
        try:
            # notify(), not __call__: the text is data (order and account names), never a template; and no
            # run context, which the notifiers need only to render templates.
            notifier.notify({})
            sent += 1
        except Exception:
            log.exception("Could not send the alert with %s", type(notifier).__name__)
    return sent


def _import_run(config: Any, run_id: str) -> Mapping[str, Any] | None:
    import sqlalchemy as sa

    from .warehouse.definitions import tables
    from .warehouse.engines import engine_from_connection

    t = tables(config.warehouse_schema).import_runs
    engine = engine_from_connection(config.warehouse_conn_id)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(t).where(t.c.run_id == run_id)).mappings().first()
    finally:
        engine.dispose()


def _run_id(context: Mapping[str, Any]) -> str:
    return str(context.get("run_id") or getattr(context.get("dag_run"), "run_id", "unknown"))


def notify_failure(context: Mapping[str, Any]) -> int:
    """The DAG's failure callback: the run summary to the channels of ``notifications``, and recorded
    on the run's ``import_runs`` row (the External Orders view shows it) whether or not a channel took it."""
    from .config import load_config

    config = load_config()
    run_id = _run_id(context)
    try:
        row = _import_run(config, run_id)
    except Exception:
        log.exception("Could not read the run's summary from the warehouse; alerting without it")
        row = None
    alert = failure_alert(run_id, row, reason=_reason(context), url=run_url(run_id))
    sent = send(alert, config.notifications)
    try:
        _record_alert(config, run_id, alert, sent_to(config.notifications, sent))
    except Exception:
        log.exception("Could not record the alert on import_runs")
    return sent


def sent_to(notifications: Any, sent: int) -> str:
    """Where an alert went, in words for the view."""
    if not notifications.enabled:
        return "no channel configured (salesforce_orders_config: notifications): logged only"
    channels = [name for name, channel in (("e-mail", notifications.email), ("Slack", notifications.slack)) if channel is not None]
    return ", ".join(channels) if sent == len(channels) else f"{', '.join(channels)} ({len(channels) - sent} failed to send)"


def _record_alert(config: Any, run_id: str, alert: Alert, where: str) -> None:
    import sqlalchemy as sa

    from .warehouse.definitions import tables
    from .warehouse.engines import engine_from_connection
    from .warehouse.writes import upsert

    t = tables(config.warehouse_schema).import_runs
    engine = engine_from_connection(config.warehouse_conn_id)
    try:
        with engine.begin() as conn:
            status = conn.execute(sa.select(t.c.status).where(t.c.run_id == run_id)).scalar()
            row = {"run_id": run_id, "status": status or "failed", "alerted_at": datetime.now(UTC), "alert": alert.subject,
                   "alert_sent_to": where}
            upsert(conn, t, [row], ["run_id"])
    finally:
        engine.dispose()


def _reason(context: Mapping[str, Any]) -> str | None:
    ti = context.get("ti") or context.get("task_instance")
    reason = context.get("reason")
    failed_task = getattr(ti, "task_id", None)
    if failed_task == "report":  # it fails on purpose after a stage failed: the stages line says which
        failed_task = None
    exception = context.get("exception")
    parts = [f"task {failed_task}" if failed_task else None, str(exception) if exception else None, reason]
    # (an alert leaves for e-mail and Slack: no card number in it, whatever an exception quoted)
    return mask_card_numbers("; ".join(str(p) for p in parts if p)) or None


NOTIFIED_KEY = "alerts.no_success_notified"  # sync_state: the last success an alert was sent for


@dataclass(frozen=True)
class Freshness:
    """What the freshness check found."""

    stale: bool
    alerted: bool  # an alert went out (or was logged) for this stale spell just now
    message: str


def check_recent_success(now: datetime | None = None) -> Freshness:
    """Alert once per stale spell when no import has succeeded for ``notifications.no_success_after_minutes``.

    Stays quiet while the import is disabled in its config, and before any run has been recorded
    (a new deployment). The spell is keyed by the last successful run, so a later success ends it.
    """
    import sqlalchemy as sa

    from .config import load_config
    from .report import keeping_current
    from .schema_versions import create_all
    from .warehouse.definitions import tables
    from .warehouse.engines import engine_from_connection
    from .warehouse.writes import upsert

    now = now or datetime.now(UTC)
    config = load_config()
    minutes = config.notifications.no_success_after_minutes
    if not config.enabled:
        return Freshness(False, False, "The import is disabled in its config: nothing to check.")
    t = tables(config.warehouse_schema)
    engine = engine_from_connection(config.warehouse_conn_id)
    try:
        create_all(engine, config.warehouse_schema)
        with engine.connect() as conn:
            runs = t.import_runs
            imports = sa.select(runs).where(keeping_current(runs))  # not re-syncs of chosen orders, nor backfills
            latest = conn.execute(imports.order_by(runs.c.started_at.desc().nulls_last()).limit(1)).mappings().first()
            last_success = (
                conn.execute(imports.where(runs.c.status == "success").order_by(runs.c.finished_at.desc()).limit(1))
                .mappings()
                .first()
            )
            notified = conn.execute(sa.select(t.sync_state.c.value).where(t.sync_state.c.key == NOTIFIED_KEY)).scalar()
        if latest is None:
            return Freshness(False, False, "No import run has been recorded yet: nothing to check.")
        reference = last_success["finished_at"] if last_success else latest["started_at"]
        if reference is not None and now - reference <= timedelta(minutes=minutes):
            return Freshness(False, False, f"Last successful import: {last_success['run_id'] if last_success else 'none yet'}.")
        spell = last_success["run_id"] if last_success else "never"
        alert = no_success_alert(last_success, latest, minutes=minutes, url=runs_url())
        if notified == spell:
            return Freshness(True, False, f"{alert.subject} (already alerted)")
        send(alert, config.notifications)
        with engine.begin() as conn:
            upsert(conn, t.sync_state, [{"key": NOTIFIED_KEY, "value": spell, "updated_at": now}], ["key"])
        return Freshness(True, True, alert.subject)
    finally:
        engine.dispose()


__all__ = [
    "Alert",
    "check_recent_success",
    "failure_alert",
    "no_success_alert",
    "notifiers",
    "notify_failure",
    "run_url",
    "runs_url",
    "send",
]
