"""Alerts and Assets: what on-call receives and what analysts' DAGs are scheduled on.

The alerts go through the providers' real notifiers to local sinks: an SMTP server and an HTTP
endpoint standing in for a Slack incoming webhook, both on 127.0.0.1.
"""

from __future__ import annotations

import email
import json
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import sqlalchemy as sa

from salesforce_orders import alerts
from salesforce_orders.config import parse_config
from salesforce_orders.schema_versions import create_all
from salesforce_orders.warehouse import tables


class _SmtpSession(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: greet, accept any sender and recipient, keep each message."""

    def handle(self) -> None:
        self.wfile.write(b"220 sink ESMTP\r\n")
        lines: list[bytes] | None = None
        while line := self.rfile.readline():
            if lines is not None:
                if line.rstrip(b"\r\n") == b".":
                    self.server.messages.append(email.message_from_bytes(b"".join(lines), policy=default_policy))
                    lines = None
                    self.wfile.write(b"250 queued\r\n")
                else:
                    lines.append(line[1:] if line.startswith(b"..") else line)
                continue
            command = line[:4].upper()
            if command == b"DATA":
                lines = []
                self.wfile.write(b"354 end with .\r\n")
            elif command == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:  # EHLO/HELO, MAIL, RCPT, RSET, NOOP
                self.wfile.write(b"250 ok\r\n")


class SmtpSink(socketserver.ThreadingTCPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SmtpSession)
        self.messages: list[email.message.EmailMessage] = []


class _WebhookHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.server.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


class WebhookSink(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _WebhookHandler)
        self.posts: list[dict] = []


@pytest.fixture
def sinks(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SmtpSink, WebhookSink]]:
    """Both sinks running, with the ``smtp_default`` and ``slack_default`` connections pointing at them."""
    smtp, webhook = SmtpSink(), WebhookSink()
    for server in (smtp, webhook):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({
        "conn_type": "smtp", "host": "127.0.0.1", "port": smtp.server_address[1],
        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com", "timeout": 5},
    }))
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_DEFAULT", json.dumps({
        "conn_type": "slackwebhook", "password": f"http://127.0.0.1:{webhook.server_address[1]}/services/T0/B0/X",
    }))
    yield smtp, webhook
    for server in (smtp, webhook):
        server.shutdown()
        server.server_close()


BOTH_CHANNELS = {"email": {"to": ["orders-oncall@example.com"]}, "slack": {}}
RUN_ROW = {
    "run_id": "scheduled__2026-03-01T12:00:00+00:00", "status": "failed", "mode": "incremental",
    "window_start": None, "window_end": None, "extracted": 351, "valid": 339, "quarantined": 12, "skipped": 0,
    "inserted": 0, "updated": 0, "unchanged": 0, "written_back": 0, "writeback_failed": 0, "deactivated": 0,
    "api_calls": 9, "duration_seconds": 4.2, "message": "stages without a result (failed, skipped or not reached): load, write_back",
}


def test_the_failure_alert_names_what_failed_the_orders_and_the_run():
    alert = alerts.failure_alert(RUN_ROW["run_id"], RUN_ROW, reason="task load", url="http://airflow/dags/x/runs/r")
    assert alert.subject == f"[Airflow] salesforce_orders_import failed: {RUN_ROW['run_id']}"
    assert "What failed: task load" in alert.text
    assert "Stages: stages without a result (failed, skipped or not reached): load, write_back" in alert.text
    assert "Orders: 351 extracted in the window, 12 quarantined, 0 inserted" in alert.text
    assert "http://airflow/dags/x/runs/r" in alert.text
    without_row = alerts.failure_alert("manual__1", None, reason=None, url="u")
    assert "left no summary in import_runs" in without_row.text


def test_run_url_follows_the_base_url():
    assert alerts.run_url("manual__2026-03-01T12:00:00+00:00", "https://airflow.example.com/") == (
        "https://airflow.example.com/dags/salesforce_orders_import/runs/manual__2026-03-01T12%3A00%3A00%2B00%3A00"
    )


def test_nothing_is_sent_without_a_channel(sinks):
    smtp, webhook = sinks
    assert alerts.send(alerts.Alert("s", "t"), parse_config({}).notifications) == 0
    assert smtp.messages == [] and webhook.posts == []


def test_the_alert_reaches_email_and_slack_through_the_providers_notifiers(sinks):
    smtp, webhook = sinks
    alert = alerts.failure_alert(RUN_ROW["run_id"], RUN_ROW, reason="task load", url="http://airflow/run")
    assert alerts.send(alert, parse_config({"notifications": BOTH_CHANNELS}).notifications) == 2

    [message] = smtp.messages
    assert message["To"] == "orders-oncall@example.com" and message["From"] == "airflow@example.com"
    assert message["Subject"] == alert.subject
    body = message.get_body(("html",)).get_content()
    assert "What failed: task load" in body and "351 extracted" in body
    [post] = webhook.posts
    assert post["text"].startswith(f"*{alert.subject}*") and "351 extracted" in post["text"]


def test_a_failing_channel_does_not_stop_the_others(sinks, monkeypatch):
    smtp, webhook = sinks
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": 9,
                                                                "extra": {"disable_ssl": True, "disable_tls": True, "timeout": 2}}))
    sent = alerts.send(alerts.Alert("subject", "text"), parse_config({"notifications": BOTH_CHANNELS}).notifications)
    assert sent == 1 and len(webhook.posts) == 1


@pytest.fixture
def freshness(sqlite_engine, tmp_path, monkeypatch):
    """A warehouse reachable as ``orders_warehouse``, alerts on both channels after 60 minutes; returns add_run()."""
    monkeypatch.setenv("AIRFLOW_CONN_ORDERS_WAREHOUSE", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "warehouse.db")}))
    monkeypatch.setenv(
        "AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({"notifications": {**BOTH_CHANNELS, "no_success_after_minutes": 60}})
    )
    create_all(sqlite_engine)

    def add_run(run_id: str, status: str, started: datetime, mode: str = "incremental") -> None:
        with sqlite_engine.begin() as conn:
            conn.execute(sa.insert(tables().import_runs).values(
                **{**RUN_ROW, "run_id": run_id, "status": status, "message": None if status == "success" else "extract failed",
                   "started_at": started, "finished_at": started + timedelta(minutes=1), "mode": mode}
            ))

    return add_run


T10 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def test_freshness_is_quiet_before_the_first_run_and_while_imports_succeed(freshness, sinks):
    smtp, webhook = sinks
    assert not alerts.check_recent_success(now=T10).stale  # nothing recorded yet: a new deployment
    freshness("good", "success", T10)
    freshness("bad", "failed", T10 + timedelta(minutes=15))
    assert not alerts.check_recent_success(now=T10 + timedelta(minutes=61)).stale
    assert smtp.messages == [] and webhook.posts == []


def test_freshness_alerts_once_per_stale_spell(freshness, sinks):
    smtp, webhook = sinks
    freshness("good", "success", T10)
    freshness("bad", "failed", T10 + timedelta(minutes=30))

    first = alerts.check_recent_success(now=T10 + timedelta(minutes=62))
    again = alerts.check_recent_success(now=T10 + timedelta(minutes=77))
    assert (first.stale, first.alerted) == (True, True)
    assert (again.stale, again.alerted) == (True, False)
    [message] = smtp.messages
    assert message["Subject"] == "[Airflow] salesforce_orders_import: no successful import for 60 minutes"
    body = message.get_body(("html",)).get_content()
    assert "has succeeded since 2026-03-01 10:01 UTC" in body
    assert "Last successful run: good" in body and "Latest run: bad, failed: extract failed" in body
    assert len(webhook.posts) == 1

    freshness("recovered", "success", T10 + timedelta(minutes=80))  # a success ends the spell...
    assert not alerts.check_recent_success(now=T10 + timedelta(minutes=90)).stale
    assert alerts.check_recent_success(now=T10 + timedelta(minutes=200)).alerted  # ...and the next spell alerts again
    assert len(smtp.messages) == 2


def test_a_resync_of_chosen_orders_or_a_backfill_that_succeeds_does_not_silence_the_alert(freshness, sinks):
    """Only a run that read every change up to now says the warehouse is current: a one-order re-sync,
    an event run's orders or a backfill of a past interval succeeding while the scheduled runs fail
    leaves the rest of the warehouse as stale as it was."""
    smtp, _ = sinks
    freshness("good", "success", T10)
    freshness("bad", "failed", T10 + timedelta(minutes=30))
    freshness("resync", "success", T10 + timedelta(minutes=50), mode="order_numbers")
    freshness("event", "success", T10 + timedelta(minutes=52), mode="order_events")
    freshness("backfill", "success", T10 + timedelta(minutes=55), mode="backfill")

    check = alerts.check_recent_success(now=T10 + timedelta(minutes=62))
    assert (check.stale, check.alerted) == (True, True)
    body = smtp.messages[0].get_body(("html",)).get_content()
    assert "Last successful run: good" in body and "Latest run: bad, failed" in body

    freshness("since", "success", T10 + timedelta(minutes=70), mode="since")  # reads up to now: current again
    assert not alerts.check_recent_success(now=T10 + timedelta(minutes=75)).stale


def test_freshness_is_quiet_while_the_import_is_disabled(freshness, sinks, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({"enabled": False, "notifications": BOTH_CHANNELS}))
    freshness("old", "success", T10)
    assert not alerts.check_recent_success(now=T10 + timedelta(days=2)).stale
    assert sinks[0].messages == []


def test_a_run_failure_alert_is_recorded_on_its_run_with_or_without_a_channel(freshness, sinks, sqlite_engine, monkeypatch):
    smtp, webhook = sinks
    freshness("quiet", "failed", T10)
    freshness("loud", "failed", T10 + timedelta(minutes=15))

    def recorded(run_id: str) -> dict:
        t = tables().import_runs
        with sqlite_engine.connect() as conn:
            return dict(conn.execute(sa.select(t.c.alert, t.c.alert_sent_to, t.c.alerted_at).where(t.c.run_id == run_id)).mappings().one())

    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({}))  # no channel
    assert alerts.notify_failure({"run_id": "quiet"}) == 0
    quiet = recorded("quiet")
    assert quiet["alert"] == "[Airflow] salesforce_orders_import failed: quiet" and quiet["alerted_at"] is not None
    assert quiet["alert_sent_to"].startswith("no channel configured")
    assert smtp.messages == [] and webhook.posts == []

    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({"notifications": BOTH_CHANNELS}))
    assert alerts.notify_failure({"run_id": "loud"}) == 2
    assert recorded("loud")["alert_sent_to"] == "e-mail, Slack"
    assert len(smtp.messages) == 1 and len(webhook.posts) == 1


def test_the_import_dag_alerts_on_failure_and_publishes_assets():
    from airflow.dag_processing.dagbag import DagBag

    from salesforce_orders_local.airflow_env import DAGS_FOLDER

    bag = DagBag(dag_folder=str(DAGS_FOLDER))
    assert bag.import_errors == {}
    dag = bag.get_dag("salesforce_orders_import")
    assert dag.on_failure_callback
    assert "[External Orders](/plugin/external-orders)" in dag.doc_md  # the view, from the DAG's own page
    assert {a.name for a in dag.get_task("load").outlets} == {
        f"orders_warehouse.{t}" for t in ("external_orders", "external_order_items", "order_services", "customers", "customer_locations")
    }
    downstream = bag.get_dag("orders_downstream_example")
    assert "orders_warehouse.external_orders" in repr(downstream.timetable.asset_condition)
    check = bag.get_dag("salesforce_orders_freshness_check")
    assert check.timetable.expression == "*/15 * * * *" and check.task_ids == ["check_recent_success"]
    assert check.is_paused_upon_creation is False  # it checks from the start: nobody has to unpause it


def asset_events(name: str, run_id: str) -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.execute(
            sa.select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == name, AssetEvent.source_run_id == run_id)
        ).scalars().all()
    return list(rows)


def test_a_run_updates_the_warehouse_assets_with_its_counts(harness):
    run = harness.run()
    assert run["dag_state"] == "success"
    [extra] = asset_events("orders_warehouse.external_orders", run["run_id"])
    assert extra == {"run_id": run["run_id"], "inserted": run["inserted"], "updated": 0, "unchanged": 0}
    assert len(asset_events("orders_warehouse.customers", run["run_id"])) == 1


def test_a_failed_stage_fails_the_run_and_alerts_with_its_summary(harness, sinks):
    smtp, webhook = sinks
    harness.set_config(notifications=BOTH_CHANNELS)
    run = harness.run({"since": "not a date"})  # a bad param fails extract at once, without retries

    assert run["dag_state"] == "failed"
    assert run["status"] == "failed" and "extract" in run["message"]
    [message] = smtp.messages
    assert message["Subject"] == f"[Airflow] salesforce_orders_import failed: {run['run_id']}"
    body = message.get_body(("html",)).get_content()
    assert "extract" in body and "/dags/salesforce_orders_import/runs/" in body
    assert run["run_id"] in webhook.posts[0]["text"]
