"""An analyst's DAG scheduled on fresh orders: it runs whenever the import has loaded the warehouse.

A template to copy. The import's ``load`` task updates the ``orders_warehouse.*`` Assets; this DAG
is scheduled on ``orders_warehouse.external_orders`` and refers to it by name only, so it needs
nothing from the import's code. Each asset event's extra says what the load changed.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Asset, dag, get_current_context, task

FRESH_ORDERS = Asset.ref(name="orders_warehouse.external_orders")

DOC = """
### Orders downstream example

Runs after every import run that loaded the warehouse (Asset `orders_warehouse.external_orders`).
Reads the triggering event's counts and, when orders were inserted or updated, summarises the
latest days' revenue from the `v_revenue_by_day` view, in the warehouse the import writes to.
Copy it, and put your own query or model refresh in `summarise`.
"""


@dag(
    dag_id="orders_downstream_example",
    schedule=[FRESH_ORDERS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    doc_md=DOC,
    tags=["salesforce", "orders", "example"],
    default_args={"owner": "analytics", "retries": 2},
)
def orders_downstream_example():
    @task
    def changed_orders() -> int:
        """Orders inserted or updated by the load(s) that triggered this run (0: nothing new)."""
        events = get_current_context()["triggering_asset_events"]
        return sum(
            int(event.extra.get("inserted", 0)) + int(event.extra.get("updated", 0))
            for asset_events in events.values()
            for event in asset_events
        )

    @task
    def summarise(changed: int) -> list[dict]:
        if not changed:
            print("The import ran but changed no order: nothing to refresh.")
            return []
        import sqlalchemy as sa

        from salesforce_orders.config import load_config
        from salesforce_orders.warehouse import engine_from_connection

        config = load_config()  # the import's own config: same connection, same schema
        view = sa.table(
            "v_revenue_by_day", *(sa.column(c) for c in ("day", "currency", "orders", "revenue")), schema=config.warehouse_schema
        )
        engine = engine_from_connection(config.warehouse_conn_id)
        with engine.connect() as conn:
            rows = conn.execute(sa.select(view).order_by(view.c.day.desc(), view.c.currency).limit(10)).mappings()
            days = [{k: str(v) for k, v in row.items()} for row in rows]
        engine.dispose()
        for day in days:
            print(f"{day['day']} {day['currency']}: {day['orders']} orders, revenue {day['revenue']}")
        return days

    summarise(changed_orders())


orders_downstream_example()
