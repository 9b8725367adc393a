"""The event-driven import under the real scheduler, dag-processor, api-server and triggerer: an order
activated in the sandbox is imported and written back by a run its change event started, with no
scheduled run at all (the schedule is yearly and its first interval has not ended); the import's
own write-back starts nothing; event runs leave the watermark alone.
"""

from __future__ import annotations

import pytest

from salesforce_orders.load import get_watermark
from salesforce_orders.order_events import ReplayStore
from salesforce_orders_local.airflow_env import DAG_ID
from salesforce_sandbox.events import CHANGE_EVENT_TOPIC, replay_bytes
from tests.conftest import activatable_orders

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(1800)]

STACK = {
    "orders": 60,
    "seed": 5,
    "schedule": "0 0 1 1 *",  # the first interval (from the DAG's start date) ends in 2027: no scheduled run
    "config": {"events": {"enabled": True, "window_seconds": 1.0}},
    "components": ("triggerer",),
}


def _order_ids_of(stack, run_id: str) -> list[str]:
    entry = stack.airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/extract/xcomEntries/return_value")
    return entry["value"]["window"]["order_ids"]


def _finished_event_runs(stack, count: int) -> list[dict] | None:
    runs = [r for r in stack.airflow.dag_runs() if r["run_type"] == "asset_triggered"]
    done = [r for r in runs if r["state"] in ("success", "failed")]
    return done if len(done) >= count and len(runs) == len(done) else None


def test_an_activated_order_is_imported_and_written_back_by_its_change_event(stack):
    airflow = stack.airflow
    first, second = activatable_orders(stack.org, 2)
    # The trigger resumes from here however late it subscribes: no change below can slip past it.
    ReplayStore(stack.warehouse, stack.schema, CHANGE_EVENT_TOPIC).save(replay_bytes(stack.org.events.latest_replay()))
    airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})

    stack.org_update("Order", first, Status="Activated")
    (run,) = airflow.wait_until(lambda: _finished_event_runs(stack, 1), "the event run of the first activation")
    assert run["state"] == "success", airflow.logs()
    assert _order_ids_of(stack, run["dag_run_id"]) == [first]
    assert stack.org_rows('SELECT Status FROM "Order" WHERE Id = ?', first) == [{"Status": "Imported"}]
    assert stack.query("SELECT sf_order_id, lifecycle_state FROM external_orders") == [
        {"sf_order_id": first, "lifecycle_state": "COMPLETE"}]  # imported and written back

    # The write-back above published change events of its own: they started nothing, so the next
    # run is the second activation's alone.
    stack.org_update("Order", second, Status="Activated")
    runs = airflow.wait_until(lambda: _finished_event_runs(stack, 2), "the event run of the second activation")
    assert len(runs) == 2 and all(r["state"] == "success" for r in runs), airflow.logs()
    later = next(r for r in runs if r["dag_run_id"] != run["dag_run_id"])
    assert _order_ids_of(stack, later["dag_run_id"]) == [second]
    assert stack.org_rows('SELECT Status FROM "Order" WHERE Id = ?', second) == [{"Status": "Imported"}]
    assert stack.query("SELECT lifecycle_state FROM external_orders WHERE sf_order_id = :o", o=second) == [
        {"lifecycle_state": "COMPLETE"}]

    assert {r["run_type"] for r in airflow.dag_runs()} == {"asset_triggered"}  # no scheduled run
    assert {r["mode"] for r in stack.query("SELECT mode FROM import_runs")} == {"order_events"}
    assert get_watermark(stack.warehouse, stack.schema) is None  # event runs never move it
    assert stack.query("SELECT count(*) AS n FROM external_orders") == [{"n": 2}]
