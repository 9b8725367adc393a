"""Alerts on-call when no Salesforce orders import has succeeded for too long. Defined in the installed package."""

from salesforce_orders.airflow_dags import salesforce_orders_freshness_check

salesforce_orders_freshness_check()
