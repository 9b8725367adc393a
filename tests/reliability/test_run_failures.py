"""A failed run says where and why: the stage, its one-line reason, its tries, and the whole duration.

Airflow keeps a task's exception in its log; each failed try of a stage is also noted on the run's
``import_runs`` row, which the Import runs tab of the External Orders view shows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

OUTAGE = "extract: Salesforce (Airflow connection 'salesforce_default') did not answer: Salesforce answered 503 SERVER_UNAVAILABLE"


def no_backoff(monkeypatch) -> None:
    from urllib3.util.retry import Retry

    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0.0)  # the hook's retries, without their waits


def runs_row(p, run_id: str) -> dict:
    return p.query("SELECT * FROM import_runs WHERE run_id = :r", r=run_id)[0]


def test_an_outage_run_names_the_stage_its_reason_and_its_tries_and_counts_the_retries_in_its_duration(
    pipeline, monkeypatch, allowed, external_orders_pages
):
    from salesforce_orders import stages

    p = pipeline
    no_backoff(monkeypatch)
    p.org.admin.set_faults(error_503_share=1.0)
    run = p.run()  # the first try of the extract, and mask_card_fields after it (all_done), both in the outage
    assert run.failed_stage == "extract"
    for _ in range(3):  # Airflow's three retries of the extract
        try:
            p.stage("extract", run)
        except stages.SalesforceUnavailable:
            pass
    dag_run_started = datetime.now(UTC) - timedelta(minutes=4, seconds=41)
    stages.report(run_id=run.run_id, results=run.results, run_started=dag_run_started)

    row = runs_row(p, run.run_id)
    assert row["status"] == "failed"
    assert row["failed_stage"] == "extract"  # not mask_card_fields, which failed after it in the same outage
    assert row["failure_reason"].startswith(OUTAGE) and "\n" not in row["failure_reason"]
    assert row["failed_tries"] == 4
    assert 281 <= row["duration_seconds"] < 281 + 600

    page = external_orders_pages(p.engine, p.schema).get("/runs").text
    assert '<b class="failed-stage">extract</b>' in page
    assert '<span class="tries">(4 tries)</span>' in page
    assert "did not answer: Salesforce answered 503 SERVER_UNAVAILABLE" in page
    assert ">4 min 4" in page  # 4 min 41 s and a little
    assert "stages without a result" not in page


def test_the_breakers_share_is_the_reason_of_a_validate_failure(sqlite_pipeline):
    p = sqlite_pipeline
    p.set_config(max_invalid_share=0.0)
    run = p.run()
    row = runs_row(p, run.run_id)
    assert (row["failed_stage"], row["failed_tries"]) == ("validate", 1)
    assert "failed validation, more than max_invalid_share 0%; nothing was loaded" in row["failure_reason"]


def test_a_stage_that_failed_a_try_and_then_succeeded_leaves_no_failure(sqlite_pipeline, monkeypatch):
    from salesforce_orders import stages

    p = sqlite_pipeline
    no_backoff(monkeypatch)
    p.org.admin.set_faults(error_503_share=1.0)
    run = p.run(until="extract")
    assert runs_row(p, run.run_id)["failed_stage"] == "extract"
    p.org.admin.clear_faults()
    p.stage("extract", run)  # Airflow's retry succeeds
    for stage in ("validate", "transform", "load", "mark_status_changes", "write_back", "mask_card_fields"):
        p.stage(stage, run)
    stages.report(run_id=run.run_id, results=run.results)
    row = runs_row(p, run.run_id)
    assert row["status"] == "success"
    assert (row["failed_stage"], row["failure_reason"], row["failed_tries"]) == (None, None, None)
