"""Sends the warehouse's shipments to Salesforce. Defined in the installed package."""

from salesforce_orders.airflow_dags import salesforce_orders_shipments

salesforce_orders_shipments()
