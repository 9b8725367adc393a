# The project's Airflow image: the official image plus the package (with its sandbox extra, which
# docker-compose's Salesforce stand-in runs), resolved to the pins this repository tests
# (constraints.txt), and the DAG files. The External Orders view comes with the package (its
# airflow.plugins entry point). Used by docker-compose.yaml and by the official Helm chart
# (deploy/helm/values.yaml).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 constraints.txt pyproject.toml README.md /opt/project/
COPY --chown=airflow:0 include /opt/project/include
RUN pip install --no-cache-dir "/opt/project[sandbox]" -c /opt/project/constraints.txt
COPY --chown=airflow:0 dags/salesforce_orders_import.py dags/salesforce_orders_freshness_check.py dags/salesforce_orders_shipments.py /opt/airflow/dags/
