"""Fault and crash tests: the sandbox org, a warehouse on SQLite or PostgreSQL, and the import's
stages run in the DAG's order.

The stages are the DAG's task bodies (``salesforce_orders.stages``), called here in this process
(or, for the crash tests, in a child process) exactly as the DAG's tasks call them: same
arguments, same connections and Variable from ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*``. A stage
that raises ends the run as in Airflow (downstream stages do not run, ``report`` still does); an
Airflow retry of a task is calling its stage again with the same run id.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders_local.airflow_env import (
    connection_env,
    postgres_warehouse_connection,
    sqlite_warehouse_connection,
)

ORG_ORDERS = 450  # about 310 Activated orders in the lookback: two pages of 200
ORG_SEED = 23
PAGE_SIZE = 200
STAGES = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back", "mask_card_fields")


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return ORG_ORDERS, ORG_SEED


@dataclass
class RunOutcome:
    """One run: each stage's result (None when it failed or was not reached), the error that
    ended it, and its ``import_runs`` row as ``report`` wrote it."""

    run_id: str
    results: dict[str, dict[str, Any] | None]
    error: Exception | None = None
    failed_stage: str | None = None
    report: dict[str, Any] | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass
class Pipeline:
    """The import wired to the org and one warehouse; runs its stages as the DAG does."""

    engine: sa.Engine
    schema: str | None
    org: Any
    monkeypatch: pytest.MonkeyPatch
    config: dict[str, Any] = field(default_factory=dict)
    params_by_run: dict[str, dict[str, Any]] = field(default_factory=dict)
    # run type and data interval by run (default: a manual run, no interval)
    kind_by_run: dict[str, tuple[str, Any, Any]] = field(default_factory=dict)
    # the mapped transform's instances, one per partition, run last first (Airflow runs them in any order)
    partitions_last_first: bool = False

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def set_config(self, **values: Any) -> None:
        self.config.update(values)
        self.monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps(self.config))

    def set_connection(self, conn_id: str, connection: dict[str, Any]) -> None:
        for key, value in connection_env(conn_id, connection).items():
            self.monkeypatch.setenv(key, value)

    def new_run_id(self) -> str:
        return f"manual__reliability_{len(self.params_by_run) + 1}_{uuid.uuid4().hex[:6]}"

    def stage(self, name: str, outcome: RunOutcome) -> dict[str, Any]:
        """Run one stage of ``outcome``'s run (again, for a retry); its result is recorded."""
        from salesforce_orders import stages

        results, run_id = outcome.results, outcome.run_id
        run_type, interval_start, interval_end = self.kind_by_run.get(run_id, ("manual", None, None))
        calls: dict[str, Callable[[], dict[str, Any]]] = {
            "extract": lambda: stages.extract(
                run_id=run_id, dag_run_id=run_id, run_type=run_type,
                data_interval_start=interval_start, data_interval_end=interval_end, params=self.params_by_run.get(run_id, {}),
            ),
            "validate": lambda: stages.validate(run_id=run_id, held_accounts=(results["extract"] or {}).get("held_accounts")),
            "transform": lambda: self.transform(outcome),
            "load": lambda: stages.load(
                run_id=run_id,
                max_system_modstamp=results["extract"]["max_system_modstamp"],
                window=results["extract"]["window"],
            ),
            "mark_status_changes": lambda: stages.mark_status_changes(
                run_id=run_id, window=results["extract"]["window"], api_budget_left=results["extract"].get("api_budget_left")
            ),
            "write_back": lambda: stages.write_back(
                run_id=run_id, api_budget_left=results["mark_status_changes"].get("api_budget_left")
            ),
            "mask_card_fields": lambda: stages.mask_card_fields(
                run_id=run_id, api_budget_left=(results["write_back"] or {}).get("api_budget_left")
            ),
        }
        results[name] = calls[name]()
        return results[name]

    def transform(self, outcome: RunOutcome, partitions: list[int] | None = None) -> dict[str, Any]:
        """The mapped transform as the DAG runs it: one call per range of order ids of the validate's
        plan (or just the ``partitions`` given by map index, as a retry of those instances), the
        results combined as the report combines them."""
        from salesforce_orders import stages
        from salesforce_orders.partitions import combine_results

        plan = outcome.results["validate"]["transform_partitions"]
        indexes = list(range(len(plan))) if partitions is None else partitions
        if self.partitions_last_first:
            indexes.reverse()
        instance_url = outcome.results["extract"]["instance_url"]
        done = {i: stages.transform(run_id=outcome.run_id, instance_url=instance_url, partition=plan[i]) for i in indexes}
        return combine_results([done[i] for i in sorted(done)])

    def run(
        self,
        params: dict[str, Any] | None = None,
        *,
        until: str = STAGES[-1],
        run_type: str = "manual",
        interval: tuple[Any, Any] = (None, None),
    ) -> RunOutcome:
        """One run, stage after stage up to ``until``; the first failure ends it. For a whole run,
        ``mask_card_fields`` then runs like the DAG's all_done task, and ``report`` always runs at
        the end (when the warehouse can take it). ``run_type`` and ``interval``: as Airflow gives
        them to a scheduled or backfill run."""
        from salesforce_orders import stages

        outcome = RunOutcome(self.new_run_id(), dict.fromkeys(STAGES))
        self.params_by_run[outcome.run_id] = params or {}
        self.kind_by_run[outcome.run_id] = (run_type, *interval)
        for name in STAGES[: STAGES.index(until) + 1]:
            try:
                self.stage(name, outcome)
            except Exception as exc:  # the run records it, as Airflow does
                outcome.error, outcome.failed_stage = exc, name
                break
        if until == STAGES[-1] and outcome.error is not None and outcome.failed_stage != STAGES[-1]:
            try:
                self.stage(STAGES[-1], outcome)
            except Exception:  # noqa: S110 -- the run failed already; its first error is the one kept
                pass
        try:
            outcome.report = stages.report(run_id=outcome.run_id, results=outcome.results)
        except Exception:  # an unreachable warehouse cannot take the report either
            outcome.report = None
        return outcome

    # -- looking at the warehouse and the org -------------------------------------------------

    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            if self.schema:
                conn.execute(sa.text(f'SET search_path TO "{self.schema}"'))
            return [dict(row) for row in conn.execute(sa.text(sql), params).mappings()]

    def scalar(self, sql: str, **params: Any) -> Any:
        rows = self.query(sql, **params)
        return next(iter(rows[0].values())) if rows else None

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            if self.schema:
                conn.execute(sa.text(f'SET search_path TO "{self.schema}"'))
            conn.execute(sa.text(sql), params)

    def documented_query(self, first_comment: str) -> str:
        return documented_query(first_comment)

    def watermark(self) -> str | None:
        return self.scalar("SELECT value FROM sync_state WHERE key = 'orders.system_modstamp'")

    def org_rows(self, sql: str, *params: Any) -> list[dict[str, Any]]:
        return org_rows(self.org, sql, *params)

    def org_next_second(self) -> datetime:
        """The next whole second of the org's clock; every later change is stamped from it on."""
        return self.org.store.stamps_from_next_second()

    def given_up_write_then_a_shipment_to_its_order(self, check_given_up: Callable[[str], None] | None = None) -> tuple[Any, str]:
        """An order whose import write-back Salesforce refused and that was given up (one attempt),
        then a shipment (``SHIP-1``) written to the same Order, DONE. ``check_given_up``: called with
        the order's id in between. Returns the run and the order's id."""
        from salesforce_orders import stages
        from salesforce_orders.shipments import add_shipment
        from salesforce_orders.warehouse import tables

        self.set_config(writeback_max_attempts=1)
        run = self.run(until="mark_status_changes")
        rejected = sorted(self.loaded_ids())[0]
        self.org.admin.set_faults(fail_rows={rejected: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "PO number required"]})
        self.stage("write_back", run)
        if check_given_up is not None:
            check_given_up(rejected)
        self.org.admin.clear_faults()
        self.set_config(writeback_max_attempts=1, shipments={"enabled": True, "order_fields": {
            "tracking_number": "Tracking_Number__c", "carrier": "Carrier__c", "shipped_date": "Shipped_Date__c"}})
        item = self.scalar("SELECT MIN(sf_order_item_id) FROM external_order_items WHERE sf_order_id = :o", o=rejected)
        with self.engine.begin() as conn:
            add_shipment(conn, tables(self.schema), {"shipment_key": "SHIP-1", "sf_order_id": rejected, "carrier": "UPS",
                         "tracking_number": "1Z999", "shipped_date": "2026-03-01"}, [{"sf_order_item_id": item, "quantity": 1}])
        stages.send_shipments(run_id="shipments__after_a_failure")
        return run, rejected

    def org_update(self, sobject: str, record_id: str, **values: Any) -> None:
        with self.org.store.lock:
            self.org.store.update(sobject, record_id, values)

    def remove_order_product(self, order_id: str) -> str:
        """Take one product off an Activated order as Salesforce allows it: back to Draft, delete
        the product, activate again. Returns the product's id."""
        item_id = self.scalar(
            "SELECT sf_order_item_id FROM external_order_items WHERE sf_order_id = :o AND NOT is_deleted "
            "ORDER BY sf_order_item_id LIMIT 1", o=order_id,
        )
        self.org_update("Order", order_id, Status="Draft")
        with self.org.store.lock:
            self.org.store.delete("OrderItem", item_id)
        self.org_update("Order", order_id, Status="Activated")
        return item_id

    def loaded_ids(self) -> set[str]:
        return {r["sf_order_id"] for r in self.query("SELECT sf_order_id FROM external_orders")}

    def quarantined_ids(self) -> set[str]:
        return {r["sf_order_id"] for r in self.query("SELECT DISTINCT sf_order_id FROM quarantined_orders WHERE released_at IS NULL")}

    def order_outbox_rows(self, order_ids: list[str]) -> list[dict[str, Any]]:
        """The outbox rows writing back to these Orders (not to their Accounts), with typed values."""
        from salesforce_orders.warehouse import tables

        outbox = tables(self.schema).writeback_outbox
        query = sa.select(outbox).where(outbox.c.sf_object == "Order", outbox.c.sf_record_id.in_(order_ids)).order_by(outbox.c.id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings()]

    def expected_order_ids(self) -> set[str]:
        """The org's Activated, live orders within the default two-year lookback."""
        return {
            r["Id"]
            for r in self.org_rows(
                "SELECT Id FROM \"Order\" WHERE StatusCode = 'Activated' AND IsDeleted = 0 "
                "AND ActivatedDate >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-730 days')"
            )
        }


def documented_query(first_comment: str) -> str:
    """The SQL example of docs/warehouse.md whose first line is ``-- <first_comment>``."""
    docs = (Path(__file__).resolve().parents[2] / "docs" / "warehouse.md").read_text()
    (sql,) = re.findall(rf"```sql\n-- {re.escape(first_comment)}\n(.*?);\n```", docs, flags=re.S)
    return sql


def org_rows(server: Any, sql: str, *params: Any) -> list[dict[str, Any]]:
    """Rows straight from the sandbox org's tables."""
    with server.store.lock:
        cursor = server.store.conn.execute(sql, params)
        names = [c[0] for c in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _sqlite_target(tmp_path: Path) -> tuple[dict[str, Any], sa.Engine, None]:
    from salesforce_orders.warehouse import create_sqlite_engine

    path = tmp_path / "warehouse.db"
    return sqlite_warehouse_connection(path), create_sqlite_engine(str(path)), None


def _postgres_target(request: pytest.FixtureRequest) -> tuple[dict[str, Any], sa.Engine, str]:
    url = request.getfixturevalue("postgres_engine").url  # skips loudly, or fails under CI, without a server
    connection = postgres_warehouse_connection(url.host, url.port or 5432, url.database, url.username, url.password)
    from salesforce_orders.warehouse import warehouse_engine

    return connection, warehouse_engine(url), f"rel_{uuid.uuid4().hex[:10]}"


def make_pipeline(
    request: pytest.FixtureRequest, kind: str, org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    connection, engine, schema = _sqlite_target(tmp_path) if kind == "sqlite" else _postgres_target(request)
    pipeline = Pipeline(engine, schema, org, monkeypatch)
    pipeline.set_connection("salesforce_default", org.airflow_connection())
    pipeline.set_connection("orders_warehouse", connection)
    pipeline.set_config(extract_page_size=PAGE_SIZE, **({"warehouse_schema": schema} if schema else {}))
    yield pipeline
    if schema:
        with engine.begin() as conn:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def pipeline(
    request: pytest.FixtureRequest, airflow_home: Path, org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    """The import against the org, once with a SQLite warehouse and once with PostgreSQL."""
    yield from make_pipeline(request, request.param, org, tmp_path, monkeypatch)


@pytest.fixture
def sqlite_pipeline(
    request: pytest.FixtureRequest, airflow_home: Path, org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    """The import against the org with a SQLite warehouse (faults whose handling does not depend on the database)."""
    yield from make_pipeline(request, "sqlite", org, tmp_path, monkeypatch)


@pytest.fixture
def postgres_pipeline(
    request: pytest.FixtureRequest, airflow_home: Path, org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Pipeline]:
    yield from make_pipeline(request, "postgresql", org, tmp_path, monkeypatch)
