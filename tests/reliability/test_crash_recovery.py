"""A task killed outright (SIGKILL: no exception handler, no clean-up) at the worst moments.

The stage runs in a child process with the same connections and Variable, as an Airflow worker
runs a task. It stops at a named fault point (``salesforce_orders.faultpoints``): the test waits
for the point's announcement, checks from outside that the warehouse is in the state the point
stands for (the probes are assertions, never the trigger), kills the child, then does what Airflow
does next: run the task again with the same run id, then the rest of the run. Afterwards every
order is there exactly once, the counts add up, every write-back is done once and none is skipped.
Nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from salesforce_orders import faultpoints, stages
from salesforce_orders import load as load_module

# A safety net for a child that hangs: far longer than any stage here takes on a slow machine.
# The test acts on the fault point's announcement, never on elapsed time.
REACH_TIMEOUT_SECONDS = 600
CRASH_ORDERS = 300
BATCH = 100  # the killed load writes three batches
MODSTAMP = "2026-01-02T03:04:05.000+0000"
# Unique to this test process: ending the killed child's sessions by name must never reach the
# sessions of another suite run against the same server.
APPLICATION_NAME = f"orders-import-crash-test-{uuid.uuid4().hex[:12]}"


def child_env(p, points: str, point_dir: Path) -> dict[str, str]:
    """This process's environment for the child, with the fault points; on PostgreSQL its
    sessions carry a name we can find."""
    env = dict(os.environ)
    env[faultpoints.ENV] = points
    env[faultpoints.DIR_ENV] = str(point_dir)
    if p.dialect == "postgresql":
        connection = json.loads(env["AIRFLOW_CONN_ORDERS_WAREHOUSE"])
        connection["extra"] = {"application_name": APPLICATION_NAME}
        env["AIRFLOW_CONN_ORDERS_WAREHOUSE"] = json.dumps(connection)
    return env


def start_stages(p, code: str, points: str, point_dir: Path) -> subprocess.Popen:
    """``code`` (calls of ``stages.*``) in a child Python process, like a task on a worker, with
    ``points`` active (``name=pause``: it stops there until killed)."""
    program = f"from salesforce_orders import load, stages\nload.ORDERS_PER_BATCH = {BATCH}\n{code}\n"
    return subprocess.Popen(
        [sys.executable, "-c", program],
        env=child_env(p, points, point_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_point(child: subprocess.Popen, point_dir: Path, point: str) -> None:
    """Until the child announces it paused at ``point``; fail if it ends first."""
    reached = point_dir / f"{point}.reached"
    deadline = time.monotonic() + REACH_TIMEOUT_SECONDS
    while not reached.exists():
        if child.poll() is not None:
            pytest.fail(f"the stage ended (exit {child.returncode}) before fault point {point}:\n{child.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"fault point {point} not reached:\n{child.stdout.read()[-3000:]}")
        try:
            child.wait(timeout=0.02)  # returns at once when the child ends
        except subprocess.TimeoutExpired:
            pass
    assert int(reached.read_text()) == child.pid


def kill(p, child: subprocess.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL
    end_orphaned_session(p)


def end_orphaned_session(p) -> None:
    """PostgreSQL aborts a dead client's transaction when it next reads from its socket, which can
    be a while after statements it had already received; end it now rather than wait for that."""
    if p.dialect == "postgresql":
        with p.engine.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"),
                {"app": APPLICATION_NAME},
            )


def uncommitted_orders_written(p) -> bool:
    """Whether an open transaction holds written orders: on PostgreSQL the child's session holds the
    row-exclusive lock of its writes into external_orders; on SQLite a write transaction is open."""
    if p.dialect == "postgresql":
        query = sa.text(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name = :app AND l.mode = 'RowExclusiveLock' AND l.relation = to_regclass(:orders)"
        )
        with p.engine.connect() as conn:
            return bool(conn.execute(query, {"app": APPLICATION_NAME, "orders": f'"{p.schema}".external_orders'}).scalar())
    probe = sqlite3.connect(p.engine.url.database, timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.rollback()
        return False
    except sqlite3.OperationalError:  # "database is locked": a write transaction is open
        return True
    finally:
        probe.close()


def count(p, table: str) -> int:
    return p.scalar(f"SELECT COUNT(*) AS n FROM {table}")


def outbox_states(p) -> dict[str, int]:
    return {r["state"]: r["n"] for r in p.query("SELECT state, COUNT(*) AS n FROM writeback_outbox GROUP BY state")}


# ---------------------------------------------------------------------------------------
# 7. killed in the middle of the load
# ---------------------------------------------------------------------------------------


@pytest.fixture
def staged_run(pipeline, make_transformed) -> str:
    """A run whose transform staged CRASH_ORDERS orders (three items, two services each) for the load."""
    from salesforce_orders.schema_versions import create_all
    from salesforce_orders.staging import stage_transformed

    create_all(pipeline.engine, pipeline.schema)
    run_id = pipeline.new_run_id()
    items = ((1, "S1", 1.0, 100.0), (2, "S1", 2.0, 25.0), (3, None, 1.0, 9.5))
    records = [make_transformed(n, account=n % 100 + 1, items=items, modstamp=MODSTAMP) for n in range(1, CRASH_ORDERS + 1)]
    with pipeline.engine.begin() as conn:
        stage_transformed(conn, run_id, records, schema=pipeline.schema)
    return run_id


@pytest.mark.parametrize(
    ("point", "arrival"),
    [("load.orders_written", 2), ("load.before_commit", 1)],
    ids=["between-batches", "before-the-commit"],
)
def test_killed_in_the_middle_of_the_load_the_retry_leaves_one_copy_of_every_order(
    pipeline, staged_run, monkeypatch, tmp_path, point, arrival
):
    load = f"stages.load(run_id={staged_run!r}, max_system_modstamp={MODSTAMP!r}, window={{}})"
    child = start_stages(pipeline, load, f"{point}=pause@{arrival}", tmp_path)
    wait_for_point(child, tmp_path, point)
    assert uncommitted_orders_written(pipeline)  # the moment is what it says: orders written, nothing committed
    kill(pipeline, child)

    # the killed transaction left nothing behind
    for table in ("external_orders", "external_order_items", "order_services", "customers", "writeback_outbox"):
        assert count(pipeline, table) == 0, table
    assert pipeline.watermark() is None

    # Airflow's retry of the task, in several statement batches as a large run's load is
    monkeypatch.setattr(load_module, "ORDERS_PER_BATCH", BATCH)
    retry = stages.load(run_id=staged_run, max_system_modstamp=MODSTAMP, window={})

    assert (retry["inserted"], retry["updated"], retry["unchanged"]) == (CRASH_ORDERS, 0, 0)
    assert count(pipeline, "external_orders") == CRASH_ORDERS
    assert pipeline.query("SELECT sf_order_id FROM external_orders GROUP BY sf_order_id HAVING COUNT(*) > 1") == []
    assert count(pipeline, "external_order_items") == 3 * CRASH_ORDERS
    assert count(pipeline, "order_services") == 2 * CRASH_ORDERS
    assert count(pipeline, "customers") == 100
    assert retry["outbox_rows"] == count(pipeline, "writeback_outbox") == CRASH_ORDERS + 100  # one per order, one per account
    assert pipeline.watermark() == "2026-01-02T03:04:05Z"


# ---------------------------------------------------------------------------------------
# 8. killed after the warehouse commit, before or during the write-back
# ---------------------------------------------------------------------------------------


def loaded_but_not_sent(p) -> None:
    """The load has committed (the watermark moved) and no write-back has started."""
    assert p.watermark() is not None
    assert "PROCESSING" not in outbox_states(p)
    assert not uncommitted_orders_written(p)


def marked_not_sent(p) -> None:
    """A batch is marked PROCESSING (committed before the call), the call not yet made."""
    assert outbox_states(p).get("PROCESSING", 0) > 0


def sent_not_recorded(p) -> None:
    """Salesforce applied a batch (its orders show Imported there) but no outcome is recorded.
    (Rows X-ing out only the card fields of quarantined orders leave their Status as it is.)"""
    processing = p.query(
        "SELECT sf_record_id FROM writeback_outbox WHERE state = 'PROCESSING' AND sf_object = 'Order' AND action LIKE '%mark_imported%'"
    )
    assert processing
    statuses = {r["Id"]: r["Status"] for r in p.org_rows('SELECT Id, Status FROM "Order"')}
    assert {statuses[r["sf_record_id"]] for r in processing} == {"Imported"}
    assert "DONE" not in outbox_states(p)


@pytest.mark.parametrize(
    ("point", "state_at_the_kill", "retried"),
    [
        ("load.committed", loaded_but_not_sent, ("load", "mark_status_changes", "write_back")),
        ("write_back.before_send", marked_not_sent, ("write_back",)),
        ("write_back.sent", sent_not_recorded, ("write_back",)),
    ],
    ids=["after-the-commit", "during-the-write-back", "after-salesforce-answered"],
)
@pytest.mark.postgres
def test_killed_after_the_commit_nothing_is_written_back_twice_wrongly_nor_skipped(
    postgres_pipeline, tmp_path, point, state_at_the_kill, retried
):
    pipeline = postgres_pipeline
    run = pipeline.run(until="transform")
    assert run.succeeded, run.error
    extract = run.results["extract"]
    transformed = run.results["transform"]["transformed"]

    child = start_stages(
        pipeline,
        f"stages.load(run_id={run.run_id!r}, max_system_modstamp={extract['max_system_modstamp']!r}, window={extract['window']!r})\n"
        f"stages.mark_status_changes(run_id={run.run_id!r}, window={extract['window']!r})\n"
        f"stages.write_back(run_id={run.run_id!r})",
        f"{point}=pause",
        tmp_path,
    )
    wait_for_point(child, tmp_path, point)
    state_at_the_kill(pipeline)
    kill(pipeline, child)
    committed = count(pipeline, "writeback_outbox")
    assert committed > 0 and count(pipeline, "external_orders") == transformed

    # Airflow runs the killed task again, then the rest of the run
    if "load" in retried:
        retry = stages.load(run_id=run.run_id, max_system_modstamp=extract["max_system_modstamp"], window=extract["window"])
        assert (retry["inserted"], retry["updated"], retry["unchanged"]) == (transformed, 0, 0)  # counted once, as this run's
        assert count(pipeline, "writeback_outbox") == committed  # no second copy of any write-back
    if "mark_status_changes" in retried:
        stages.mark_status_changes(run_id=run.run_id, window=extract["window"])
    written = stages.write_back(run_id=run.run_id)

    assert written["written"] == written["attempted"] == committed  # none skipped, PROCESSING ones included
    assert outbox_states(pipeline) == {"DONE": committed}
    twice = pipeline.query(
        "SELECT sf_object, sf_record_id FROM writeback_outbox GROUP BY sf_object, sf_record_id HAVING COUNT(*) > 1"
    )
    assert twice == []
    org = {r["Id"]: r for r in pipeline.org_rows('SELECT Id, Status, Credit_Card_Number__c FROM "Order"')}
    accounts = {r["Id"]: r["Customer_ID__c"] for r in pipeline.org_rows("SELECT Id, Customer_ID__c FROM Account")}
    for order in pipeline.query("SELECT sf_order_id, sf_account_id, customer_id, lifecycle_state FROM external_orders"):
        assert org[order["sf_order_id"]]["Status"] == "Imported"
        assert org[order["sf_order_id"]]["Credit_Card_Number__c"] in (None, "X" * 16)
        assert accounts[order["sf_account_id"]] == order["customer_id"]
        assert order["lifecycle_state"] == "COMPLETE"
