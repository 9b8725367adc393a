# The project's Airflow image: the official image plus the pinned requirements and the
# project's packages (include/), installed so DAGs import them without sys.path tricks.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:0 requirements.txt constraints.txt pyproject.toml README.md /opt/project/
COPY --chown=airflow:0 include /opt/project/include
RUN pip install --no-cache-dir -r /opt/project/requirements.txt -c /opt/project/constraints.txt \
 && pip install --no-cache-dir --no-deps /opt/project
