"""The DAG that sends shipments to Salesforce.

A DAG file calls :func:`salesforce_orders_shipments` (``dags/salesforce_orders_shipments.py``).
The work is ``salesforce_orders.shipments`` and the outbox drainer, imported by the task when it runs.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import Asset, dag, get_current_context, task
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from salesforce_orders.airflow_dags.import_dag import (
    WAREHOUSE_POOL,  # shared: never drains the outbox with the import
    retried_tasks,
)

# A writer inside Airflow (a fulfilment DAG) that adds shipments lists this Asset in its outlets:
# they go out at once. Writers outside Airflow (scripts, the CLI, another system) are picked up
# by the schedule, every few minutes.
SHIPMENTS_ASSET = Asset(name="orders_warehouse.order_shipments", group="salesforce_orders")

DOC = """
### Salesforce Orders shipments

Checks the shipments added to the warehouse's `order_shipments` table (the order was imported,
quantities fit what was ordered and shipped before, required fields present) and, when
`shipments.enabled` is true in the `salesforce_orders_config` Variable, sends the valid ones
through the write-back outbox: tracking fields on the Order (latest shipment) and its Order
Products, and/or one record of a shipment object per shipment, upserted by the shipment key.

Runs every 5 minutes (`SALESFORCE_ORDERS_SHIPMENTS_SCHEDULE`) and whenever the
`orders_warehouse.order_shipments` Asset is updated. Invalid shipments keep their reasons in
`order_shipments.errors`; see `docs/warehouse.md` ("Shipments") and `docs/runbook.md`.
"""


@dag(
    dag_id="salesforce_orders_shipments",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(os.environ.get("SALESFORCE_ORDERS_SHIPMENTS_SCHEDULE", "*/5 * * * *"), timezone="UTC"),
        assets=SHIPMENTS_ASSET,
    ),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["salesforce", "orders", "shipments"],
    default_args=retried_tasks(max_retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30)),
)
def salesforce_orders_shipments():
    @task(pool=WAREHOUSE_POOL)
    def send_shipments() -> dict:
        """Check new shipments; queue and send the valid ones when sending is enabled."""
        from salesforce_orders import stages

        return stages.send_shipments(run_id=get_current_context()["dag_run"].run_id)

    send_shipments()
