"""The project's Airflow DAGs, as functions a DAG file calls: installing the package is enough.

A DAG file in Airflow's DAG folder (or any DAG bundle) is two lines::

    from salesforce_orders.airflow_dags import salesforce_orders_import

    salesforce_orders_import()

Each call builds the DAG (``@dag`` from ``airflow.sdk``); Airflow registers it against the file
that made the call. The word "airflow" in the import line is what Airflow's DAG discovery looks
for (``dag_discovery_safe_mode``), so those two lines alone are found. Nothing here imports the
pipeline: tasks import it when they run.
"""

from salesforce_orders.airflow_dags.freshness_dag import salesforce_orders_freshness_check
from salesforce_orders.airflow_dags.import_dag import salesforce_orders_import
from salesforce_orders.airflow_dags.shipments_dag import salesforce_orders_shipments

__all__ = ["salesforce_orders_freshness_check", "salesforce_orders_import", "salesforce_orders_shipments"]
