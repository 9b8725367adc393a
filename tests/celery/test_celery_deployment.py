"""The import on a real CeleryExecutor deployment: two workers, Redis, PostgreSQL, the REST API.

Everything goes through what a user of the deployment has: the scheduler schedules, the Celery
workers run the tasks, Airflow's REST API shows what happened (states, each try's hostname and
times) and the warehouse and the org show the outcome. Which worker takes a task is steered only
by Celery's own remote control (a worker told to stop taking tasks, as an operator drains one),
and the worker that dies is killed at a named fault point, so nothing waits on elapsed time.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
import requests

from salesforce_orders.airflow_dags import salesforce_orders_import
from salesforce_orders_local.airflow_env import DAG_ID, WAREHOUSE_POOL
from salesforce_orders_local.celery_deployment import WORKERS

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

STEER_POINT = "extract.page_staged"  # where the worker that takes tasks is switched
KILL_POINT = "load.before_commit"  # where a worker dies: every order written, nothing committed
SEND_POINT = "write_back.before_send"  # held until the backfill has read its intervals
# every task of the import DAG, in the order they run (read from the DAG, so a new task cannot be forgotten here)
IMPORT_DAG = salesforce_orders_import()
STAGES = tuple(t.task_id for t in IMPORT_DAG.topological_sort())
POOLED = {t.task_id for t in IMPORT_DAG.tasks if t.pool == WAREHOUSE_POOL}  # the tasks that write shared state
NEWLY_ACTIVATED = 12


# ---------------------------------------------------------------------------------------
# what the warehouse and the org must show
# ---------------------------------------------------------------------------------------


def activated_orders(stack) -> dict[str, str]:
    """The org's live Activated orders within the two-year lookback: Id -> SystemModstamp."""
    rows = stack.org_rows(
        "SELECT Id, SystemModstamp FROM \"Order\" WHERE StatusCode = 'Activated' AND IsDeleted = 0 "
        "AND ActivatedDate >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-730 days')"
    )
    return {r["Id"]: r["SystemModstamp"] for r in rows}


def expected_orders(stack) -> set[str]:
    return set(activated_orders(stack))


def warehouse_orders(stack) -> set[str]:
    """The orders in the warehouse: loaded or quarantined."""
    loaded = {r["sf_order_id"] for r in stack.query("SELECT sf_order_id FROM external_orders")}
    return loaded | {r["sf_order_id"] for r in stack.query("SELECT DISTINCT sf_order_id FROM quarantined_orders")}


def assert_every_order_once(stack, expected: set[str]) -> None:
    """Each expected order is in the warehouse, loaded or quarantined, once; nothing else is."""
    assert stack.query("SELECT sf_order_id FROM external_orders GROUP BY sf_order_id HAVING COUNT(*) > 1") == []
    assert warehouse_orders(stack) == expected
    assert stack.query("SELECT sf_order_id FROM external_orders LIMIT 1"), "no order was loaded"


def assert_written_back_once(stack, run_ids: list[str]) -> None:
    """Every write-back the runs queued is DONE, and Salesforce received each exactly once and
    nothing else (since the write log was last cleared)."""
    rows = stack.query(
        "SELECT sf_object, sf_record_id, state FROM writeback_outbox WHERE created_run_id = ANY(:r)", r=run_ids
    )
    assert rows, "the runs queued no write-back"
    assert {r["state"] for r in rows} == {"DONE"}
    queued = Counter((r["sf_object"], r["sf_record_id"]) for r in rows)
    assert set(queued.values()) == {1}
    assert stack.salesforce_writes.writes == queued


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _salesforce_time(value: str) -> datetime:
    """``2026-01-02T03:04:05.000+0000``, as Salesforce writes a dateTime."""
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)


def hostnames(stack, run_id: str) -> dict[str, str]:
    return {task: ti["hostname"] for task, ti in stack.task_instances(run_id).items()}


def assert_succeeded(stack, run: dict) -> None:
    states = {task: ti["state"] for task, ti in stack.task_instances(run["dag_run_id"]).items()}
    assert run["state"] == "success", f"{states}\n{stack.logs()}"
    assert states == dict.fromkeys(STAGES, "success")


# ---------------------------------------------------------------------------------------
# 1. a scheduled run, its tasks on both workers; a backfill beside it
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FirstRuns:
    scheduled: dict
    backfill: list[dict]
    org_before: dict[str, str]  # the org's Activated orders before the runs: Id -> SystemModstamp

    @property
    def run_ids(self) -> list[str]:
        return [run["dag_run_id"] for run in (self.scheduled, *self.backfill)]

    def orders_changed_between(self, start: datetime | None, end: datetime) -> set[str]:
        """The orders last changed in [start, end) before the runs (the write-back moves the stamp
        of the orders it writes, so the org before the runs tells)."""
        return {
            order_id
            for order_id, stamp in self.org_before.items()
            if (start is None or start <= _salesforce_time(stamp)) and _salesforce_time(stamp) < end
        }


@pytest.fixture(scope="module")
def first_runs(stack) -> FirstRuns:
    """The DAG unpaused: the scheduler's own run of the last complete (monthly) interval. Only
    worker-1 takes tasks until its extract is under way (paused at its first staged page); then a
    backfill of the three intervals before it is created, and only worker-2 takes tasks until the
    scheduled run is done. No write-back is sent before the backfill runs have read their
    intervals, so the orders last changed in them are still there to read. Returns once the
    backfill is complete too."""
    first, second = WORKERS
    org_before = activated_orders(stack)
    stack.consume(second, on=False)
    stack.hold(STEER_POINT)
    stack.hold(SEND_POINT)
    stack.salesforce_writes.clear()
    stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})

    stack.wait_for(f"the extract at {STEER_POINT}", lambda: stack.reached(STEER_POINT))
    [run] = stack.dag_runs()
    assert run["run_type"] == "scheduled"
    extract = stack.task_instances(run["dag_run_id"])["extract"]
    assert (extract["state"], extract["hostname"]) == ("running", stack.deployment.worker_node(first))

    stack.consume(second, on=True)
    stack.consume(first, on=False)
    interval_start = _time(run["data_interval_start"])
    backfill = stack.api(
        "POST",
        "/backfills",
        json={
            "dag_id": DAG_ID,
            "from_date": (interval_start - timedelta(days=92)).replace(day=1).isoformat(),
            "to_date": (interval_start - timedelta(days=1)).replace(day=1).isoformat(),
        },
    )
    stack.release(STEER_POINT)

    def backfill_read() -> bool:
        runs = [r for r in stack.dag_runs() if r["run_type"] == "backfill"]
        extracts = [stack.task_instances(r["dag_run_id"]).get("extract", {}).get("state") for r in runs]
        return len(runs) == 3 and extracts == ["success"] * 3

    stack.wait_for("the backfill runs' extracts done", backfill_read)
    stack.release(SEND_POINT)
    run = stack.wait_for_run(run["dag_run_id"])
    stack.consume(first, on=True)
    stack.wait_for("the backfill complete", lambda: stack.api("GET", f"/backfills/{backfill['id']}")["completed_at"])
    backfill_runs = [r for r in stack.dag_runs() if r["run_type"] == "backfill"]
    return FirstRuns(run, backfill_runs, org_before)


def test_a_scheduled_run_succeeds_on_celery_with_its_tasks_on_both_workers(stack, first_runs):
    run_id = first_runs.scheduled["dag_run_id"]
    assert_succeeded(stack, first_runs.scheduled)

    first, second = (stack.deployment.worker_node(w) for w in WORKERS)
    assert hostnames(stack, run_id) == {"extract": first} | dict.fromkeys(STAGES[1:], second)
    assert {ti["try_number"] for ti in stack.task_instances(run_id).values()} == {1}

    # the interval's orders, handed from worker to worker through the PostgreSQL warehouse (the
    # backfill runs beside it re-read some of them)
    assert_every_order_once(stack, first_runs.orders_changed_between(None, _time(first_runs.scheduled["data_interval_end"])))
    assert_written_back_once(stack, first_runs.run_ids)
    [report] = stack.query("SELECT status, inserted FROM import_runs WHERE run_id = :r", r=run_id)
    assert report["status"] == "success" and report["inserted"] > 0


def test_a_backfill_of_several_intervals_beside_a_scheduled_run_never_writes_at_the_same_time(stack, first_runs):
    assert len(first_runs.backfill) == 3
    intervals = [(_time(r["data_interval_start"]), _time(r["data_interval_end"])) for r in first_runs.backfill]
    assert any(first_runs.orders_changed_between(*interval) for interval in intervals), "the backfill has nothing to read"
    for run in first_runs.backfill:
        assert_succeeded(stack, run)
        # each run read exactly its interval
        [report] = stack.query(
            "SELECT mode, status, extracted, window_start, window_end FROM import_runs WHERE run_id = :r", r=run["dag_run_id"]
        )
        interval = (_time(run["data_interval_start"]), _time(run["data_interval_end"]))
        assert (report["mode"], report["status"]) == ("backfill", "success")
        assert (report["window_start"], report["window_end"]) == interval
        assert report["extracted"] >= len(first_runs.orders_changed_between(*interval))

    # the warehouse-writing tasks of all four runs, one at a time
    writing = [
        ti
        for run_id in first_runs.run_ids
        for ti in stack.task_instances(run_id).values()
        if ti["pool"] == WAREHOUSE_POOL
    ]
    assert {(ti["dag_run_id"], ti["task_id"]) for ti in writing} == {
        (run_id, task) for run_id in first_runs.run_ids for task in POOLED
    }
    spans = sorted((_time(ti["start_date"]), _time(ti["end_date"]), ti["dag_run_id"], ti["task_id"]) for ti in writing)
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0], f"{a[2]} {a[3]} and {b[2]} {b[3]} wrote the warehouse at the same time"
    # and the runs did run side by side: the scheduled run was not finished when the backfill began
    backfill_start = min(_time(run["start_date"]) for run in first_runs.backfill)
    assert backfill_start < _time(first_runs.scheduled["end_date"])


# ---------------------------------------------------------------------------------------
# 2. a worker killed in the middle of the load
# ---------------------------------------------------------------------------------------


def activate_draft_orders(stack, count: int) -> set[str]:
    """Orders a user activates in Salesforce: new work for the next run."""
    drafts = stack.org_rows(
        "SELECT o.Id FROM \"Order\" o WHERE o.StatusCode = 'Draft' AND o.IsDeleted = 0 "
        "AND EXISTS (SELECT 1 FROM OrderItem i WHERE i.OrderId = o.Id AND i.IsDeleted = 0) ORDER BY o.Id LIMIT ?",
        count,
    )
    assert len(drafts) == count
    with stack.org.store.lock:
        for row in drafts:
            stack.org.store.update("Order", row["Id"], {"Status": "Activated"})
    return {row["Id"] for row in drafts}


def test_a_worker_killed_in_the_middle_of_the_load_the_other_worker_retries_it(stack, first_runs):
    activated = activate_draft_orders(stack, NEWLY_ACTIVATED)
    stack.salesforce_writes.clear()
    stack.hold(KILL_POINT)
    run = stack.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    run_id = run["dag_run_id"]

    stack.wait_for(f"the load at {KILL_POINT}", lambda: stack.reached(KILL_POINT))
    load = stack.task_instances(run_id)["load"]
    assert load["state"] == "running"
    [victim] = [w for w in WORKERS if stack.deployment.worker_node(w) == load["hostname"]]
    [survivor] = [w for w in WORKERS if w != victim]
    # the load has written everything and committed nothing
    assert not stack.query("SELECT sf_order_id FROM external_orders WHERE sf_order_id = ANY(:ids)", ids=list(activated))

    stack.deployment.kill_worker(victim)
    stack.release(KILL_POINT)
    run = stack.wait_for_run(run_id)
    assert_succeeded(stack, run)

    tries = stack.tries(run_id, "load")
    assert [(t["try_number"], t["hostname"], t["state"]) for t in tries] == [
        (1, stack.deployment.worker_node(victim), "failed"),
        (2, stack.deployment.worker_node(survivor), "success"),
    ]
    assert set(hostnames(stack, run_id).values()) <= {stack.deployment.worker_node(w) for w in WORKERS}
    assert_every_order_once(stack, expected_orders(stack))
    completed = stack.query(
        "SELECT sf_order_id FROM external_orders WHERE sf_order_id = ANY(:ids) AND lifecycle_state = 'COMPLETE'",
        ids=list(activated),
    )
    assert {r["sf_order_id"] for r in completed} == activated
    assert_written_back_once(stack, [run_id])

    stack.deployment.restart_worker(victim)


# ---------------------------------------------------------------------------------------
# 3. the External Orders view through the deployment's api-server
# ---------------------------------------------------------------------------------------


def test_the_external_orders_view_shows_the_warehouse_through_the_api_server(stack, first_runs):
    orders = stack.query("SELECT order_number FROM external_orders ORDER BY order_number")
    page = stack.request("GET", "/external-orders/")
    assert page.status_code == 200, page.text[:2000]
    assert re.search(rf"of {len(orders)}\b", page.text), page.text[:3000]

    wanted = orders[-1]["order_number"]
    found = stack.request("GET", "/external-orders/", params={"q": wanted})
    assert found.status_code == 200
    assert re.findall(r'data-order-number="([^"]+)"', found.text) == [wanted]

    runs = stack.request("GET", "/external-orders/runs")
    assert runs.status_code == 200
    assert first_runs.scheduled["dag_run_id"] in runs.text

    anonymous = requests.get(f"{stack.deployment.api_url}/external-orders/", timeout=30, allow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/auth/login")
    assert wanted not in anonymous.text
