"""Salesforce Orders -> warehouse import. The DAG is defined in the installed package (README: "Adding it to your Airflow")."""

from salesforce_orders.airflow_dags import salesforce_orders_import

salesforce_orders_import()
