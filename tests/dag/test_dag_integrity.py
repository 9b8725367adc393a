"""DAG integrity: the file imports cleanly and fast, follows the project's conventions."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILE = DAGS / "salesforce_orders_import.py"


@pytest.fixture(scope="module")
def dag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("salesforce_orders_import")


def test_task_graph(dag):
    order = ["extract", "validate", "transform", "load", "mark_status_changes", "write_back", "report"]
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    assert dag.get_task("report").trigger_rule == "all_done"


def test_conventions(dag):
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.tags and {"salesforce", "orders"} <= set(dag.tags)
    assert dag.doc_md and "salesforce_orders_config" in dag.doc_md and "backfill" in dag.doc_md
    assert dag.start_date is not None and dag.start_date.year == 2026
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.expression == "*/15 * * * *"
    for t in dag.tasks:
        assert t.retries >= (1 if t.task_id == "report" else 2), t.task_id
        assert t.retry_delay >= timedelta(seconds=30), t.task_id
        assert t.doc_md, f"{t.task_id} has no doc_md"
    assert set(dag.params.keys()) == {"since", "order_numbers", "full_resync"}


def test_the_tasks_that_write_shared_state_run_one_at_a_time_across_runs(dag):
    """Every run type (a backfill's own max_active_runs included) queues for the same one-slot pool;
    a started run's later stages go first."""
    from salesforce_orders_local.airflow_env import WAREHOUSE_POOL

    serialised = {t.task_id for t in dag.tasks if t.pool == WAREHOUSE_POOL}
    assert serialised == {"validate", "load", "mark_status_changes", "write_back"}
    assert {str(dag.get_task(t).weight_rule) for t in serialised} == {"upstream"}


def test_dag_file_has_no_heavy_top_level_imports():
    tree = ast.parse(DAG_FILE.read_text())
    top_level = {
        alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "").split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert not top_level & {"pandas", "great_expectations", "sqlalchemy", "simple_salesforce", "salesforce_orders", "requests"}


def test_parsing_imports_no_pipeline_dependency():
    """Parsing the DAG must not import pandas, GX, SQLAlchemy models or the pipeline."""
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('pandas', 'great_expectations', 'salesforce_orders.validate', 'simple_salesforce') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
