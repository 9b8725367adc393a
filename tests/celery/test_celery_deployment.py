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

from salesforce_orders_local.airflow_env import DAG_ID, WAREHOUSE_POOL
from salesforce_orders_local.celery_deployment import WORKERS

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

STEER_POINT = "extract.page_staged"  # where the worker that takes tasks is switched
KILL_POINT = "load.before_commit"  # where a worker dies: every order written, nothing committed
STAGES = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back", "report")
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


def assert_every_order_once(stack, expected: set[str]) -> None:
    """Each expected order is in the warehouse, loaded or quarantined, once; nothing else is."""
    assert stack.query("SELECT sf_order_id FROM external_orders GROUP BY sf_order_id HAVING COUNT(*) > 1") == []
    loaded = {r["sf_order_id"] for r in stack.query("SELECT sf_order_id FROM external_orders")}
    quarantined = {r["sf_order_id"] for r in stack.query("SELECT DISTINCT sf_order_id FROM quarantined_orders")}
    assert loaded | quarantined == expected
    assert loaded, "the run loaded no orders"


def assert_written_back_once(stack, run_id: str) -> None:
    """Every write-back the run queued is DONE, and Salesforce received each exactly once and
    nothing else."""
    rows = stack.query(
        "SELECT sf_object, sf_record_id, state FROM writeback_outbox WHERE created_run_id = :r", r=run_id
    )
    assert rows, "the run queued no write-back"
    assert {r["state"] for r in rows} == {"DONE"}
    queued = Counter((r["sf_object"], r["sf_record_id"]) for r in rows)
    assert set(queued.values()) == {1}
    assert stack.salesforce_writes.writes == queued


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def hostnames(stack, run_id: str) -> dict[str, str]:
    return {task: ti["hostname"] for task, ti in stack.task_instances(run_id).items()}


def assert_succeeded(stack, run: dict) -> None:
    states = {task: ti["state"] for task, ti in stack.task_instances(run["dag_run_id"]).items()}
    assert run["state"] == "success", f"{states}\n{stack.logs()}"
    assert states == dict.fromkeys(STAGES, "success")


# ---------------------------------------------------------------------------------------
# 1. a scheduled run, its tasks on both workers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledRun:
    run: dict
    org_before: dict[str, str]  # the org's Activated orders before the run: Id -> SystemModstamp

    @property
    def run_id(self) -> str:
        return self.run["dag_run_id"]

    def orders_in_interval(self) -> set[str]:
        """The orders last changed before the run's interval ended (the write-back moves the stamp
        of the orders it writes, so the org before the run tells)."""
        end = _time(self.run["data_interval_end"]).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        return {order_id for order_id, stamp in self.org_before.items() if stamp < end}


@pytest.fixture(scope="module")
def scheduled_run(stack) -> ScheduledRun:
    """The DAG unpaused: the scheduler's own run of the last complete interval. Only worker-1
    takes tasks until the extract is under way (paused at its first staged page); from then on
    only worker-2 does."""
    first, second = WORKERS
    org_before = activated_orders(stack)
    stack.consume(second, on=False)
    stack.hold(STEER_POINT)
    stack.salesforce_writes.clear()
    stack.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})

    stack.wait_for(f"the extract at {STEER_POINT}", lambda: stack.reached(STEER_POINT))
    [run] = stack.dag_runs()
    assert run["run_type"] == "scheduled"
    extract = stack.task_instances(run["dag_run_id"])["extract"]
    assert (extract["state"], extract["hostname"]) == ("running", stack.deployment.worker_node(first))

    stack.consume(second, on=True)
    stack.consume(first, on=False)
    stack.release(STEER_POINT)
    run = stack.wait_for_run(run["dag_run_id"])
    stack.consume(first, on=True)
    return ScheduledRun(run, org_before)


def test_a_scheduled_run_succeeds_on_celery_with_its_tasks_on_both_workers(stack, scheduled_run):
    run_id = scheduled_run.run_id
    assert_succeeded(stack, scheduled_run.run)

    first, second = (stack.deployment.worker_node(w) for w in WORKERS)
    ran_on = hostnames(stack, run_id)
    assert ran_on == {"extract": first} | dict.fromkeys(STAGES[1:], second)
    assert {ti["try_number"] for ti in stack.task_instances(run_id).values()} == {1}

    # the interval's orders, handed from worker to worker through the PostgreSQL warehouse
    assert_every_order_once(stack, scheduled_run.orders_in_interval())
    assert_written_back_once(stack, run_id)
    [report] = stack.query("SELECT status, extracted, inserted FROM import_runs WHERE run_id = :r", r=run_id)
    assert report["status"] == "success" and report["inserted"] > 0


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


def test_a_worker_killed_in_the_middle_of_the_load_the_other_worker_retries_it(stack, scheduled_run):
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
    assert_written_back_once(stack, run_id)

    stack.deployment.restart_worker(victim)


# ---------------------------------------------------------------------------------------
# 3. a backfill: runs side by side, warehouse writes one at a time
# ---------------------------------------------------------------------------------------


def test_a_backfill_of_several_intervals_completes_without_overlapping_warehouse_writes(stack, scheduled_run):
    interval_start = _time(scheduled_run.run["data_interval_start"])
    from_date = (interval_start - timedelta(days=92)).replace(day=1)
    to_date = (interval_start - timedelta(days=1)).replace(day=1)
    backfill = stack.api(
        "POST",
        "/backfills",
        json={"dag_id": DAG_ID, "from_date": from_date.isoformat(), "to_date": to_date.isoformat()},
    )

    def backfill_runs() -> list[dict]:
        return [r for r in stack.dag_runs() if r["run_type"] == "backfill"]

    stack.wait_for("the backfill complete", lambda: stack.api("GET", f"/backfills/{backfill['id']}")["completed_at"])
    runs = backfill_runs()
    assert len(runs) >= 3
    for run in runs:
        assert_succeeded(stack, run)

    writing = [
        ti
        for run in stack.dag_runs()
        for ti in stack.task_instances(run["dag_run_id"]).values()
        if ti["pool"] == WAREHOUSE_POOL
    ]
    backfilled = {run["dag_run_id"] for run in runs}
    assert {(ti["run_id"], ti["task_id"]) for ti in writing if ti["run_id"] in backfilled} >= {
        (run_id, task) for run_id in backfilled for task in ("load", "write_back")
    }
    spans = sorted((_time(ti["start_date"]), _time(ti["end_date"]), ti["run_id"], ti["task_id"]) for ti in writing)
    for a, b in itertools.pairwise(spans):
        assert a[1] <= b[0], f"{a[2]} {a[3]} and {b[2]} {b[3]} wrote the warehouse at the same time"
    assert_every_order_once(stack, expected_orders(stack))


# ---------------------------------------------------------------------------------------
# 4. the External Orders view through the deployment's api-server
# ---------------------------------------------------------------------------------------


def test_the_external_orders_view_shows_the_warehouse_through_the_api_server(stack, scheduled_run):
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
    assert scheduled_run.run_id in runs.text

    anonymous = stack.deployment.api_url + "/external-orders/"
    assert requests.get(anonymous, timeout=30, allow_redirects=False).status_code in (401, 403)
