"""Faults from Salesforce, the network and the warehouse, injected into real runs of the import.

Each test breaks one thing at one moment of a run (the sandbox's fault switches, a connection
pointing nowhere), checks what the run did about it, and then lets the next run finish the work:
every Activated order ends up in the warehouse exactly once, nothing is written back twice
wrongly, and nothing is skipped. docs/reliability.md lists each fault with its test.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from requests import ConnectionError as RequestsConnectionError

from salesforce_orders import faultpoints, writeback
from salesforce_orders.salesforce import SalesforceOrdersHook
from salesforce_orders.stages import SalesforceUnavailable
from salesforce_orders.warehouse import WarehouseConnectionError, parse_utc
from salesforce_orders_local.airflow_env import postgres_warehouse_connection, sqlite_warehouse_connection

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def after_first_page(monkeypatch: pytest.MonkeyPatch, action: Callable[[], Any]) -> list[float]:
    """Run ``action`` once the extract has received its first page of orders, before it asks for
    the next one, i.e. while it is paging. (Pages are read ahead of staging, so the moment is
    taken where they are read.)

    Returns the times at which pages arrived (to see how long the next page took)."""
    received_at: list[float] = []
    iter_query_pages = SalesforceOrdersHook.iter_query_pages

    def page_then_act(self: SalesforceOrdersHook, soql: str, *args: Any, **kwargs: Any) -> Iterator[list[dict]]:
        # only the extract's first query of Orders: not the currency rates and the one Order whose
        # currency field tells multi-currency before it (LIMIT 1), nor the status check after it
        if received_at or not re.search(r"\bFROM Order\b", soql) or soql.endswith("LIMIT 1"):
            yield from iter_query_pages(self, soql, *args, **kwargs)
            return
        for page in iter_query_pages(self, soql, *args, **kwargs):
            received_at.append(time.monotonic())
            yield page
            if len(received_at) == 1:
                action()

    monkeypatch.setattr(SalesforceOrdersHook, "iter_query_pages", page_then_act)
    return received_at


def composite_paths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the hook's calls to ``composite`` from now on: sObject Collections writes
    (``composite/sobjects...``) and reads made together (``composite``); the sandbox counts both
    as composite calls."""
    paths: list[str] = []
    call = SalesforceOrdersHook.call

    def noted(self: SalesforceOrdersHook, method: str, path: str, **kwargs: Any) -> Any:
        if path.startswith("composite"):
            paths.append(path)
        return call(self, method, path, **kwargs)

    monkeypatch.setattr(SalesforceOrdersHook, "call", noted)
    return paths


def record_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits urllib3's retry asks for between attempts, recorded instead of slept."""
    from urllib3.util.retry import Retry

    waits: list[float] = []
    backoff = Retry.get_backoff_time

    def recorded(self: Retry) -> float:
        waits.append(backoff(self))
        return 0.0

    monkeypatch.setattr(Retry, "get_backoff_time", recorded)
    return waits


def assert_every_order_once(p, expected: set[str]) -> None:
    """Each expected order is in the warehouse (loaded or quarantined), once, and nothing else is."""
    counts = p.query("SELECT sf_order_id, COUNT(*) AS n FROM external_orders GROUP BY sf_order_id HAVING COUNT(*) > 1")
    assert counts == []
    assert p.loaded_ids() | p.quarantined_ids() == expected
    assert not p.loaded_ids() & p.quarantined_ids()


def outbox_states(p) -> dict[str, int]:
    return {r["state"]: r["n"] for r in p.query("SELECT state, COUNT(*) AS n FROM writeback_outbox GROUP BY state")}


def assert_written_back(p) -> None:
    """Every write-back is DONE, and the org shows it: Status Imported, card fields X-ed out."""
    assert set(outbox_states(p)) == {"DONE"}
    org = {r["Id"]: r for r in p.org_rows('SELECT Id, Status, Credit_Card_Number__c FROM "Order"')}
    active = {r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM external_orders WHERE sf_state = 'active'")}
    for order_id in active:
        assert org[order_id]["Status"] == "Imported", order_id
        assert org[order_id]["Credit_Card_Number__c"] in (None, "X" * 16), order_id
    assert {r["lifecycle_state"] for r in p.query("SELECT DISTINCT lifecycle_state FROM external_orders")} == {"COMPLETE"}


def make_due(p) -> None:
    """Let the write-back backoff between runs pass (the next run is minutes later in real life)."""
    p.execute("UPDATE writeback_outbox SET next_attempt_at = NULL WHERE state IN ('PENDING', 'FAILED')")


def injected(p) -> dict[str, int]:
    return p.org.admin.stats()["faults_injected"]


def api_used(p) -> int:
    return p.org.admin.stats()["api_usage"]["used"]


# ---------------------------------------------------------------------------------------
# 1. a burst of 503s during extraction
# ---------------------------------------------------------------------------------------


def test_503_burst_while_paging_is_retried_with_backoff_and_the_run_completes(sqlite_pipeline, monkeypatch):
    pipeline = sqlite_pipeline
    expected = pipeline.expected_order_ids()
    received_at = after_first_page(monkeypatch, lambda: pipeline.org.admin.set_faults(error_503_burst=3))

    run = pipeline.run()

    assert run.succeeded, run.error
    assert injected(pipeline)["error_503"] == 3
    assert len(received_at) == run.results["extract"]["pages"] >= 2
    # urllib3 waited 0, 1 and 2 seconds between the attempts for page two
    assert received_at[1] - received_at[0] >= 3.0
    assert run.results["extract"]["extracted"] == len(expected)
    assert_every_order_once(pipeline, expected)
    assert_written_back(pipeline)


# ---------------------------------------------------------------------------------------
# 2. the daily API allowance runs out mid-run
# ---------------------------------------------------------------------------------------


def test_allowance_exhausted_while_paging_stops_the_run_and_the_next_run_imports_everything(sqlite_pipeline, monkeypatch):
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    after_first_page(monkeypatch, lambda: p.org.admin.set_faults(daily_api_limit=api_used(p)))

    stopped = p.run()

    assert stopped.failed_stage == "extract"
    assert isinstance(stopped.error, AirflowFailException)
    message = str(stopped.error)
    assert "daily API allowance is used up" in message and "REQUEST_LIMIT_EXCEEDED" in message
    assert "the next run picks up the rest" in message
    assert p.query("SELECT COUNT(*) AS n FROM external_orders")[0]["n"] == 0
    assert p.watermark() is None
    assert stopped.report["status"] == "failed"

    p.org.admin.clear_faults()  # a new day: the allowance is back
    after = p.run()
    assert after.succeeded, after.error
    assert_every_order_once(p, expected)
    assert_written_back(p)


def test_allowance_exhausted_during_write_back_keeps_what_was_committed(pipeline, monkeypatch):
    expected = pipeline.expected_order_ids()
    run = pipeline.run(until="mark_status_changes")
    assert run.succeeded, run.error
    watermark = pipeline.watermark()
    # The first batch (200 records) goes through; the allowance is gone just before the second
    # batch's call. (The write-back reads the next batch's records while Salesforce writes the
    # previous one, so the point is an event, not a count of calls.) The second batch is sent from
    # another thread while the first may still be on its way: the allowance goes once the first
    # batch's call has been answered (else the first batch could be the one refused).
    reach, sends, first_answered = faultpoints.reach, [], threading.Event()
    update_records = SalesforceOrdersHook.update_records

    def answered(self: SalesforceOrdersHook, records: list[dict]) -> list[dict]:
        try:
            return update_records(self, records)
        finally:
            first_answered.set()

    def exhaust_before_the_second_batch(name: str) -> None:
        reach(name)
        if name == "write_back.before_send":
            sends.append(name)
            if len(sends) == 2:
                assert first_answered.wait(timeout=120), "the first batch's call never came back"
                pipeline.org.admin.set_faults(daily_api_limit=api_used(pipeline))

    monkeypatch.setattr(SalesforceOrdersHook, "update_records", answered)
    monkeypatch.setattr(writeback.faultpoints, "reach", exhaust_before_the_second_batch)

    with pytest.raises(AirflowFailException, match="daily API allowance is used up .*REQUEST_LIMIT_EXCEEDED"):
        pipeline.stage("write_back", run)
    monkeypatch.setattr(writeback.faultpoints, "reach", reach)

    states = outbox_states(pipeline)
    assert states["DONE"] == 200 and states["PENDING"] > 0 and set(states) == {"DONE", "PENDING"}
    assert pipeline.watermark() == watermark
    assert_every_order_once(pipeline, expected)
    # the stopped run's report counts what it wrote before it stopped (its task's own count was lost)
    from salesforce_orders import stages

    pipeline.org.admin.clear_faults()
    report = stages.report(run_id=run.run_id, results=run.results)
    assert report["status"] == "failed" and report["written_back"] == 200

    after = pipeline.run()
    assert after.succeeded, after.error
    assert after.results["load"]["inserted"] == 0
    assert after.results["write_back"]["written"] == states["PENDING"]
    assert after.report["written_back"] == states["PENDING"]
    assert_every_order_once(pipeline, expected)
    assert_written_back(pipeline)


# ---------------------------------------------------------------------------------------
# 3. the API budget guard
# ---------------------------------------------------------------------------------------


def test_budget_guard_stops_the_extract_before_it_uses_more_than_its_share(sqlite_pipeline):
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    p.set_config(api_budget_share=0.5)
    used = api_used(p)
    remaining = 4  # half of it: not enough for the extract's two pages
    p.org.admin.set_faults(daily_api_limit=used + remaining)

    stopped = p.run()

    assert stopped.failed_stage == "extract"
    assert isinstance(stopped.error, AirflowFailException)
    assert "Stopped before exceeding this run's API budget" in str(stopped.error)
    assert "api_budget_share" in str(stopped.error)
    assert "the next run picks up the rest" in str(stopped.error)
    assert api_used(p) - used <= remaining * 0.5
    assert injected(p)["request_limit_exceeded"] == 0  # stopped by the guard, not by Salesforce
    assert p.watermark() is None

    p.org.admin.clear_faults()
    after = p.run()
    assert after.succeeded, after.error
    assert_every_order_once(p, expected)


def test_budget_guard_covers_the_stages_after_the_extract(sqlite_pipeline):
    """What is left of the run's budget travels with the run: status check and write-back stop too."""
    from salesforce_orders import stages

    p = sqlite_pipeline
    run = p.run(until="load")
    assert run.succeeded, run.error
    calls_before = api_used(p)

    with pytest.raises(AirflowFailException, match="API budget"):
        stages.mark_status_changes(run_id=run.run_id, window=run.results["extract"]["window"], api_budget_left=0)
    with pytest.raises(AirflowFailException, match="API budget"):
        stages.write_back(run_id=run.run_id, api_budget_left=1)  # the describe, then no collection call
    assert api_used(p) - calls_before == 1
    assert set(outbox_states(p)) == {"PENDING"}

    after = p.run()  # a new run has a new budget
    assert after.succeeded, after.error
    assert_written_back(p)


def test_a_retried_extract_keeps_to_the_budget_its_first_try_set(sqlite_pipeline, monkeypatch):
    """The first try's calls count against its retry: the org counted them, though no XCom carries
    them on (a retry used to take a new share of what the failed try left)."""
    p = sqlite_pipeline
    p.set_config(api_budget_share=0.5, extract_page_size=200)
    whole = p.run(until="extract")  # an extract's calls, measured (no load: the next one reads the same)
    assert whole.succeeded, whole.error
    calls = whole.results["extract"]["api_calls"]
    assert whole.results["extract"]["pages"] >= 2
    used = api_used(p)
    # Half of what is left is one whole extract and a call: enough for one try, not for two.
    p.org.admin.set_faults(daily_api_limit=used + 2 * calls + 1)

    def lose_the_connection() -> None:
        raise RequestsConnectionError("the worker lost its connection")

    paging = SalesforceOrdersHook.iter_query_pages
    after_first_page(monkeypatch, lose_the_connection)
    first = p.run(until="extract")
    assert first.failed_stage == "extract" and isinstance(first.error, SalesforceUnavailable)
    monkeypatch.setattr(SalesforceOrdersHook, "iter_query_pages", paging)
    spent_by_the_first_try = api_used(p) - used
    assert spent_by_the_first_try >= 2

    with pytest.raises(AirflowFailException, match="Stopped before exceeding this run's API budget"):
        p.stage("extract", first)  # Airflow's retry of the task
    ceiling = p.scalar("SELECT api_usage_ceiling FROM import_runs WHERE run_id = :r", r=first.run_id)
    assert ceiling == used + 1 + calls  # the count's answer: used + 1 of used + 2 * calls + 1, half the rest
    assert api_used(p) <= ceiling
    assert api_used(p) - used <= calls + 1  # both tries together: what one try was allowed

    p.org.admin.clear_faults()
    after = p.run()  # the next run has a budget of its own
    assert after.succeeded, after.error


def test_the_stages_after_the_extract_stop_at_the_runs_usage_ceiling(sqlite_pipeline):
    """A try of a later stage that failed after spending calls (here: the calls of another hook on
    the same connection, as a failed try's) leaves its retry less: the XCom's budget is the same for
    every try, the org's usage is not."""
    from salesforce_orders import stages

    p = sqlite_pipeline
    p.set_config(api_budget_share=0.5)
    p.org.admin.set_faults(daily_api_limit=api_used(p) + 200)
    run = p.run(until="load")
    assert run.succeeded, run.error
    ceiling = p.scalar("SELECT api_usage_ceiling FROM import_runs WHERE run_id = :r", r=run.run_id)
    assert ceiling is not None and api_used(p) < ceiling
    failed_try = SalesforceOrdersHook("salesforce_default")
    while api_used(p) < ceiling:
        failed_try.call("GET", "limits/")
    left = run.results["extract"]["api_budget_left"]
    assert left > 0  # what the XCom hands every try of the next stage

    with pytest.raises(AirflowFailException, match="API budget"):
        stages.write_back(run_id=run.run_id, api_budget_left=left)
    assert api_used(p) <= ceiling + 1  # a try knows the org's usage from its first answer on
    assert p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE state != 'PENDING'") == 0


# ---------------------------------------------------------------------------------------
# 4. the session expires in the middle of pagination
# ---------------------------------------------------------------------------------------


def test_session_expiry_while_paging_logs_in_again_and_loses_no_page(sqlite_pipeline, monkeypatch):
    pipeline = sqlite_pipeline
    expected = pipeline.expected_order_ids()
    logins = pipeline.org.admin.stats()["calls"]["auth"]
    after_first_page(monkeypatch, lambda: pipeline.org.admin.set_faults(session_expires_after=0))

    run = pipeline.run(until="load")

    assert run.succeeded, run.error
    assert injected(pipeline)["invalid_session"] == 1
    extract = run.results["extract"]
    assert extract["pages"] >= 2
    # the extract's own login, then one more after the expiry
    assert pipeline.org.admin.stats()["calls"]["auth"] == logins + 2
    staged = pipeline.query("SELECT sf_order_id FROM stg_orders WHERE run_id = :r", r=run.run_id)
    assert extract["extracted"] == len(staged) == len({r["sf_order_id"] for r in staged}) == len(expected)
    assert_every_order_once(pipeline, expected)


# ---------------------------------------------------------------------------------------
# 5. UNABLE_TO_LOCK_ROW on some write-back records
# ---------------------------------------------------------------------------------------


@pytest.fixture
def quick_in_run_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The write-back's in-run retry waits 1 s, then 2 s; the tests keep the schedule, not the wait."""
    monkeypatch.setattr(writeback, "IN_RUN_RETRY_DELAY", 0.05)


def test_locked_rows_are_retried_within_the_run(sqlite_pipeline, quick_in_run_retries):
    p = sqlite_pipeline
    run = p.run(until="mark_status_changes")
    locked = sorted(p.loaded_ids())[:3]
    p.org.admin.set_faults(lock_rows=locked, lock_rows_times=1)

    result = p.stage("write_back", run)

    assert injected(p)["unable_to_lock_row"] == 3
    assert (result["retry_later"], result["failed"], result["errors_by_code"]) == (0, 0, {"UNABLE_TO_LOCK_ROW": 3})
    assert [r["attempts"] for r in p.order_outbox_rows(locked)] == [1, 1, 1]  # one attempt per run, retries included
    assert_written_back(p)


def test_rows_still_locked_stay_pending_and_visible_until_a_later_run_writes_them(sqlite_pipeline, quick_in_run_retries):
    pipeline = sqlite_pipeline
    run = pipeline.run(until="mark_status_changes")
    locked = sorted(pipeline.loaded_ids())[:2]
    pipeline.org.admin.set_faults(lock_rows=locked)

    result = pipeline.stage("write_back", run)

    assert result["retry_later"] == 2
    assert injected(pipeline)["unable_to_lock_row"] == 2 * (1 + writeback.IN_RUN_RETRIES)
    for row in pipeline.order_outbox_rows(locked):
        assert (row["state"], row["attempts"], row["last_error_code"]) == ("PENDING", 1, "UNABLE_TO_LOCK_ROW")
        assert row["next_attempt_at"] > datetime.now(UTC)  # backed off until a later run
    orders = pipeline.query("SELECT sf_order_id, lifecycle_state, lifecycle_error FROM external_orders")
    for order in orders:
        if order["sf_order_id"] in locked:
            assert order["lifecycle_state"] == "PROCESSING"
            assert "UNABLE_TO_LOCK_ROW" in order["lifecycle_error"] and "(will retry)" in order["lifecycle_error"]
        else:
            assert order["lifecycle_state"] == "COMPLETE"
    statuses = {r["Id"]: r["Status"] for r in pipeline.org_rows('SELECT Id, Status FROM "Order"')}
    assert {statuses[i] for i in locked} == {"Activated"}

    pipeline.org.admin.clear_faults()
    make_due(pipeline)
    after = pipeline.run()
    assert after.succeeded, after.error
    assert after.results["write_back"]["written"] == 2
    assert_written_back(pipeline)


# ---------------------------------------------------------------------------------------
# 6. records failing permanently in a collection call
# ---------------------------------------------------------------------------------------


def test_permanent_failures_keep_salesforces_message_and_end_dead_after_the_maximum(sqlite_pipeline):
    pipeline = sqlite_pipeline
    pipeline.set_config(writeback_max_attempts=2)
    run = pipeline.run(until="mark_status_changes")
    rejected = sorted(pipeline.loaded_ids())[0]
    message = "PO number required before an order can be marked Imported"
    pipeline.org.admin.set_faults(fail_rows={rejected: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", message]})
    composite_calls = pipeline.org.admin.stats()["calls"]["composite"]
    paths = composite_paths(pipeline.monkeypatch)

    first = pipeline.stage("write_back", run)

    (row,) = pipeline.order_outbox_rows([rejected])
    assert (row["state"], row["attempts"], row["last_error_code"], row["last_error_message"]) == (
        "FAILED", 1, "FIELD_CUSTOM_VALIDATION_EXCEPTION", message
    )
    assert first["failed"] == 1
    assert first["written"] == first["attempted"] - 1  # the others in the same calls went through
    collection_calls = [path for path in paths if path.startswith("composite/sobjects")]
    assert len(collection_calls) == -(-first["attempted"] // 200)
    assert pipeline.org.admin.stats()["calls"]["composite"] - composite_calls == len(paths)  # the rest: reads made together
    (order,) = pipeline.query("SELECT * FROM external_orders WHERE sf_order_id = :i", i=rejected)
    assert order["lifecycle_state"] == "FAILED" and message in order["lifecycle_error"]

    # a later run tries again (the data may have been fixed), fails again: the maximum is reached
    make_due(pipeline)
    second = pipeline.run()
    assert second.results["write_back"]["dead"] == 1
    (row,) = pipeline.order_outbox_rows([rejected])
    assert (row["state"], row["attempts"]) == ("DEAD", 2)
    (order,) = pipeline.query("SELECT * FROM external_orders WHERE sf_order_id = :i", i=rejected)
    assert order["lifecycle_state"] == "FAILED" and order["lifecycle_error"].endswith("(gave up)")
    (failure,) = pipeline.query("SELECT * FROM v_open_failures")
    assert (failure["sf_record_id"], failure["state"], failure["last_error_message"]) == (rejected, "DEAD", message)

    # and no run sends it again
    failures = injected(pipeline)["record_failure"]
    make_due(pipeline)
    third = pipeline.run()
    assert third.succeeded, third.error
    assert third.results["write_back"]["attempted"] == 0
    assert injected(pipeline)["record_failure"] == failures == 2


def test_a_write_back_task_retried_in_the_same_run_counts_one_attempt(pipeline, monkeypatch):
    """The write_back task fails after a record's attempt was recorded (here: the next batch's send)
    and Airflow retries it minutes later, when the record is due again: the retry belongs to the
    same run, so the record's attempts stay one (the retry counted a second one, and a record
    failing in a run whose task was retried gave up within that one run)."""
    p = pipeline
    p.set_config(writeback_max_attempts=2)
    run = p.run(until="mark_status_changes")
    rejected = sorted(p.loaded_ids())[0]  # in the first batch
    p.org.admin.set_faults(fail_rows={rejected: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "PO number required"]})
    monkeypatch.setattr(faultpoints, "_parsed", ("", {}))  # arrivals counted afresh (an earlier test may have set the same points)
    monkeypatch.setenv(faultpoints.ENV, "write_back.before_send=raise@2")  # the second batch's send fails

    with pytest.raises(faultpoints.FaultPointReached):
        p.stage("write_back", run)
    (row,) = p.order_outbox_rows([rejected])
    assert (row["state"], row["attempts"]) == ("FAILED", 1)

    monkeypatch.delenv(faultpoints.ENV)
    make_due(p)  # Airflow retries the task a minute later: the record's backoff has passed
    retried = p.stage("write_back", run)

    assert retried["failed"] == 1 and retried["dead"] == 0
    (row,) = p.order_outbox_rows([rejected])
    assert (row["state"], row["attempts"]) == ("FAILED", 1)
    assert injected(p)["record_failure"] == 2  # sent by both tries

    make_due(p)
    after = p.run()  # the next run is the second attempt: the maximum
    assert after.results["write_back"]["dead"] == 1
    (row,) = p.order_outbox_rows([rejected])
    assert (row["state"], row["attempts"]) == ("DEAD", 2)


# ---------------------------------------------------------------------------------------
# 9. the warehouse is unreachable
# ---------------------------------------------------------------------------------------


def unreachable_warehouse(p, tmp_path) -> dict[str, Any]:
    """A warehouse connection of the same kind that cannot be used: a closed port, a file in no directory."""
    if p.dialect == "sqlite":
        return sqlite_warehouse_connection(tmp_path / "no-such-directory" / "warehouse.db")
    return postgres_warehouse_connection("127.0.0.1", 1, "test", "postgres")


def test_a_given_up_write_back_stays_open_after_a_shipment_writes_the_same_order(sqlite_pipeline):
    """A shipment's write to an Order says nothing of the import's write that failed on it: the given-up
    failure stays in v_open_failures, the view's badge counts it and "Retry failed write-backs now"
    revives it."""
    from salesforce_orders.warehouse import tables
    from salesforce_orders_ui import queries
    from salesforce_orders_ui.actions import schedule_failed_writebacks

    p = sqlite_pipeline

    def one_open_failure(rejected: str) -> None:
        assert p.scalar("SELECT COUNT(*) FROM v_open_failures WHERE sf_order_id = :o", o=rejected) == 1

    run, rejected = p.given_up_write_then_a_shipment_to_its_order(check_given_up=one_open_failure)

    assert p.scalar("SELECT state FROM writeback_outbox WHERE shipment_key = 'SHIP-1' AND sf_object = 'Order'") == "DONE"
    assert p.scalar("SELECT lifecycle_state FROM external_orders WHERE sf_order_id = :o", o=rejected) == "FAILED"
    assert p.scalar("SELECT COUNT(*) FROM v_open_failures WHERE sf_order_id = :o", o=rejected) == 1
    with p.engine.begin() as conn:
        assert queries.overview(conn, tables(p.schema)).open_writeback_failures == 1
        assert schedule_failed_writebacks(conn, tables(p.schema)).revived == 1
    again = p.run()
    assert again.succeeded, again.error
    assert p.scalar("SELECT lifecycle_state FROM external_orders WHERE sf_order_id = :o", o=rejected) == "COMPLETE"
    assert p.org_rows('SELECT Status FROM "Order" WHERE Id = ?', rejected)[0]["Status"] == "Imported"


def test_unreachable_warehouse_fails_the_run_before_salesforce_is_called(pipeline, tmp_path):
    pipeline.set_connection("orders_warehouse", unreachable_warehouse(pipeline, tmp_path))
    calls = pipeline.org.admin.stats()["calls"]["total"]

    run = pipeline.run()

    assert run.failed_stage == "extract"
    assert isinstance(run.error, WarehouseConnectionError)  # retried by Airflow: the server may be back
    assert "The warehouse (Airflow connection 'orders_warehouse'" in str(run.error)
    assert "cannot be used" in str(run.error)
    assert pipeline.org.admin.stats()["calls"]["total"] == calls


def test_warehouse_lost_before_the_load_fails_before_any_write_back_and_keeps_the_watermark(pipeline, tmp_path):
    from salesforce_orders import stages

    expected = pipeline.expected_order_ids()
    run = pipeline.run(until="transform")
    assert run.succeeded, run.error
    warehouse = os.environ["AIRFLOW_CONN_ORDERS_WAREHOUSE"]
    pipeline.set_connection("orders_warehouse", unreachable_warehouse(pipeline, tmp_path))
    writes = pipeline.org.admin.stats()["calls"]["composite"]

    with pytest.raises(WarehouseConnectionError, match="orders_warehouse"):
        pipeline.stage("load", run)
    with pytest.raises(WarehouseConnectionError, match="orders_warehouse"):
        stages.write_back(run_id=run.run_id)

    assert pipeline.org.admin.stats()["calls"]["composite"] == writes  # no write (nor any Composite call) since the transform
    assert "Imported" not in {r["Status"] for r in pipeline.org_rows('SELECT Status FROM "Order"')}
    assert pipeline.watermark() is None

    pipeline.monkeypatch.setenv("AIRFLOW_CONN_ORDERS_WAREHOUSE", warehouse)  # the server is back: Airflow retries
    loaded = pipeline.stage("load", run)
    assert loaded["inserted"] == run.results["transform"]["transformed"]
    assert pipeline.watermark() is not None
    pipeline.stage("mark_status_changes", run)
    pipeline.stage("write_back", run)
    assert_every_order_once(pipeline, expected)
    assert_written_back(pipeline)


# ---------------------------------------------------------------------------------------
# 10. Salesforce is down or answers slowly
# ---------------------------------------------------------------------------------------


@pytest.fixture
def stopped_sandbox(tmp_path) -> dict[str, Any]:
    """The connection of a sandbox that was running and is not any more: its port refuses."""
    from salesforce_sandbox.server import SandboxServer

    with SandboxServer(port=0, orders=1, state_dir=tmp_path / "stopped-sandbox") as server:
        connection = server.airflow_connection()
    return connection


def test_salesforce_down_is_retried_with_backoff_then_fails_clearly(sqlite_pipeline, stopped_sandbox, monkeypatch):
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    p.set_connection("salesforce_default", stopped_sandbox)
    waits = record_backoff(monkeypatch)

    run = p.run()

    assert run.failed_stage == "extract"
    assert isinstance(run.error, SalesforceUnavailable)  # retried by Airflow
    assert "Salesforce (Airflow connection 'salesforce_default') did not answer" in str(run.error)
    assert "Connection refused" in str(run.error)
    assert waits == [0, 1.0, 2.0, 4.0, 8.0]  # five retries, backing off
    assert p.query("SELECT COUNT(*) AS n FROM stg_orders")[0]["n"] == 0
    assert p.watermark() is None

    p.set_connection("salesforce_default", p.org.airflow_connection())
    after = p.run()
    assert after.succeeded, after.error
    assert_every_order_once(p, expected)
    assert_written_back(p)


def test_a_salesforce_outage_answering_503_fails_naming_the_stage_and_the_connection(sqlite_pipeline, monkeypatch):
    """503 on every call, after the hook's own retries: the message docs/runbook.md quotes, and a retry by Airflow."""
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    waits = record_backoff(monkeypatch)
    p.org.admin.set_faults(error_503_share=1.0)

    run = p.run()

    assert run.failed_stage == "extract"
    assert isinstance(run.error, SalesforceUnavailable)  # retried by Airflow
    assert str(run.error).startswith(
        "extract: Salesforce (Airflow connection 'salesforce_default') did not answer: Salesforce answered 503 SERVER_UNAVAILABLE"
    )
    assert len(waits) == 5  # the hook's own retries came first
    assert p.watermark() is None

    p.org.admin.clear_faults()
    after = p.run()
    assert after.succeeded, after.error
    assert_every_order_once(p, expected)


def test_slow_salesforce_times_out_and_the_next_run_finishes_what_was_left(sqlite_pipeline, monkeypatch):
    """Timed out after the load: the write-back and the status check are left to the next run,
    which also marks an order set back to Draft while the failed run was under way."""
    p = sqlite_pipeline
    p.set_config(overlap_minutes=0)
    first = p.run()
    assert first.succeeded, first.error
    drafted, changed = sorted(p.loaded_ids())[:2]
    p.org_update("Order", drafted, Status="Draft")
    p.org_next_second()  # SOQL datetimes have whole seconds: the second change comes a second later
    p.org_update("Order", changed, Description="Leave parcels at the back door")
    second = p.run(until="load")
    assert second.results["load"]["updated"] == 1
    # Salesforce answers every call after 1.5 s; the connection waits 0.5 s (a time-out is about the clock)
    p.org.admin.set_faults(latency_ms=1500)
    patient = p.org.airflow_connection()
    impatient = {**patient, "extra": {**patient["extra"], "timeout": 0.5}}
    p.set_connection("salesforce_default", impatient)
    waits = record_backoff(monkeypatch)

    with pytest.raises(SalesforceUnavailable, match=r"salesforce_default.*[Rr]ead timed out"):
        p.stage("mark_status_changes", second)

    assert waits == [0, 1.0]  # two read retries
    assert p.scalar("SELECT sf_state FROM external_orders WHERE sf_order_id = :i", i=drafted) == "active"
    p.org.admin.clear_faults()
    p.set_connection("salesforce_default", patient)
    third = p.run()
    assert third.succeeded, third.error
    states = {r["sf_order_id"]: r["sf_state"] for r in p.query("SELECT sf_order_id, sf_state FROM external_orders")}
    assert states[drafted] == "deactivated"
    assert p.scalar("SELECT notes FROM external_orders WHERE sf_order_id = :i", i=changed) == "Leave parcels at the back door"
    assert_written_back(p)


# ---------------------------------------------------------------------------------------
# 11. the same order on two pages
# ---------------------------------------------------------------------------------------


def _complete_shipping(record: dict[str, Any]) -> bool:
    return all(record.get(f"Shipping{part}") for part in ("Street", "City", "PostalCode", "Country"))


@pytest.mark.parametrize("newer_first", [False, True], ids=["newer-version-later", "newer-version-first"])
def test_order_read_on_two_pages_is_loaded_once_with_its_latest_version(sqlite_pipeline, monkeypatch, newer_first):
    """An order changes while the extract pages: it is read once as it was and once as it is. The
    watermark moves no later than when the extract began reading, not to the newer stamp (an order
    changed meanwhile outside the query's result set would be earlier than it: R2), so the next run
    may read the order again, and finds it unchanged."""
    from salesforce_orders.config import parse_config
    from salesforce_orders.runs import parse_watermark
    from salesforce_orders.salesforce import SalesforceOrdersHook
    from salesforce_orders.soql import ExtractWindow, build_orders_query

    p = sqlite_pipeline
    expected = p.expected_order_ids()
    pages = SalesforceOrdersHook.iter_query_pages
    moved: dict[str, Any] = {}

    def pages_with_a_change(self: SalesforceOrdersHook, soql: str, **kwargs: Any) -> Iterator[list[dict]]:
        source = pages(self, soql, **kwargs)
        if moved or "OrderItems" not in soql:  # only the extract's order query, once
            yield from source
            return
        first = next(source)
        stale = moved["stale"] = next(r for r in first if _complete_shipping(r))
        p.org_update("Order", stale["Id"], Description="Changed while the import was paging")
        lookback = datetime.now(UTC) - timedelta(days=730)
        window = ExtractWindow(None, None, lookback, order_numbers=(stale["OrderNumber"],))
        (fresh,) = [r for page in pages(self, build_orders_query(parse_config(p.config), window)) for r in page]
        moved["fresh"] = fresh
        if newer_first:
            yield [fresh if r is stale else r for r in first]
            yield [stale, *next(source)]
        else:
            yield first
            yield [fresh, *next(source)]
        yield from source

    monkeypatch.setattr(SalesforceOrdersHook, "iter_query_pages", pages_with_a_change)

    run = p.run()

    assert run.succeeded, run.error
    order_id = moved["stale"]["Id"]
    assert run.results["extract"]["extracted"] == len(expected)  # read twice, counted once...
    staged = p.query("SELECT sf_order_id FROM stg_orders WHERE run_id = :r", r=run.run_id)
    assert len(staged) == len({r["sf_order_id"] for r in staged}) == len(expected)  # ...staged once
    assert_every_order_once(p, expected)
    (order,) = p.query("SELECT * FROM external_orders WHERE sf_order_id = :i", i=order_id)
    assert order["notes"] == "Changed while the import was paging"
    fresh, stale = parse_utc(moved["fresh"]["SystemModstamp"]), parse_utc(moved["stale"]["SystemModstamp"])
    assert fresh > stale
    assert parse_utc(p.watermark()) == min(fresh, parse_watermark(run.results["extract"]["window"]["read_from"]))
    again = p.run()
    assert again.succeeded, again.error
    assert_every_order_once(p, expected)
    assert p.scalar("SELECT notes FROM external_orders WHERE sf_order_id = :i", i=order_id) == "Changed while the import was paging"


@pytest.mark.parametrize("path", ["rest", "bulk"])
def test_an_order_read_again_with_its_changed_account_loses_the_product_removed_in_between(pipeline, monkeypatch, path):
    """An order of the window whose Account changed too is read twice by one extract: by the
    window's query (REST, or Bulk with the products in a job of their own), then with the changed
    Account's orders (REST). A product removed in between is not staged beside the newer version
    (its total would no longer match: the valid order was quarantined, its older version kept,
    until the next run read it again)."""
    from salesforce_orders import stages

    p = pipeline
    p.set_config(overlap_minutes=0, bulk_threshold=0 if path == "bulk" else 10**6)
    first = p.run()
    assert first.succeeded, first.error
    order_id, account = next(
        (r["sf_order_id"], r["sf_account_id"])
        for r in p.query(
            "SELECT o.sf_order_id, o.sf_account_id FROM external_orders o JOIN external_order_items i USING (sf_order_id) "
            "WHERE NOT i.is_deleted GROUP BY o.sf_order_id, o.sf_account_id HAVING COUNT(*) >= 2 ORDER BY o.sf_order_id"
        )
    )
    p.org_next_second()
    p.org_update("Account", account, Name="Renamed Between Two Reads Ltd")
    p.org_update("Order", order_id, Description="Edited: in the window")
    read_changed_accounts, removed = stages._extract_orders_of_changed_accounts, []

    def remove_a_product_first(*args: Any, **kwargs: Any) -> set[str]:  # the window's query has been read
        p.org_next_second()
        removed.append(p.remove_order_product(order_id))
        return read_changed_accounts(*args, **kwargs)

    monkeypatch.setattr(stages, "_extract_orders_of_changed_accounts", remove_a_product_first)

    run = p.run()

    assert run.succeeded, run.error
    assert run.results["extract"]["path"] == path
    assert run.results["extract"]["accounts_changed"] == 1 and removed
    assert order_id not in p.quarantined_ids()
    (order,) = p.query("SELECT account_name, notes FROM external_orders WHERE sf_order_id = :i", i=order_id)
    assert order == {"account_name": "Renamed Between Two Reads Ltd", "notes": "Edited: in the window"}
    items = {r["sf_order_item_id"]: bool(r["is_deleted"]) for r in p.query(
        "SELECT sf_order_item_id, is_deleted FROM external_order_items WHERE sf_order_id = :i", i=order_id
    )}
    assert items[removed[0]] is True and not all(items.values())


# ---------------------------------------------------------------------------------------
# 12. an order deactivated or deleted between two runs
# ---------------------------------------------------------------------------------------


def test_orders_deactivated_or_deleted_between_runs_are_marked_and_never_written_back(pipeline, quick_in_run_retries):
    run = pipeline.run(until="mark_status_changes")
    drafted, deleted = sorted(pipeline.loaded_ids())[:2]
    pipeline.org.admin.set_faults(lock_rows=[drafted])  # its write-back is still to be sent...
    pipeline.stage("write_back", run)
    pipeline.org.admin.clear_faults()
    active_before = len(pipeline.loaded_ids())
    pipeline.org_update("Order", drafted, Status="Draft")  # ...when it goes back to Draft
    pipeline.org_update("Order", deleted, Status="Draft")
    with pipeline.org.store.lock:
        pipeline.org.store.delete("Order", deleted)
    make_due(pipeline)

    after = pipeline.run()

    assert after.succeeded, after.error
    assert after.results["mark_status_changes"]["deactivated"] == 2
    states = {r["sf_order_id"]: r["sf_state"] for r in pipeline.query("SELECT sf_order_id, sf_state FROM external_orders")}
    assert (states[drafted], states[deleted]) == ("deactivated", "deleted")
    assert list(states.values()).count("active") == active_before - 2
    cancelled, card_mask = pipeline.order_outbox_rows([drafted])
    assert (cancelled["state"], cancelled["last_error_code"]) == ("DEAD", "ORDER_DEACTIVATED")
    # its card fields are X-ed out all the same, by a write-back of their own
    assert (card_mask["action"], card_mask["state"]) == ("x_out_card", "DONE") and "Status" not in card_mask["fields"]
    (org_order,) = pipeline.org_rows('SELECT Status, Credit_Card_Number__c FROM "Order" WHERE Id = ?', drafted)
    assert org_order["Status"] == "Draft"  # never marked Imported after it left Activated
    assert set(org_order["Credit_Card_Number__c"] or "X") == {"X"}
    revenue_orders = pipeline.scalar("SELECT SUM(orders) AS n FROM v_revenue_by_day")
    assert revenue_orders == active_before - 2
