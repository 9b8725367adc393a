"""The Salesforce Orders -> warehouse import DAG, defined in the package so a DAG file needs two lines.

A DAG file calls :func:`salesforce_orders_import` (``dags/salesforce_orders_import.py``); Airflow
records that file as the DAG's location, so workers re-parse the same two lines. Only Airflow's
task SDK is imported here: each task imports the pipeline (``salesforce_orders.stages``) when it runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import (
    Asset,
    AssetOrTimeSchedule,
    AssetWatcher,
    CronDataIntervalTimetable,
    Param,
    dag,
    get_current_context,
    task,
)

from salesforce_orders.event_trigger import OrderEventsTrigger

STAGES = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back", "mask_card_fields")
# The stage mapped over ranges of order ids (the validate's transform_partitions): one instance each.
MAPPED_STAGE = "transform"
# The XCom key of the validate's summary (its return value is the transform's partitions).
SUMMARY_KEY = "summary"

# The tasks that write what runs share (quarantine, orders, watermark, outbox; Salesforce) run in a
# one-slot pool: runs of every type (scheduled, manual, backfill, whose own max_active_runs the
# DAG's does not bound) never write at the same time. Create it once per deployment:
#   airflow pools set salesforce_orders_warehouse 1 "one import writes the warehouse at a time"
# weight_rule="upstream": a run's later stages go first, so a started run finishes before the next.
WAREHOUSE_POOL = "salesforce_orders_warehouse"
SERIALISED = {"pool": WAREHOUSE_POOL, "weight_rule": "upstream"}

# The loaded tables as Airflow Assets: analysts' DAGs schedule on them (dags/orders_downstream_example.py).
# Each event's extra carries the load's counts, so a consumer can tell a real change from a no-op run.
WAREHOUSE_ASSETS = tuple(
    Asset(name=f"orders_warehouse.{table}", group="salesforce_orders")
    for table in ("external_orders", "external_order_items", "order_services", "customers", "customer_locations")
)

# Salesforce's Order change events, watched in the triggerer: each burst of changes is one asset
# event carrying the changed Order ids, and starts a run for just those orders. The trigger reads
# the Variable when it runs (events.enabled, off by default): nothing is read at parse time.
ORDER_CHANGES = Asset(
    name="salesforce.order_change_events",
    uri="salesforce://order-change-events",
    group="salesforce_orders",
    watchers=[AssetWatcher(name="salesforce_order_change_events", trigger=OrderEventsTrigger())],
)

DOC = """
### Salesforce Orders import

Imports **Activated** Salesforce Orders (with their Account and Order Products) into the
warehouse, then writes the outcome back to Salesforce:

`extract` → `validate` → `transform` (mapped, one instance per range of order ids) → `load` →
`mark_status_changes` → `write_back` → `mask_card_fields` → `report`

* **Reads**: Connection `salesforce_default` (any auth mode of the Salesforce provider; extras
  `login_url`/`ca_bundle` for the local sandbox), Connection `orders_warehouse` (SQLite or
  PostgreSQL), Variable `salesforce_orders_config` (JSON; every key optional, see
  `docs/configuration.md`).
* **Writes**: warehouse tables `external_orders`, `external_order_items`, `order_services`,
  `products`, `customers` (with every ancestor Account), `customer_locations`, `quarantined_orders`,
  `skipped_orders`, `import_runs`, `writeback_outbox`, `currency_rates`, `sync_state`, and with
  `history_mode` the version tables; in Salesforce: Order `Status` → Imported (when the org has it), card fields X-ed
  out (also on orders quarantined, skipped or set back to Draft), the customer id onto the Account.
  Card numbers typed into other fields are masked before anything is stored; such orders are
  flagged `card_data_masked`.
* **Window**: scheduled runs start at the stored watermark (every order changed before it is
  loaded) minus `overlap_minutes`; the first run reaches back `lookback_days` (730).
* **Event runs** (with `events.enabled`): Salesforce's Order change events start a run for just
  the changed orders (Asset `salesforce.order_change_events`), seconds after the change; they never
  move the watermark, and the schedule stays the safety net.

**Re-run / re-sync** (Trigger DAG w/ config):
`{"order_numbers": ["00000123"]}` re-syncs those orders; `{"since": "2026-01-01"}` imports orders
activated or changed since a date; `{"full_resync": true}` re-reads everything in the lookback.

**Backfill** a period exactly: `airflow backfill create --dag-id salesforce_orders_import
--from-date 2026-01-01 --to-date 2026-01-31`.

On-call: **[External Orders](/plugin/external-orders)** (also under Browse): the import's health,
runs with the failing stage and reason, orders, quarantine, write-backs, the config in effect and
any order's story; `docs/runbook.md`; the `report` task's log ends with the run summary.
"""

TASK_DOCS = {
    "extract": "Brings the warehouse to the code's schema version (creates or upgrades it, puts back missing views), "
    "plans the window (watermark, params or backfill interval) and streams the Activated orders "
    "page by page from Salesforce into the run's staging tables. Fails on a bad config or param without retrying.",
    "validate": "Great Expectations checks over the staged orders. Invalid orders go to `quarantined_orders` "
    "with the checks they failed; the task fails (nothing loaded) when the invalid share passes `max_invalid_share`. "
    "Splits the valid orders into the transform's ranges of order ids (`transform_partitions`).",
    "transform": "Pure transform of valid orders: external name, billing/service address, customers "
    "(parent/child), service groups, routing, metadata, zero-total policy, notes. Mapped: one instance per range "
    "of order ids (`transform_partitions`, each of at least `transform_partition_min_orders`; a small run is one), "
    "side by side; a retried instance redoes only its own range.",
    "load": "One warehouse transaction: upserts customers, locations, orders, items and services; an unchanged "
    "order (same content hash) is a no-op; write-back rows go to the outbox; the watermark moves. Updates the "
    "`orders_warehouse.*` Assets (event extra: inserted/updated/unchanged) for analysts' DAGs.",
    "mark_status_changes": "Orders that went back to Draft or were deleted in Salesforce are marked "
    "`deactivated`/`deleted` in the warehouse and their pending write-backs cancelled.",
    "write_back": "Drains the outbox with sObject Collections (200 records a call): Status → Imported, card fields "
    "X-ed out, customer id on the Account. Failed records stay visible in `writeback_outbox` and are retried.",
    "mask_card_fields": "X-es out the card fields of orders the import set aside (quarantined, skipped as "
    "zero-total, set back to Draft), whether or not the import succeeded: the `x_out_card` outbox rows the "
    "write-back did not send. Off with `write_back.x_out_card_fields_not_imported: false`.",
    "report": "Writes the run's `import_runs` row (counts per stage, API calls, duration) and logs the summary. "
    "Runs even when a stage failed, then fails itself so the run shows failed and the failure alert fires. "
    "Deletes staged records and finished write-back rows older than `retention_days`.",
}


def _notify_failure(context) -> None:
    """The failure alert (off unless the config's ``notifications`` names a channel)."""
    from salesforce_orders.alerts import notify_failure

    notify_failure(context)


def _fail_if_a_stage_failed(facts: dict) -> None:
    """A failed stage fails the run once its summary is recorded: the run shows red and the failure alert fires."""
    from airflow.sdk.exceptions import AirflowFailException

    ti, dag_run = facts["context"]["ti"], facts["dag_run"]
    states = ti.get_task_states(dag_id=dag_run.dag_id, task_ids=list(STAGES), run_ids=[dag_run.run_id]).get(dag_run.run_id, {})
    failed = [stage for stage in STAGES if _stage_states(states, stage) & {"failed", "upstream_failed"}]
    if failed:
        raise AirflowFailException(f"Import run failed at: {', '.join(failed)}. Its summary is logged above and in import_runs.")


def _stage_states(states: dict[str, str], stage: str) -> set[str]:
    """The states of a stage's task instances: Airflow names a mapped task's ``<task_id>_<map index>``."""
    return {state for key, state in states.items() if key == stage or (key.startswith(f"{stage}_") and key[len(stage) + 1 :].isdigit())}


def _instance_results(ti) -> list:
    """The mapped transform's results, one per range the validate planned: None for an instance
    that left none (it failed), so the stage has a result only when every instance has one."""
    planned = ti.xcom_pull(task_ids="validate", default=None) or []
    return ti.xcom_pull(task_ids=MAPPED_STAGE, map_indexes=list(range(len(planned))), default=None)


def _budget_left(ti) -> int | None:
    """What the run's last stage to talk to Salesforce left of its API budget (None: no limit known)."""
    for stage in ("write_back", "mark_status_changes", "extract"):
        result = ti.xcom_pull(task_ids=stage, default=None)
        if result and result.get("api_budget_left") is not None:
            return result["api_budget_left"]
    return None


# At most this many change events that came after a run's own are added to it (see below).
LATE_EVENTS_LIMIT = 200


def _names_no_order(events) -> bool:
    """Whether one of the trigger's asset events stands for changes it could not name (an event it
    could not read, a Salesforce overflow event): the run must then read every change since the
    watermark, not just the orders the other events name."""
    for event in events:
        payload = (getattr(event, "extra", None) or {}).get("payload")
        if isinstance(payload, dict) and (payload.get("unreadable") or not payload.get("order_ids")):
            return True
    return False


def _event_run_order_ids(context) -> list[str]:
    """The Order ids of an event run: those of its triggering asset events, and of the events that
    came after them. While a run is active, the scheduler queues the next one at the first new event
    and gives it only the events up to that one; events arriving until it is created start no run of
    their own (Airflow's asset queue keeps one entry per asset). Taking them here imports them now
    rather than at the next event or the next scheduled run; a later run re-syncing them is a no-op.

    None (an ordinary run from the watermark) when any of those events names no order: a run of
    the others' orders alone would leave its changes to the next scheduled run."""
    from salesforce_orders.runs import order_ids_of_events

    triggering = context.get("triggering_asset_events") or {}
    order_ids = order_ids_of_events(triggering)
    if not order_ids or _names_no_order(event for events in triggering.values() for event in events):
        return []
    newest = max(event.timestamp for events in triggering.values() for event in events)
    later = list(context["inlet_events"][ORDER_CHANGES].after(newest.isoformat()).limit(LATE_EVENTS_LIMIT))
    if _names_no_order(later):
        return []
    return list(dict.fromkeys([*order_ids, *order_ids_of_events({ORDER_CHANGES: later})]))


def _run_facts() -> dict:
    context = get_current_context()
    dag_run = context["dag_run"]
    return {"run_id": dag_run.run_id, "dag_run": dag_run, "context": context}


def retried_tasks(*, max_retry_delay: timedelta, execution_timeout: timedelta) -> dict:
    """The tasks' default_args: three retries backing off from a minute (Salesforce's and the
    warehouse's passing troubles), bounded by the DAG's own delay and timeout."""
    return {
        "owner": "data-engineering",
        "retries": 3,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay,
        "execution_timeout": execution_timeout,
    }


@dag(
    dag_id="salesforce_orders_import",
    # The cron schedule is the safety net; change events start runs in between.
    schedule=AssetOrTimeSchedule(
        timetable=CronDataIntervalTimetable(os.environ.get("SALESFORCE_ORDERS_SCHEDULE", "*/15 * * * *"), timezone="UTC"),
        assets=ORDER_CHANGES,
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["salesforce", "orders", "import"],
    on_failure_callback=_notify_failure,
    default_args=retried_tasks(max_retry_delay=timedelta(minutes=10), execution_timeout=timedelta(hours=2)),
    params={
        "since": Param(None, type=["null", "string"], description="Import orders activated or changed since this date (YYYY-MM-DD)."),
        "order_numbers": Param([], type=["array", "string"], description="Re-sync just these OrderNumbers."),
        "full_resync": Param(False, type="boolean", description="Re-read every Activated order within the lookback."),
    },
)
def salesforce_orders_import():
    @task(doc_md=TASK_DOCS["extract"], inlets=[ORDER_CHANGES])
    def extract() -> dict:
        from salesforce_orders import stages

        facts = _run_facts()
        dag_run, context = facts["dag_run"], facts["context"]
        params = dict(context["params"])
        order_ids = _event_run_order_ids(context)
        if order_ids:  # an event run: just the orders of its change events
            params["order_ids"] = order_ids
        return stages.extract(
            run_id=facts["run_id"],
            dag_run_id=dag_run.run_id,
            run_type=str(getattr(dag_run.run_type, "value", dag_run.run_type)),
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            params=params,
        )

    # Returns the transform's partitions, which the mapped transform expands over (Airflow maps only
    # over a task's return value); the validation's summary is its XCom "summary".
    @task(doc_md=TASK_DOCS["validate"], **SERIALISED)
    def validate(extracted: dict) -> list:
        from salesforce_orders import stages

        summary = stages.validate(run_id=extracted["run_id"], held_accounts=extracted.get("held_accounts"))
        get_current_context()["ti"].xcom_push(key=SUMMARY_KEY, value=summary)
        return summary["transform_partitions"]

    # Mapped over the validate's ranges of order ids: the instances run side by side, outside the
    # pool (each writes only its own range's staging). The instance's label names its range.
    @task(doc_md=TASK_DOCS["transform"], map_index_template="{{ order_id_range }}")
    def transform(extracted: dict, partition: dict) -> dict:
        from salesforce_orders import stages
        from salesforce_orders.partitions import OrderIdRange

        get_current_context()["order_id_range"] = str(OrderIdRange.from_dict(partition))
        return stages.transform(run_id=extracted["run_id"], instance_url=extracted["instance_url"], partition=partition)

    @task(doc_md=TASK_DOCS["load"], outlets=list(WAREHOUSE_ASSETS), **SERIALISED)
    def load(extracted: dict, transformed: list[dict]) -> dict:
        from salesforce_orders import stages

        loaded = stages.load(
            run_id=extracted["run_id"], max_system_modstamp=extracted["max_system_modstamp"], window=extracted["window"]
        )
        events = get_current_context()["outlet_events"]
        for asset in WAREHOUSE_ASSETS:
            events[asset].extra = {"run_id": loaded["run_id"], **{k: loaded.get(k, 0) for k in ("inserted", "updated", "unchanged")}}
        return loaded

    @task(doc_md=TASK_DOCS["mark_status_changes"], **SERIALISED)
    def mark_status_changes(extracted: dict, loaded: dict) -> dict:
        from salesforce_orders import stages

        return stages.mark_status_changes(
            run_id=extracted["run_id"], window=extracted["window"], api_budget_left=extracted.get("api_budget_left")
        )

    @task(doc_md=TASK_DOCS["write_back"], **SERIALISED)
    def write_back(extracted: dict, marked: dict) -> dict:
        from salesforce_orders import stages

        return stages.write_back(run_id=extracted["run_id"], api_budget_left=marked.get("api_budget_left"))

    @task(doc_md=TASK_DOCS["mask_card_fields"], trigger_rule="all_done", **SERIALISED)
    def mask_card_fields() -> dict:
        from salesforce_orders import stages

        facts = _run_facts()
        return stages.mask_card_fields(run_id=facts["run_id"], api_budget_left=_budget_left(facts["context"]["ti"]))

    @task(doc_md=TASK_DOCS["report"], trigger_rule="all_done", retries=1)
    def report() -> dict:
        from salesforce_orders import stages
        from salesforce_orders.partitions import combine_results

        facts = _run_facts()
        ti = facts["context"]["ti"]
        results = {stage: ti.xcom_pull(task_ids=stage, default=None) for stage in STAGES}
        results["validate"] = ti.xcom_pull(task_ids="validate", key=SUMMARY_KEY, default=None)
        results[MAPPED_STAGE] = combine_results(_instance_results(ti))
        summary = stages.report(run_id=facts["run_id"], results=results, run_started=facts["dag_run"].start_date)
        _fail_if_a_stage_failed(facts)
        return summary

    extracted = extract()
    validated = validate(extracted)
    transformed = transform.partial(extracted=extracted).expand(partition=validated)
    loaded = load(extracted, transformed)
    marked = mark_status_changes(extracted, loaded)
    written = write_back(extracted, marked)
    written >> mask_card_fields() >> report()

