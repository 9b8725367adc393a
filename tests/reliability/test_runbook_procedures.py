"""docs/runbook.md's "Do" column, performed: the run fails as the runbook describes, on-call does what
it says (fix the key or the connection, raise the key, or nothing), clears the failed task with
its downstream tasks, and the same run finishes: every order loaded or quarantined once, and the
run's row says success with no failure left on it.
"""

from __future__ import annotations

import pytest

from salesforce_orders import stages

STAGES = ("extract", "validate", "transform", "load", "mark_status_changes", "write_back", "mask_card_fields")


def clear(p, run, task: str) -> dict:
    """Airflow's Clear of ``task`` with its downstream tasks: each runs again under the same run id; then report."""
    for name in STAGES[STAGES.index(task):]:
        p.stage(name, run)
    return stages.report(run_id=run.run_id, results=run.results)


def assert_finished(p, run, row: dict, expected: set[str]) -> None:
    assert row["status"] == "success" and row["failed_stage"] is None
    assert p.loaded_ids() | p.quarantined_ids() == expected


def test_an_invalid_key_fix_it_then_clear_extract(sqlite_pipeline):
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    p.set_config(lookback_days="a fortnight")
    run = p.run()
    assert run.failed_stage == "extract" and "lookback_days" in str(run.error)

    p.set_config(lookback_days=730)  # "Fix the key named, then clear the task."
    assert_finished(p, run, clear(p, run, "extract"), expected)


def test_a_refused_login_fix_the_connection_then_clear_extract(sqlite_pipeline):
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    p.set_connection("salesforce_default", {**p.org.airflow_connection(), "password": "expired"})
    run = p.run()
    assert run.failed_stage == "extract" and "refused the login" in str(run.error)

    p.set_connection("salesforce_default", p.org.airflow_connection())  # "Fix the connection, then clear the task."
    assert_finished(p, run, clear(p, run, "extract"), expected)


def test_the_breaker_raise_max_invalid_share_then_clear_validate(sqlite_pipeline):
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    p.set_config(max_invalid_share=0.0)
    run = p.run()
    assert run.failed_stage == "validate" and "more than max_invalid_share" in str(run.error)
    assert p.loaded_ids() == set()  # "Nothing was loaded."

    p.set_config(max_invalid_share=0.25)  # "Raise max_invalid_share only if the invalid orders are genuinely expected."
    assert_finished(p, run, clear(p, run, "validate"), expected)
    assert p.quarantined_ids()  # the invalid ones are quarantined, the rest loaded


def test_salesforce_down_nothing_to_do_airflows_retry_finishes(sqlite_pipeline, monkeypatch):
    from urllib3.util.retry import Retry

    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0.0)
    p = sqlite_pipeline
    expected = p.expected_order_ids()
    p.org.admin.set_faults(error_503_share=1.0)
    run = p.run()
    assert run.failed_stage == "extract" and isinstance(run.error, stages.SalesforceUnavailable)

    p.org.admin.clear_faults()  # Salesforce is back; Airflow's retry of extract and the tasks after it run
    assert_finished(p, run, clear(p, run, "extract"), expected)


@pytest.mark.parametrize("task", ["validate", "load"])
def test_clearing_a_task_of_a_finished_run_again_changes_nothing(sqlite_pipeline, task):
    """"Clearing is safe whenever you do it, whichever task you clear"."""
    p = sqlite_pipeline
    run = p.run()
    assert run.succeeded, run.error
    before = p.query("SELECT sf_order_id, content_hash, lifecycle_state FROM external_orders ORDER BY sf_order_id")
    row = clear(p, run, task)
    assert row["status"] == "success"
    assert p.query("SELECT sf_order_id, content_hash, lifecycle_state FROM external_orders ORDER BY sf_order_id") == before
