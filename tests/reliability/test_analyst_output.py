"""Names and output a newcomer reads right: ``sf_status`` is the Status Salesforce shows (``Imported``
after our write-back); ``make run``'s summary counts written-back records by object and says
"Nothing new to import" only when nothing was loaded, quarantined or skipped; the demo sandbox
keeps its port, so the warehouse's links back to Salesforce keep working from one run to the next.

The stages run as the DAG's tasks (``conftest.Pipeline``), against the sandbox org and a SQLite or
PostgreSQL warehouse.
"""

from __future__ import annotations

import urllib.request

import pytest

from salesforce_orders_local import demo

NOTHING_NEW = "Nothing new to import"


def test_sf_status_is_what_salesforce_shows_after_the_write_back(pipeline):
    p = pipeline
    run = p.run()
    assert run.succeeded, run.error
    org = {r["Id"]: r["Status"] for r in p.org_rows('SELECT Id, Status FROM "Order"')}
    rows = p.query("SELECT sf_order_id, sf_status, sf_state, lifecycle_state FROM external_orders")
    assert rows
    for row in rows:
        assert (row["sf_status"], row["sf_state"], row["lifecycle_state"]) == (org[row["sf_order_id"]], "active", "COMPLETE")
    assert {row["sf_status"] for row in rows} == {"Imported"}
    # the echo of the write-back is no change: the next run leaves the orders as they are
    again = p.run()
    assert again.succeeded and again.report["updated"] == 0


def summary_of(p, run, capsys) -> str:
    demo.print_report(p.engine.url.database, run.run_id)
    return capsys.readouterr().out


def test_the_summary_counts_records_written_back_and_says_nothing_new_only_when_nothing_happened(sqlite_pipeline, capsys):
    p = sqlite_pipeline
    p.set_config(overlap_minutes=0)  # each run reads what changed after the one before
    first = p.run()
    assert first.succeeded, first.error
    written = {r["sf_object"]: r["n"] for r in p.query(
        "SELECT sf_object, COUNT(*) AS n FROM writeback_outbox WHERE updated_run_id = :r AND state = 'DONE' GROUP BY sf_object",
        r=first.run_id,
    )}
    assert set(written) == {"Account", "Order"}
    out = summary_of(p, first, capsys)
    assert f"written back {first.report['written_back']} records ({written['Account']} accounts, {written['Order']} orders)" in out
    assert first.report["written_back"] == written["Account"] + written["Order"]
    assert NOTHING_NEW not in out

    # a run that only quarantines (an order changed to one the validation refuses) is not "nothing new"
    order_id = sorted(p.loaded_ids())[0]
    p.org_update("Order", order_id, ShippingStreet=None, ShippingCity="Nowhere")
    refused = p.run()
    assert refused.succeeded and refused.report["quarantined"] >= 1 and refused.report["inserted"] == refused.report["updated"] == 0
    assert NOTHING_NEW not in summary_of(p, refused, capsys)

    # the window starts at the newest change read (inclusive): a later edit of another order takes
    # the refused one out of the next windows; then the runs are quiet, and only they say so.
    # "Later" in SOQL's whole seconds: after the second of the refused order's last change (the
    # X-out of its card fields, made by the run that quarantined it).
    p.org_next_second()
    p.org_update("Order", sorted(p.loaded_ids())[1], Description="A later note")
    said = []
    for _ in range(3):
        run = p.run()
        assert run.succeeded, run.error
        quiet = not any(run.report[k] for k in ("inserted", "updated", "quarantined", "skipped", "deactivated"))
        said.append((quiet, NOTHING_NEW in summary_of(p, run, capsys)))
    assert said[-1] == (True, True)
    assert all(quiet == told for quiet, told in said)


@pytest.fixture
def demo_state(tmp_path, airflow_home):
    return tmp_path / "local"


def test_the_demo_sandbox_comes_back_on_its_port_so_order_links_keep_working(demo_state):
    first = demo.start_sandbox(demo_state, orders=20, seed=3)
    try:
        port, url = first.port, first.url
    finally:
        first.stop()
    assert (demo_state / "sandbox" / "port").read_text() == str(port)

    second = demo.start_sandbox(demo_state, orders=20, seed=3)
    try:
        assert (second.port, second.url) == (port, url)
        # a link the warehouse stored in the first run reaches the org in the second
        request = urllib.request.Request(f"{url}/services/data/", headers={"Accept": "application/json"})
        import ssl

        context = ssl.create_default_context(cafile=str(second.ca_path))
        with urllib.request.urlopen(request, context=context) as answer:  # noqa: S310 -- the local sandbox
            assert answer.status == 200
    finally:
        second.stop()
