"""The DAG that alerts on-call when no Salesforce orders import has succeeded for too long.

A DAG file calls :func:`salesforce_orders_freshness_check` (``dags/salesforce_orders_freshness_check.py``).
The check itself is ``salesforce_orders.alerts``, imported by the task when it runs.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import dag, task

DOC = """
### Salesforce orders: freshness check

Every 15 minutes, checks the warehouse's `import_runs` for the last successful run of
`salesforce_orders_import`. When none has succeeded for `notifications.no_success_after_minutes`
(default 120) it sends one alert per stale spell to the channels in `notifications` of the
`salesforce_orders_config` Variable, and its run fails, so the stale spell shows red here too.
Quiet while the import is disabled in its config, and before the first import run. Not paused
when Airflow first sees it: it checks from the start.

On-call: `docs/runbook.md`, "No successful import".
"""


@dag(
    dag_id="salesforce_orders_freshness_check",
    schedule="*/15 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,  # an alert nobody unpaused never fires: on-call relies on it from the start
    doc_md=DOC,
    tags=["salesforce", "orders", "alerts"],
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=1)},
)
def salesforce_orders_freshness_check():
    @task(doc_md="Alerts once per stale spell; fails while no import has succeeded within the threshold.")
    def check_recent_success() -> str:
        from airflow.sdk.exceptions import AirflowFailException

        from salesforce_orders.alerts import check_recent_success as check

        found = check()
        if found.stale:
            raise AirflowFailException(found.message)
        return found.message

    check_recent_success()

