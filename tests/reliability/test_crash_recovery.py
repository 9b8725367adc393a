"""A task killed outright (SIGKILL: no exception handler, no clean-up) at the worst moments.

The stage runs in a child process with the same connections and Variable, as an Airflow worker
runs a task; the test watches the warehouse (and the org) from outside and kills the child at the
chosen moment, then does what Airflow does next: run the task again with the same run id, then
the rest of the run. Afterwards every order is there exactly once, the counts add up, every
write-back is done once and none is skipped.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from salesforce_orders import load as load_module
from salesforce_orders import stages

KILL_TIMEOUT_SECONDS = 120
# Orders (three items each) of the load that is killed: on SQLite enough for the load to take a
# while; PostgreSQL shows exactly when the load has written orders, so fewer do.
CRASH_ORDERS = {"sqlite": 1500, "postgresql": 300}
MODSTAMP = "2026-01-02T03:04:05.000+0000"
APPLICATION_NAME = "orders-import-crash-test"


def child_env(p) -> dict[str, str]:
    """This process's environment for the child; on PostgreSQL its sessions carry a name we can find."""
    env = dict(os.environ)
    if p.dialect == "postgresql":
        connection = json.loads(env["AIRFLOW_CONN_ORDERS_WAREHOUSE"])
        connection["extra"] = {"application_name": APPLICATION_NAME}
        env["AIRFLOW_CONN_ORDERS_WAREHOUSE"] = json.dumps(connection)
    return env


def start_stages(p, code: str) -> subprocess.Popen:
    """``code`` (calls of ``stages.*``) in a child Python process, like a task on a worker."""
    program = f"from salesforce_orders import stages\n{code}\n"
    return subprocess.Popen(
        [sys.executable, "-c", program], env=child_env(p), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def kill_when(p, child: subprocess.Popen, moment: Callable[[], bool], what: str) -> None:
    """SIGKILL ``child`` as soon as ``moment()`` holds; fail if it ends or never gets there."""
    deadline = time.monotonic() + KILL_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"the stage ended (exit {child.returncode}) before {what}:\n{child.stdout.read()[-3000:]}")
        if moment():
            child.send_signal(signal.SIGKILL)
            child.wait()
            assert child.returncode == -signal.SIGKILL
            end_orphaned_session(p)
            return
        time.sleep(0.01)
    child.kill()
    pytest.fail(f"never saw {what} within {KILL_TIMEOUT_SECONDS} s:\n{child.stdout.read()[-3000:]}")


def end_orphaned_session(p) -> None:
    """PostgreSQL aborts a dead client's transaction when it next reads from its socket, which can
    be a while after statements it had already received; end it now rather than wait for that."""
    if p.dialect == "postgresql":
        with p.engine.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = :app"),
                {"app": APPLICATION_NAME},
            )


def load_transaction_open(p) -> Callable[[], bool]:
    """Whether the load's single transaction is open and has written orders (PostgreSQL: its session
    holds the row-exclusive lock of an upsert into external_orders; SQLite: a write lock is held)."""
    if p.dialect == "postgresql":
        query = sa.text(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE a.application_name = :app AND l.mode = 'RowExclusiveLock' AND l.relation = to_regclass(:orders)"
        )
        params = {"app": APPLICATION_NAME, "orders": f'"{p.schema}".external_orders'}

        def orders_written() -> bool:
            with p.engine.connect() as conn:
                return bool(conn.execute(query, params).scalar())

        return orders_written

    path = p.engine.url.database
    held_since: list[float] = []

    def write_lock_held_a_while() -> bool:
        probe = sqlite3.connect(path, timeout=0)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.rollback()
            held_since.clear()
            return False
        except sqlite3.OperationalError:  # "database is locked": a write transaction is open
            held_since[:1] = held_since[:1] or [time.monotonic()]
            return time.monotonic() - held_since[0] > 0.2  # well into the load, not at its first statement
        finally:
            probe.close()

    return write_lock_held_a_while


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
    orders = CRASH_ORDERS[pipeline.dialect]
    from salesforce_orders.staging import stage_transformed
    from salesforce_orders.warehouse import create_all

    create_all(pipeline.engine, pipeline.schema)
    run_id = pipeline.new_run_id()
    items = ((1, "S1", 1.0, 100.0), (2, "S1", 2.0, 25.0), (3, None, 1.0, 9.5))
    records = [make_transformed(n, account=n % 300 + 1, items=items, modstamp=MODSTAMP) for n in range(1, orders + 1)]
    with pipeline.engine.begin() as conn:
        stage_transformed(conn, run_id, records, schema=pipeline.schema)
    return run_id


def test_killed_in_the_middle_of_the_load_the_retry_leaves_one_copy_of_every_order(pipeline, staged_run, monkeypatch):
    orders = CRASH_ORDERS[pipeline.dialect]
    child = start_stages(pipeline, f"stages.load(run_id={staged_run!r}, max_system_modstamp={MODSTAMP!r})")
    kill_when(pipeline, child, load_transaction_open(pipeline), "the load's transaction had written orders")

    # the killed transaction left nothing behind
    for table in ("external_orders", "external_order_items", "order_services", "customers", "writeback_outbox"):
        assert count(pipeline, table) == 0, table
    assert pipeline.watermark() is None

    # Airflow's retry of the task, in several statement batches as a large run's load is
    monkeypatch.setattr(load_module, "ORDERS_PER_BATCH", orders // 3)
    retry = stages.load(run_id=staged_run, max_system_modstamp=MODSTAMP)

    assert (retry["inserted"], retry["updated"], retry["unchanged"]) == (orders, 0, 0)
    assert count(pipeline, "external_orders") == orders
    assert pipeline.query("SELECT sf_order_id FROM external_orders GROUP BY sf_order_id HAVING COUNT(*) > 1") == []
    assert count(pipeline, "external_order_items") == 3 * orders
    assert count(pipeline, "order_services") == 2 * orders
    assert count(pipeline, "customers") == 300
    assert retry["outbox_rows"] == count(pipeline, "writeback_outbox") == orders + 300  # one per order, one per account
    assert pipeline.watermark() == "2026-01-02T03:04:05Z"


# ---------------------------------------------------------------------------------------
# 8. killed after the warehouse commit, before or during the write-back
# ---------------------------------------------------------------------------------------


def loaded_but_not_sent(p) -> Callable[[], bool]:
    """The load has committed (the watermark moved) and no write-back has started."""
    return lambda: p.watermark() is not None and "PROCESSING" not in outbox_states(p)


def sending(p) -> Callable[[], bool]:
    """Write-back rows are marked PROCESSING (committed before the call): the call is in flight."""
    return lambda: "PROCESSING" in outbox_states(p)


@pytest.mark.parametrize(
    ("moment", "retried"),
    [(loaded_but_not_sent, ("load", "mark_status_changes", "write_back")), (sending, ("write_back",))],
    ids=["after-the-commit", "during-the-write-back"],
)
@pytest.mark.postgres
def test_killed_after_the_commit_nothing_is_written_back_twice_wrongly_nor_skipped(postgres_pipeline, moment, retried):
    pipeline = postgres_pipeline
    run = pipeline.run(until="transform")
    assert run.succeeded, run.error
    extract = run.results["extract"]
    transformed = run.results["transform"]["transformed"]
    pipeline.org.admin.set_faults(latency_ms=1500)  # every Salesforce call is slow: one is under way at the kill

    child = start_stages(
        pipeline,
        f"stages.load(run_id={run.run_id!r}, max_system_modstamp={extract['max_system_modstamp']!r})\n"
        f"stages.mark_status_changes(run_id={run.run_id!r}, window={extract['window']!r})\n"
        f"stages.write_back(run_id={run.run_id!r})",
    )
    kill_when(pipeline, child, moment(pipeline), moment.__doc__)
    pipeline.org.admin.clear_faults()
    committed = count(pipeline, "writeback_outbox")
    assert committed > 0 and count(pipeline, "external_orders") == transformed

    # Airflow runs the killed task again, then the rest of the run
    if "load" in retried:
        retry = stages.load(run_id=run.run_id, max_system_modstamp=extract["max_system_modstamp"])
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
