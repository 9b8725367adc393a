"""DAG integrity: the DAG files import cleanly and fast, the DAGs follow the project's conventions."""

from __future__ import annotations

import ast
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_FILE = DAGS / "salesforce_orders_import.py"
PACKAGE_DAGS = Path(__file__).resolve().parents[2] / "include" / "salesforce_orders" / "airflow_dags"


@pytest.fixture(scope="module")
def dag(airflow_home):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    return bag.get_dag("salesforce_orders_import")


def test_task_graph(dag):
    order = ["extract", "validate", "transform", "load", "mark_status_changes", "write_back", "mask_card_fields", "report"]
    assert set(dag.task_ids) == set(order)
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    # X-ing out card fields and the report do not depend on the import succeeding
    assert dag.get_task("mask_card_fields").trigger_rule == "all_done"
    assert dag.get_task("report").trigger_rule == "all_done"


def test_conventions(dag):
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.tags and {"salesforce", "orders"} <= set(dag.tags)
    assert dag.doc_md and "salesforce_orders_config" in dag.doc_md and "backfill" in dag.doc_md
    assert dag.start_date is not None and dag.start_date.year == 2026
    # the cron schedule, or the Order change events' asset, whichever comes first
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule"
    assert type(dag.timetable.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.timetable.expression == "*/15 * * * *"
    (watcher,) = dag.timetable.asset_condition.watchers
    assert type(watcher.trigger).__name__ == "OrderEventsTrigger"
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
    assert serialised == {"validate", "load", "mark_status_changes", "write_back", "mask_card_fields"}
    assert {str(dag.get_task(t).weight_rule) for t in serialised} == {"upstream"}


def test_the_transform_is_mapped_over_the_partitions_the_validate_returns(dag):
    """One transform instance per range of order ids, side by side outside the pool; one load after all of them."""
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    from salesforce_orders_local.airflow_env import WAREHOUSE_POOL

    transform = dag.get_task("transform")
    assert isinstance(transform, MappedOperator)
    mapped_over = transform._get_specified_expand_input().value
    assert set(mapped_over) == {"partition"}
    assert (mapped_over["partition"].operator.task_id, mapped_over["partition"].key) == ("validate", "return_value")
    assert transform.pool != WAREHOUSE_POOL and transform.map_index_template
    assert not isinstance(dag.get_task("load"), MappedOperator)  # one consistent load of every instance's batches
    assert dag.get_task("load").upstream_task_ids == {"extract", "transform"}


def test_a_mapped_stage_that_failed_fails_the_run():
    """Airflow names a mapped task's instances ``transform_<map index>`` in the states the report reads."""
    from salesforce_orders.airflow_dags.import_dag import _stage_states

    states = {"transform_0": "success", "transform_1": "failed", "write_back": "success", "write": "failed"}
    assert _stage_states(states, "transform") == {"success", "failed"}
    assert _stage_states(states, "write_back") == {"success"}
    assert _stage_states({"load": "upstream_failed"}, "load") == {"upstream_failed"}


def top_level_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }


@pytest.mark.parametrize("name", ["salesforce_orders_import.py", "salesforce_orders_freshness_check.py", "salesforce_orders_shipments.py"])
def test_dag_files_are_an_import_and_a_call(name):
    """The DAGs live in the package: a DAG file only calls its factory (README: "Adding it to your Airflow")."""
    path = DAGS / name
    body = [node for node in ast.parse(path.read_text()).body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
    assert len(body) == 2
    assert top_level_imports(path) == {"salesforce_orders.airflow_dags"}
    assert isinstance(body[1], ast.Expr) and isinstance(body[1].value, ast.Call)


def test_dag_definitions_have_no_heavy_top_level_imports():
    for path in PACKAGE_DAGS.glob("*.py"):
        roots = {name.split(".")[0] for name in top_level_imports(path)}
        assert roots <= {"__future__", "os", "datetime", "airflow", "salesforce_orders"}, path.name
        assert {n for n in top_level_imports(path) if n.startswith("salesforce_orders")} <= {
            "salesforce_orders.airflow_dags.freshness_dag", "salesforce_orders.airflow_dags.import_dag",
            "salesforce_orders.airflow_dags.shipments_dag",
            # the AssetWatcher's trigger is built at parse time; its module imports only Airflow and asgiref
            "salesforce_orders.event_trigger",
        }, path.name


def test_the_dag_belongs_to_its_dag_file(dag):
    """Workers re-parse the DAG's own file: the two-line file, not the package module defining it."""
    assert dag.fileloc == str(DAG_FILE)
    assert dag.relative_fileloc in ("salesforce_orders_import.py", str(DAG_FILE))


def test_parsing_imports_no_pipeline_dependency():
    """Parsing the DAG must not import pandas, GX, SQLAlchemy models or the pipeline."""
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('pandas', 'great_expectations', 'salesforce_orders.validate', 'simple_salesforce', "
        "'grpc', 'fastavro', 'salesforce_orders.pubsub_client') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
