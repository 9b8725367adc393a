"""The import under the real scheduler: a scheduled run, a backfill of several intervals and a re-sync
through the REST API all at once while orders change, then a cleared task and a last run. Afterwards
Salesforce and the warehouse agree: no order missing, none twice, none older than in Salesforce;
every write-back went out once; and the tasks that write what runs share never overlapped.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from salesforce_orders_local.airflow_env import DAG_ID

FINISHED = {"success", "failed"}

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(1800)]

# The transform mapped over two ranges of order ids wherever a run has 40 valid orders or more
# (the first run's): its instances run side by side under the scheduler.
STACK = {"orders": 150, "seed": 5, "schedule": "0 * * * *", "config": {"transform_partitions": 2, "transform_partition_min_orders": 20}}
SERIALISED = {"validate", "load", "mark_status_changes", "write_back", "mask_card_fields"}
BACKFILL_HOURS = 3


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def test_scheduled_backfill_resync_and_clear_leave_the_warehouse_equal_to_salesforce(stack):
    airflow = stack.airflow
    now = datetime.now(UTC)
    hour = _hour(now)
    # Some orders last changed inside the hours the backfill covers (the org's history, arranged).
    activated = [r["Id"] for r in stack.org_rows("SELECT Id FROM \"Order\" WHERE StatusCode = 'Activated' ORDER BY Id")]
    for n, order_id in enumerate(activated[:30]):
        stamp = _iso(hour - timedelta(hours=BACKFILL_HOURS + 1) + timedelta(minutes=7 * n + 1))
        with stack.org.store.lock:
            stack.org.store.conn.execute('UPDATE "Order" SET SystemModstamp = ?, LastModifiedDate = ? WHERE Id = ?', (stamp, stamp, order_id))
    first_change, *later_changes = activated[40:43]
    first_number = stack.org_rows('SELECT OrderNumber FROM "Order" WHERE Id = ?', first_change)[0]["OrderNumber"]

    # a scheduled run (unpausing creates the latest interval's), a backfill and a re-sync, at once
    airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
    airflow.cli(
        "backfill", "create", "--dag-id", DAG_ID,
        "--from-date", (hour - timedelta(hours=BACKFILL_HOURS + 1)).isoformat(),
        "--to-date", (hour - timedelta(hours=2)).isoformat(),
    )
    stack.org_update("Order", first_change, Description="changed before the re-sync")
    resync = airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"order_numbers": [first_number]}})
    airflow.wait_until(lambda: airflow.run_state(resync["dag_run_id"]) != "queued", "the re-sync to start")
    for order_id in later_changes:  # while the runs are under way
        stack.org_update("Order", order_id, Description="changed while the runs were under way")

    runs = airflow.wait_until(
        lambda: (runs := airflow.dag_runs()) and all(r["state"] in ("success", "failed") for r in runs) and runs,
        "every run to finish",
    )
    by_type: dict[str, list[dict]] = {}
    for run in runs:
        by_type.setdefault(run["run_type"], []).append(run)
    assert {r["state"] for r in runs} == {"success"}, [(r["dag_run_id"], r["state"]) for r in runs]
    assert len(by_type["backfill"]) == BACKFILL_HOURS
    assert by_type["scheduled"] and by_type["manual"]
    _assert_transformed_in_mapped_instances(airflow)

    # a cleared task: the first scheduled run's load, with what follows it
    scheduled = by_type["scheduled"][0]["dag_run_id"]
    airflow.api(
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        json={"dry_run": False, "dag_run_id": scheduled, "task_ids": ["load"], "include_downstream": True,
              "only_failed": False, "reset_dag_runs": True},
    )
    airflow.wait_until(lambda: airflow.run_state(scheduled) == "queued" or _tries(airflow, scheduled, "load") > 1, "the clear")
    assert airflow.wait_for_run(scheduled) == "success"
    assert _tries(airflow, scheduled, "load") > 1

    # a last run picks up what changed after the others read (then no more runs: the DAG is paused)
    last = airflow.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    assert airflow.wait_for_run(last["dag_run_id"]) == "success"
    airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True})
    airflow.wait_until(lambda: all(r["state"] in FINISHED for r in airflow.dag_runs()), "any run started meanwhile to finish")

    _assert_serialised(airflow)
    _assert_warehouse_equals_salesforce(stack, changed={first_change, *later_changes})


def _assert_transformed_in_mapped_instances(airflow) -> None:
    """The first run's transform ran as two mapped instances (outside the pool: free to run side
    by side); every instance of every run succeeded."""
    transforms = [t for t in airflow.task_instances() if t["task_id"] == "transform"]
    by_run: dict[str, list[dict]] = {}
    for t in transforms:
        by_run.setdefault(t["dag_run_id"], []).append(t)
    assert {t["state"] for t in transforms} == {"success"}
    assert all(t["map_index"] >= 0 for t in transforms)
    split = [sorted(instances, key=lambda t: t["map_index"]) for instances in by_run.values() if len(instances) > 1]
    assert split, "no run transformed in more than one instance"
    assert [t["map_index"] for t in split[0]] == [0, 1]


def _tries(airflow, run_id: str, task_id: str) -> int:
    return next(t["try_number"] for t in airflow.task_instances(run_id) if t["task_id"] == task_id)


def _assert_serialised(airflow) -> None:
    """No two warehouse-writing task instances, of any runs, ran at the same time."""
    spans = sorted(
        (_ts(t["start_date"]), _ts(t["end_date"]), t["dag_run_id"], t["task_id"])
        for t in airflow.task_instances()
        if t["task_id"] in SERIALISED and t["start_date"] and t["end_date"]
    )
    runs = {span[2] for span in spans}
    assert len(runs) >= BACKFILL_HOURS + 3
    for before, after in zip(spans, spans[1:], strict=False):
        assert before[1] <= after[0], f"{before[2]}.{before[3]} overlapped {after[2]}.{after[3]}"


def _assert_warehouse_equals_salesforce(stack, changed: set[str]) -> None:
    org = {
        r["Id"]: r
        for r in stack.org_rows(
            'SELECT o.Id, o.Description, o.StatusCode, o.Status, o.SystemModstamp, a.Name AS AccountName FROM "Order" o '
            "JOIN Account a ON a.Id = o.AccountId WHERE o.IsDeleted = 0 "
            "AND o.ActivatedDate >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-730 days')"
        )
    }
    expected = {order_id for order_id, r in org.items() if r["StatusCode"] == "Activated"}
    loaded = {r["sf_order_id"]: r for r in stack.query("SELECT * FROM external_orders")}
    quarantined = {r["sf_order_id"] for r in stack.query("SELECT sf_order_id FROM quarantined_orders WHERE released_at IS NULL")}
    assert set(loaded) | quarantined == expected  # none missing, nothing else
    assert not set(loaded) & quarantined
    for order_id, row in loaded.items():  # none older than in Salesforce
        assert (row["notes"] or None) == (org[order_id]["Description"] or None), order_id
        assert row["account_name"] == org[order_id]["AccountName"], order_id
        assert row["sf_system_modstamp"] <= _ts(org[order_id]["SystemModstamp"]), order_id
        assert org[order_id]["Status"] == "Imported", order_id
        assert row["lifecycle_state"] == "COMPLETE", order_id
    rows = stack.query("SELECT sf_object, sf_record_id, fields, state FROM writeback_outbox ORDER BY id")
    assert {r["state"] for r in rows} == {"DONE"}
    writes: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        writes.setdefault((row["sf_object"], row["sf_record_id"]), []).append(row["fields"])
    for (sf_object, record_id), fields in writes.items():
        if sf_object == "Order" and record_id in changed:
            # edited by someone after the import wrote it back: its card fields are X-ed out again
            # (they are never read, so any edit may have typed a card number in), its Status not
            assert len(fields) <= 2 and all("Status" not in f for f in fields[1:]), (record_id, fields)
        else:
            assert len(fields) == 1, f"{sf_object} {record_id} was written back {len(fields)} times: {fields}"
