"""Runs of every kind never lose, skip or overwrite an order: re-syncs and the watermark, backfills
of a later interval, late or cleared loads, cleared old scheduled runs, the breaker on small
windows, records changed in Salesforce just before the write-back, Account edits, a disabled import.

The stages run as the DAG's tasks (``conftest.Pipeline``), against the sandbox org and a SQLite or
PostgreSQL warehouse. What the real scheduler adds (run types, the pool, backfills, clears) is
tested in ``tests/scheduler/``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException

from salesforce_orders import stages
from salesforce_orders.runs import parse_watermark


def loaded(p) -> dict[str, dict]:
    return {r["sf_order_id"]: r for r in p.query("SELECT * FROM external_orders")}


def order_numbers(p, *order_ids: str) -> list[str]:
    return [p.scalar("SELECT order_number FROM external_orders WHERE sf_order_id = :i", i=i) for i in order_ids]


@pytest.fixture
def imported(pipeline):
    """The org imported once, every order written back; the mark is the last loaded SystemModstamp.
    No overlap, so each test sees exactly what its window reads."""
    pipeline.set_config(overlap_minutes=0)
    first = pipeline.run()
    assert first.succeeded, first.error
    return pipeline


# ---------------------------------------------------------------------------------------
# the watermark
# ---------------------------------------------------------------------------------------


def test_a_resync_leaves_the_watermark_so_the_next_run_reads_every_other_change(imported):
    p = imported
    a, b = sorted(loaded(p))[:2]
    p.org_update("Order", a, Description="A changed first")
    p.org_next_second()
    p.org_update("Order", b, Description="B changed, then re-synced")
    mark = p.watermark()

    resync = p.run({"order_numbers": order_numbers(p, b)})

    assert resync.succeeded, resync.error
    assert p.watermark() == mark
    assert loaded(p)[b]["notes"] == "B changed, then re-synced"
    scheduled = p.run()
    assert scheduled.succeeded, scheduled.error
    assert loaded(p)[a]["notes"] == "A changed first"


def test_a_resync_naming_more_orders_than_a_query_url_holds_reads_them_all(imported):
    """A re-sync of orders pasted from a report, 1,200 of them named by number, and an event run of
    several hundred Ids: the query names them all, longer than the URL Salesforce takes (16,384
    bytes of URI and headers; a longer one is answered 414): it goes in a Composite call's body, as
    Salesforce advises, and reads every order named; those the org does not have are reported."""
    p = imported
    everyone = sorted(loaded(p))
    numbers = [r["order_number"] for r in p.query("SELECT order_number FROM external_orders ORDER BY order_number")]
    missing = [f"9{n:07d}" for n in range(1_200 - len(numbers))]
    for order_id in everyone[:3]:
        p.org_update("Order", order_id, Description="changed before the long re-sync")

    resync = p.run({"order_numbers": numbers + missing})

    assert resync.succeeded, resync.error
    assert resync.results["extract"]["extracted"] == len(numbers)
    assert resync.results["extract"]["not_found"] == missing[:100]  # (the XCom names the first 100; the log counts them all)
    assert all(loaded(p)[i]["notes"] == "changed before the long re-sync" for i in everyone[:3])
    events = p.run({"order_ids": everyone})  # an event run's Ids: 18 characters each
    assert events.succeeded, events.error
    assert events.results["extract"]["extracted"] == len(everyone)


def test_a_since_run_moves_the_watermark_only_when_it_read_from_the_mark_on(imported):
    p = imported
    a, b = sorted(loaded(p))[:2]
    p.org_update("Order", a, Description="A changed first")
    since = p.org_next_second()  # SOQL datetimes have whole seconds: B's change comes a second later
    p.org_update("Order", b, Description="B changed after 'since'")
    mark = p.watermark()

    later = p.run({"since": since.isoformat()})

    assert later.succeeded, later.error
    assert p.watermark() == mark  # it read from 'since' on: not everything after the mark
    assert loaded(p)[a]["notes"] != "A changed first"
    earlier = p.run({"since": "2020-01-01"})  # reaches back past the mark: it read everything
    assert earlier.succeeded, earlier.error
    assert p.watermark() > mark
    assert loaded(p)[a]["notes"] == "A changed first"


def test_a_backfill_of_a_later_interval_does_not_jump_over_what_it_never_read(imported):
    p = imported
    a, b = sorted(loaded(p))[:2]
    p.org_update("Order", a, Description="A changed before the interval")
    start = p.org_next_second()
    p.org_update("Order", b, Description="B changed in the interval")
    end = p.org_next_second()
    mark = p.watermark()

    backfill = p.run(run_type="backfill", interval=(start, end))

    assert backfill.succeeded, backfill.error
    assert loaded(p)[b]["notes"] == "B changed in the interval"
    assert p.watermark() == mark
    assert p.run().succeeded
    assert loaded(p)[a]["notes"] == "A changed before the interval"


def _an_order_edited_while_the_extract_pages(p, monkeypatch, description: str, meanwhile=None) -> dict:
    """After the extract's first page of orders, an order of a later page is edited (a second later):
    the page is read as the order is then, with a stamp from after the query began. ``meanwhile``:
    what else happens in Salesforce once the query has begun, a second before the edit."""
    from salesforce_orders.salesforce import SalesforceOrdersHook

    pages = SalesforceOrdersHook.iter_query_pages
    edited: dict = {}

    def paging(self, soql: str, **kwargs):
        source = pages(self, soql, **kwargs)
        if edited or "OrderItems" not in soql:  # the extract's order query, once
            yield from source
            return
        first = next(source)  # the query has begun: its result set is fixed
        later = min(p.expected_order_ids() - {r["Id"] for r in first})  # (before ``meanwhile`` changes the org)
        if meanwhile is not None:
            p.org_next_second()  # stamped after the extract began reading, whatever the machine's speed
            meanwhile()
        p.org_next_second()
        p.org_update("Order", later, Description=description)
        edited["id"] = later
        yield first
        yield from source

    monkeypatch.setattr(SalesforceOrdersHook, "iter_query_pages", paging)
    return edited


@pytest.mark.parametrize("kind", ["backfill", "scheduled"])
def test_a_window_with_an_end_moves_the_watermark_to_its_end_though_an_order_was_edited_while_it_paged(
    pipeline, monkeypatch, kind
):
    """A backfill of an old interval, the first scheduled run: an order of the window edited while
    the extract pages is read with its new stamp, after the window's end. The mark moves to the
    end, not to that stamp: an order changed after the end (which this window never read) is read
    by the next run."""
    p = pipeline
    p.set_config(overlap_minutes=0)
    if kind == "backfill":
        assert p.run(until="load").succeeded  # no write-back: every order keeps its own stamp
        end = parse_watermark(p.watermark()) + timedelta(seconds=1)
        start = datetime(2000, 1, 1, tzinfo=UTC)  # reaches back over the mark: it may move it
    else:  # the first run: no mark yet, it reads back the lookback
        end = p.org_next_second()
        start = end - timedelta(minutes=15)
    b = max(p.expected_order_ids())  # (the edited order is the lowest Id of a later page)
    p.org_next_second()
    p.org_update("Order", b, Description="B changed after the window's end")
    edited = _an_order_edited_while_the_extract_pages(p, monkeypatch, "A edited while the extract paged")

    run = p.run(run_type=kind, interval=(start, end), until="load")

    assert run.succeeded, run.error
    assert run.results["extract"]["pages"] >= 2
    assert loaded(p)[edited["id"]]["notes"] == "A edited while the extract paged"
    assert parse_watermark(p.watermark()) == end  # today: the edit's stamp, past B's change
    assert p.run(until="load").succeeded
    assert loaded(p)[b]["notes"] == "B changed after the window's end"


@pytest.mark.parametrize("kind", ["manual", "order_events", "since", "full_resync"])
def test_a_window_without_an_end_moves_the_watermark_no_later_than_when_its_extract_began_reading(
    pipeline, monkeypatch, kind
):
    """A manual run, an event run without order ids, a ``since`` run, a full re-sync: no window end.
    While the extract pages, a Draft order is activated (the query began before: it is in no page)
    and then, a second later, an order of a later page is edited (read with that newer stamp). The
    mark is not moved to that stamp, past the activation, which the next run's window (the mark,
    no overlap here) would then start after: it moves no later than when the extract began reading,
    and the next run reads the activated order."""
    p = pipeline
    p.set_config(overlap_minutes=0)
    if kind == "since":  # a 'since' run moves the mark only from a stored one it reached back to
        assert p.run(until="load").succeeded
    params = {"since": {"since": "2000-01-01"}, "full_resync": {"full_resync": True}}.get(kind, {})
    run_type = "asset_triggered" if kind == "order_events" else "manual"
    (x,) = p.org.store.activatable_order_ids(1)
    changed: dict = {}

    def activate_x() -> None:
        p.org_update("Order", x, Status="Activated")
        changed["x"] = parse_watermark(p.org_rows('SELECT SystemModstamp FROM "Order" WHERE Id = ?', x)[0]["SystemModstamp"])

    edited = _an_order_edited_while_the_extract_pages(p, monkeypatch, "edited while the extract paged", meanwhile=activate_x)

    run = p.run(params, run_type=run_type, until="load")
    changed["edited"] = edited["id"]

    assert run.succeeded, run.error
    extracted = run.results["extract"]
    assert extracted["pages"] >= 2 and extracted["window"]["changed_to"] is None
    assert loaded(p)[changed["edited"]]["notes"] == "edited while the extract paged"
    assert x not in loaded(p)  # activated after the query began: not in its result set
    assert parse_watermark(extracted["max_system_modstamp"]) > changed["x"]
    mark = parse_watermark(p.watermark())
    nxt = p.run(until="load")
    assert nxt.succeeded, nxt.error
    # today: the mark is the edit's stamp, past the activation, and the next run never reads it
    assert p.scalar("SELECT COUNT(*) FROM stg_orders WHERE run_id = :r AND sf_order_id = :i", r=nxt.run_id, i=x) == 1
    assert x in loaded(p) or x in p.quarantined_ids()
    assert mark == parse_watermark(extracted["window"]["read_from"]) < changed["x"]


def test_a_scheduled_run_cleared_after_later_runs_moved_the_watermark_re_reads_its_interval(imported):
    p = imported
    interval = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 15, tzinfo=UTC))
    assert p.watermark() > "2026-01-01T00:15"
    mark = p.watermark()

    old = p.run(run_type="scheduled", interval=interval)

    assert old.succeeded, old.error  # today: "ExtractWindow: changed_from ... must be before changed_to"
    window = old.results["extract"]["window"]
    assert (window["changed_from"], window["changed_to"]) == tuple(t.isoformat() for t in interval)
    assert "already past this run's interval end" in window["note"]
    assert p.watermark() == mark


# ---------------------------------------------------------------------------------------
# late and cleared tasks
# ---------------------------------------------------------------------------------------


def test_a_load_that_commits_after_a_newer_run_keeps_the_newer_versions(imported):
    p = imported
    a = sorted(loaded(p))[0]
    p.org_update("Order", a, Description="version 2")
    late = p.run(until="transform")  # staged version 2, then its load waits (a cleared or slow task)
    assert late.succeeded, late.error
    p.org_next_second()
    p.org_update("Order", a, Description="version 3")
    newer = p.run()
    assert newer.succeeded, newer.error
    assert loaded(p)[a]["notes"] == "version 3"

    result = p.stage("load", late)

    assert result["superseded"] >= 1
    assert loaded(p)[a]["notes"] == "version 3"
    # the whole late run cleared from validate: its stale staging is dropped, nothing old comes back
    again = p.stage("validate", late)
    assert again["superseded"] >= 1
    for stage in ("transform", "load", "mark_status_changes", "write_back"):
        p.stage(stage, late)
    assert loaded(p)[a]["notes"] == "version 3"
    assert p.query("SELECT * FROM quarantined_orders WHERE sf_order_id = :i AND released_at IS NULL", i=a) == []


def test_a_late_load_never_replaces_a_newer_version_a_later_run_quarantined_or_skipped(imported):
    """The pool lets a newer run's validate and transform go while an older run waits for its load
    (its transform still running, or the load cleared later). The newer run refused Salesforce's
    current version (quarantined; a new order that now totals 0, skipped): the late load keeps the
    older version it read out (superseded), so the refusal stays, never released by a version it
    does not describe and never read again."""
    from tests.conftest import activatable_orders

    p = imported
    p.set_config(zero_total_policy="skip")
    a = sorted(loaded(p))[0]
    (x,) = activatable_orders(p.org, 1)
    p.org_update("Order", x, Status="Activated")
    p.org_update("Order", a, Description="version 2")
    late = p.run(until="transform")  # staged a's version 2 and x with its total; its load waits
    assert late.succeeded, late.error
    p.org_next_second()
    p.org_update("Order", a, Description="version 3", BillingCountry="Atlantis", ShippingCountry="Atlantis")
    to_zero_total(p, x)
    newer = p.run()
    assert newer.succeeded, newer.error
    assert places(p, a) == {"loaded": 1, "quarantined": 1, "skipped": 0}
    assert places(p, x) == {"loaded": 0, "quarantined": 0, "skipped": 1}

    result = p.stage("load", late)

    assert result["superseded"] >= 2
    assert places(p, a) == {"loaded": 1, "quarantined": 1, "skipped": 0}
    assert loaded(p)[a]["notes"] != "version 2" and loaded(p)[a]["newer_version_quarantined_at"] is not None
    assert places(p, x) == {"loaded": 0, "quarantined": 0, "skipped": 1}


def test_a_late_load_never_makes_an_order_set_back_to_draft_active_again(imported):
    p = imported
    a = sorted(loaded(p))[0]
    p.org_update("Order", a, Description="staged while active")
    late = p.run(until="transform")
    p.org_next_second()
    p.org_update("Order", a, Status="Draft")
    newer = p.run()
    assert newer.succeeded, newer.error
    assert loaded(p)[a]["sf_state"] == "deactivated"

    p.stage("load", late)

    assert loaded(p)[a]["sf_state"] == "deactivated"


@pytest.mark.parametrize("by", ["order_numbers", "order_ids"])
def test_a_late_resync_load_never_leaves_an_order_set_back_to_draft_active(imported, by):
    """A re-sync (or an event run) read a newly activated order; its load waited (a cleared or
    queued task). The order went back to Draft, and a run in between moved both marks past that
    change (it read another change) without marking it: it was in no warehouse yet. The re-sync's
    own status check looks back to when its extract began, so the order it loads is marked. (No
    card fields X-ed out: our own write to the Draft order would otherwise hide this.)"""
    from tests.conftest import activatable_orders

    p = imported
    p.set_config(write_back={"x_out_card_fields": False, "x_out_card_fields_not_imported": False})
    (x,) = activatable_orders(p.org, 1)
    p.org_update("Order", x, Status="Activated")
    number = p.org_rows('SELECT OrderNumber FROM "Order" WHERE Id = ?', x)[0]["OrderNumber"]
    late = p.run({by: [number if by == "order_numbers" else x]}, until="transform")
    assert late.succeeded and late.results["extract"]["extracted"] == 1
    p.org_next_second()
    p.org_update("Order", x, Status="Draft")
    p.org_next_second()
    p.org_update("Order", sorted(loaded(p))[0], Description="read by the run in between")
    assert p.run().succeeded
    assert x not in loaded(p)

    for stage in ("load", "mark_status_changes", "write_back", "mask_card_fields"):
        p.stage(stage, late)

    assert late.results["mark_status_changes"]["deactivated"] == 1  # today: 0, the order stays active
    assert loaded(p)[x]["sf_state"] == "deactivated"
    assert p.run().succeeded
    assert loaded(p)[x]["sf_state"] == "deactivated"


def test_a_late_load_never_puts_back_an_account_name_a_newer_run_read(imported):
    """An order's SystemModstamp does not move when its Account is renamed: a re-sync read the order
    with its Account's old name, its load waited (a slow or cleared task), the Account was renamed and
    a scheduled run read and loaded every order of it. The late load keeps the newer version (same
    stamp, read later), the order and its customer keep the new name, and the runs after leave them so."""
    p = imported
    account = p.scalar(
        "SELECT sf_account_id FROM external_orders GROUP BY sf_account_id HAVING COUNT(*) > 1 ORDER BY sf_account_id LIMIT 1"
    )
    first, second = sorted(i for i, o in loaded(p).items() if o["sf_account_id"] == account)[:2]
    late = p.run({"order_numbers": order_numbers(p, first)}, until="transform")
    assert late.succeeded, late.error
    start = p.org_next_second()
    p.org_update("Account", account, Name="Renamed Later Ltd")
    end = p.org_next_second() + timedelta(seconds=1)
    newer = p.run(run_type="scheduled", interval=(start - timedelta(minutes=5), end))
    assert newer.succeeded, newer.error
    assert loaded(p)[first]["account_name"] == "Renamed Later Ltd"

    result = p.stage("load", late)

    assert result["superseded"] == 1 and result["updated"] == 0
    for _ in range(2):
        start = p.org_next_second()
        end = p.org_next_second() + timedelta(seconds=1)
        assert p.run(run_type="scheduled", interval=(start - timedelta(minutes=5), end)).succeeded
    assert p.run().succeeded
    assert {loaded(p)[order]["account_name"] for order in (first, second)} == {"Renamed Later Ltd"}
    assert p.scalar("SELECT name FROM customers WHERE sf_account_id = :a", a=account) == "Renamed Later Ltd"


def test_a_late_load_never_puts_back_an_account_name_a_retried_extract_read(imported, monkeypatch):
    """As above, the newer version read by a run whose extract failed first (Salesforce down) and was
    retried after the re-sync read the order: import_runs.started_at is the first try's, before the
    re-sync's reading ended; the stored version's staging row says when it was read."""
    import requests

    from salesforce_orders.salesforce import SalesforceOrdersHook

    p = imported
    account = p.scalar(
        "SELECT sf_account_id FROM external_orders GROUP BY sf_account_id HAVING COUNT(*) > 1 ORDER BY sf_account_id LIMIT 1"
    )
    first = sorted(i for i, o in loaded(p).items() if o["sf_account_id"] == account)[0]
    count = SalesforceOrdersHook.count_and_read

    def down(self, *args, **kwargs):
        raise requests.ConnectionError("Salesforce did not answer")

    monkeypatch.setattr(SalesforceOrdersHook, "count_and_read", down)
    newer = p.run(until="load")
    assert newer.failed_stage == "extract"
    monkeypatch.setattr(SalesforceOrdersHook, "count_and_read", count)
    late = p.run({"order_numbers": order_numbers(p, first)}, until="transform")
    assert late.succeeded, late.error
    p.org_next_second()
    p.org_update("Account", account, Name="Renamed Later Ltd")
    p.org_next_second()
    for stage in ("extract", "validate", "transform", "load"):  # Airflow retries the extract
        p.stage(stage, newer)
    assert loaded(p)[first]["account_name"] == "Renamed Later Ltd"

    result = p.stage("load", late)

    assert result["superseded"] == 1 and result["updated"] == 0  # today: updated, the old name back
    assert p.run().succeeded
    assert loaded(p)[first]["account_name"] == "Renamed Later Ltd"
    assert p.scalar("SELECT name FROM customers WHERE sf_account_id = :a", a=account) == "Renamed Later Ltd"


def test_a_resync_says_which_orders_it_was_asked_for_and_did_not_find(imported, caplog):
    """A typo, an order number without its leading zeros, an Id of no Activated order: the run
    re-syncs the others, and its log and XCom name the ones it found nowhere."""
    p = imported
    number = sorted(order_numbers(p, *sorted(loaded(p))[:1]))[0]
    without_zeros = number.lstrip("0")

    run = p.run({"order_numbers": [number, without_zeros, "NO-SUCH-ORDER"]})

    assert run.succeeded, run.error
    assert run.results["extract"]["extracted"] == 1
    assert run.results["extract"]["not_found"] == [without_zeros, "NO-SUCH-ORDER"]
    assert "Re-sync: 2 of the 3 orders asked for matched no Activated order" in caplog.text
    by_id = p.run({"order_ids": ["801000000000zzzAAA", sorted(loaded(p))[0]]})
    assert by_id.succeeded and by_id.results["extract"]["not_found"] == ["801000000000zzzAAA"]


def test_a_resync_by_a_15_character_id_re_imports_that_order_and_names_the_unknown_as_typed(imported, caplog):
    """The UI and reports show an Id's 15 characters; Salesforce returns its 18. A re-sync by the
    15 finds the order (as a real org does), re-imports it and does not call it not found; an Id
    of no order is named as it was typed."""
    p = imported
    order_id = sorted(loaded(p))[0]
    p.org_update("Order", order_id, Description="Re-synced by its 15-character Id")
    typed = order_id[:15]

    run = p.run({"order_ids": [typed, "801000000000zzz"]})

    assert run.succeeded, run.error
    assert run.results["extract"]["extracted"] == 1
    assert run.results["extract"]["not_found"] == ["801000000000zzz"]
    assert "Re-sync: 1 of the 2 orders asked for matched no Activated order" in caplog.text
    assert loaded(p)[order_id]["notes"] == "Re-synced by its 15-character Id"


# ---------------------------------------------------------------------------------------
# the breaker, a disabled import
# ---------------------------------------------------------------------------------------


def test_one_invalid_order_in_a_small_window_is_quarantined_without_failing_the_run(imported):
    p = imported
    a = sorted(loaded(p))[0]
    p.org_update("Order", a, BillingCountry="Atlantis", ShippingCountry="Atlantis")

    resync = p.run({"order_numbers": order_numbers(p, a)})

    assert resync.succeeded, resync.error  # today: "1 of 1 orders (100%) failed validation"
    assert resync.results["validate"]["invalid"] == 1
    assert p.query("SELECT failed_checks FROM quarantined_orders WHERE sf_order_id = :i AND released_at IS NULL", i=a)


def test_a_disabled_import_is_recorded_as_disabled_and_neither_reads_nor_writes_salesforce(pipeline):
    """Even with card masks still to be sent (a run stopped after the validation quarantined some
    orders): a paused import leaves Salesforce alone, the masks wait for it to be switched on."""
    p = pipeline
    p.run(until="validate")
    waiting = p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE action = 'x_out_card' AND state = 'PENDING'")
    assert waiting > 0
    p.set_config(enabled=False)
    calls = p.org.admin.stats()["calls"]["total"]

    run = p.run()

    assert run.report["status"] == "disabled"
    assert "'enabled' is false" in run.report["message"]
    assert p.org.admin.stats()["calls"]["total"] == calls
    assert p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE action = 'x_out_card' AND state = 'PENDING'") == waiting
    p.set_config(enabled=True)
    assert p.run().succeeded
    assert p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE action = 'x_out_card' AND state = 'PENDING'") == 0


# ---------------------------------------------------------------------------------------
# the write-back and what changed in Salesforce meanwhile
# ---------------------------------------------------------------------------------------


def test_the_write_back_leaves_what_someone_changed_in_salesforce_after_the_import_read_it(pipeline):
    p = pipeline
    run = p.run(until="mark_status_changes")
    assert run.succeeded, run.error
    orders = loaded(p)
    drafted = sorted(orders)[0]
    # an order whose Account gets its customer id from us (it has none in Salesforce)
    account = p.scalar(
        "SELECT sf_record_id FROM writeback_outbox WHERE sf_object = 'Account' AND sf_order_id != :d ORDER BY id LIMIT 1", d=drafted
    )
    other = next(i for i, o in sorted(orders.items()) if o["sf_account_id"] == account and i != drafted)
    p.org_update("Order", drafted, Status="Draft")
    p.org_update("Account", account, Customer_ID__c="ERP-4711")

    p.stage("write_back", run)

    org = {r["Id"]: r for r in p.org_rows('SELECT Id, Status, StatusCode FROM "Order"')}
    assert (org[drafted]["Status"], org[drafted]["StatusCode"]) == ("Draft", "Draft")
    assert org[other]["Status"] == "Imported"
    assert p.org_rows("SELECT Customer_ID__c FROM Account WHERE Id = ?", account) == [{"Customer_ID__c": "ERP-4711"}]
    reasons = {
        (r["sf_object"], r["sf_record_id"]): (r["state"], r["last_error_code"])
        for r in p.query("SELECT sf_object, sf_record_id, state, last_error_code FROM writeback_outbox")
    }
    assert reasons[("Order", drafted)] == ("DONE", "ORDER_DEACTIVATED")  # card fields still X-ed out
    assert reasons[("Account", account)] == ("DEAD", "CUSTOMER_ID_CHANGED")


def test_a_quarantined_or_skipped_order_set_back_to_draft_is_released(pipeline, external_orders_pages):
    """An order is in one place: Draft orders are nowhere. A quarantined one and a skipped one set
    back to Draft leave the quarantine (its view, page and badge) and the skipped orders; activated
    again and still invalid, the first is quarantined anew."""
    p = pipeline
    p.set_config(zero_total_policy="skip")
    assert p.run().succeeded
    quarantined = p.scalar("SELECT MIN(sf_order_id) FROM quarantined_orders WHERE sf_order_id NOT IN (SELECT sf_order_id FROM external_orders)")
    skipped = p.scalar("SELECT MIN(sf_order_id) FROM skipped_orders")
    assert quarantined and skipped
    p.org_update("Order", quarantined, Status="Draft")
    p.org_update("Order", skipped, Status="Draft")

    assert p.run().succeeded

    assert p.scalar("SELECT COUNT(*) FROM v_quarantined_orders WHERE sf_order_id = :q", q=quarantined) == 0
    assert p.scalar("SELECT COUNT(*) FROM quarantined_orders WHERE sf_order_id = :q AND released_at IS NULL", q=quarantined) == 0
    assert p.scalar("SELECT COUNT(*) FROM skipped_orders WHERE sf_order_id = :s AND released_at IS NULL", s=skipped) == 0
    assert quarantined not in external_orders_pages(p.engine, p.schema).get("/quarantine").text
    p.org_update("Order", quarantined, Status="Activated")
    assert p.run().succeeded
    assert p.scalar("SELECT COUNT(*) FROM quarantined_orders WHERE sf_order_id = :q AND released_at IS NULL", q=quarantined) == 1


RECONCILIATION = "Reconciliation with Salesforce: the lookback's Activated orders by outcome and currency"


def places(p, order_id: str) -> dict[str, int]:
    return {
        "loaded": p.scalar("SELECT COUNT(*) FROM external_orders WHERE sf_order_id = :o AND sf_state = 'active'", o=order_id),
        "quarantined": p.scalar("SELECT COUNT(DISTINCT sf_order_id) FROM quarantined_orders WHERE sf_order_id = :o AND released_at IS NULL", o=order_id),
        "skipped": p.scalar("SELECT COUNT(DISTINCT sf_order_id) FROM skipped_orders WHERE sf_order_id = :o AND released_at IS NULL", o=order_id),
    }


def to_zero_total(p, order_id: str) -> None:
    """Every product of the order priced 0 (an Activated order's products are locked: Draft first)."""
    items = [r["Id"] for r in p.org_rows("SELECT Id FROM OrderItem WHERE OrderId = ? AND IsDeleted = 0", order_id)]
    p.org_update("Order", order_id, Status="Draft")
    for item in items:
        p.org_update("OrderItem", item, UnitPrice=0)
    p.org_update("Order", order_id, Status="Activated")


def test_an_order_is_in_one_place_whichever_of_loaded_quarantined_or_skipped_it_was_before(pipeline):
    """Under zero_total_policy skip: a skipped order made invalid is only quarantined, and skipped
    again once fixed; a loaded order that now totals 0 is loaded again with its zero total (the skip
    is for orders not imported yet), as is one whose newer version was quarantined and is fixed to a
    zero total. The documented reconciliation adds up to Salesforce's Activated orders."""
    p = pipeline
    p.set_config(zero_total_policy="skip")
    assert p.run().succeeded
    skipped = p.scalar("SELECT MIN(sf_order_id) FROM skipped_orders")
    loaded, refused = sorted(p.loaded_ids())[:2]
    country = {r["Id"]: r["ShippingCountry"] for r in p.org_rows('SELECT Id, ShippingCountry FROM "Order"')}

    p.org_update("Order", skipped, ShippingCountry="Atlantis")
    to_zero_total(p, loaded)
    p.org_update("Order", refused, ShippingCountry="Atlantis")
    assert p.run().succeeded
    assert places(p, skipped) == {"loaded": 0, "quarantined": 1, "skipped": 0}
    assert places(p, loaded) == {"loaded": 1, "quarantined": 0, "skipped": 0}
    assert p.query("SELECT total_amount, is_zero_total FROM external_orders WHERE sf_order_id = :o", o=loaded)[0]["is_zero_total"] in (True, 1)
    p.org_update("Order", refused, ShippingCountry=country[refused])  # fixed in Salesforce
    p.org_update("Order", skipped, ShippingCountry=country[skipped])
    to_zero_total(p, refused)
    assert p.run().succeeded

    assert places(p, skipped) == {"loaded": 0, "quarantined": 0, "skipped": 1}
    assert places(p, refused) == {"loaded": 1, "quarantined": 0, "skipped": 0}
    assert sum(r["orders"] for r in p.query(p.documented_query(RECONCILIATION))) == len(p.expected_order_ids())


def test_an_org_without_the_imported_status_keeps_activated_in_the_warehouse_until_the_value_is_added(pipeline):
    """The org's Status picklist has no 'Imported': the write-back leaves Status alone, and the
    warehouse says what Salesforce shows (Activated), each Order row DONE with why. Once the value
    is added (the runbook's fix), the next run writes Status on every order imported meanwhile
    (not on one set back to Draft since), and the next version of an order is written back with it."""
    from salesforce_sandbox.schema import build_schema

    p = pipeline
    p.org.admin.reset(orders=60, seed=5, with_imported_status=False)

    run = p.run()

    assert run.succeeded and run.results["write_back"]["status_skipped"], run.error
    in_salesforce = {r["Id"]: r["Status"] for r in p.org_rows('SELECT Id, Status FROM "Order"')}
    rows = p.query("SELECT sf_order_id, sf_status, lifecycle_state FROM external_orders")
    assert rows and all(r["sf_status"] == in_salesforce[r["sf_order_id"]] == "Activated" for r in rows)
    assert {r["lifecycle_state"] for r in rows} == {"COMPLETE"}
    codes = {r["last_error_code"] for r in p.query("SELECT last_error_code FROM writeback_outbox WHERE action LIKE 'mark_imported%'")}
    assert codes == {"STATUS_NOT_IN_PICKLIST"}

    p.org.store.set_schema(build_schema(with_imported_status=True))  # the admin adds the value
    drafted, changed = sorted(r["sf_order_id"] for r in rows)[:2]
    p.org_update("Order", drafted, Status="Draft")
    p.org_update("Order", changed, Description="changed once the picklist has its value")

    after = p.run()

    assert after.succeeded, after.error
    in_salesforce = {r["Id"]: r["Status"] for r in p.org_rows('SELECT Id, Status FROM "Order"')}
    for row in p.query("SELECT sf_order_id, sf_status, sf_state, lifecycle_state FROM external_orders"):
        expected = "Draft" if row["sf_order_id"] == drafted else "Imported"
        assert in_salesforce[row["sf_order_id"]] == expected, row
        if row["sf_order_id"] != drafted:
            assert (row["sf_status"], row["lifecycle_state"]) == ("Imported", "COMPLETE"), row
    assert p.run().results["write_back"]["attempted"] == 0  # caught up once


def test_an_imported_status_of_the_draft_category_is_refused_naming_the_key(imported):
    p = imported
    a = sorted(loaded(p))[0]
    p.org_update("Order", a, Description="changed")
    p.set_config(imported_status="Draft")

    run = p.run()

    assert isinstance(run.error, AirflowFailException) and run.failed_stage == "write_back"
    assert str(run.error).startswith("write_back: imported_status: 'Draft' is in the org's Draft status category")
    assert p.org_rows('SELECT StatusCode FROM "Order" WHERE Id = ?', a) == [{"StatusCode": "Activated"}]


# ---------------------------------------------------------------------------------------
# Account edits
# ---------------------------------------------------------------------------------------


def test_a_renamed_account_renames_its_customer_and_every_one_of_its_orders(imported):
    p = imported
    account = p.scalar(
        "SELECT sf_account_id FROM external_orders GROUP BY sf_account_id HAVING COUNT(*) > 1 ORDER BY sf_account_id LIMIT 1"
    )
    p.org_update("Account", account, Name="Renamed Holdings Ltd")

    run = p.run()

    assert run.succeeded, run.error
    assert run.results["extract"]["accounts_changed"] == 1
    assert p.scalar("SELECT name FROM customers WHERE sf_account_id = :a", a=account) == "Renamed Holdings Ltd"
    orders = [o for o in loaded(p).values() if o["sf_account_id"] == account]
    assert len(orders) > 1
    for order in orders:
        assert order["account_name"] == "Renamed Holdings Ltd"
        assert order["external_name"].endswith(f"{order['order_number']} Renamed Holdings Ltd")
    # our own write-back of the customer ids is no Account change: the run after imports nothing
    quiet = p.run()
    assert quiet.succeeded and quiet.results["extract"]["accounts_changed"] == 0


def test_an_account_change_read_by_a_run_whose_load_failed_reaches_its_orders_in_the_next_run(imported):
    """The extract stores the Account hierarchy (ancestors and changed Accounts) as customers before
    the load: a run that read a rename and a new customer id and then never loaded (its load failed,
    nothing committed) leaves the customer current and its orders not. The next run still finds the
    Account changed (its orders say otherwise) and brings its orders in."""
    p = imported
    account = p.scalar(
        "SELECT sf_account_id FROM external_orders GROUP BY sf_account_id HAVING COUNT(*) > 1 ORDER BY sf_account_id LIMIT 1"
    )
    p.org_update("Account", account, Name="Renamed Before A Failure Ltd", Customer_ID__c="ERP-0815")
    stopped = p.run(until="transform")
    assert stopped.succeeded and stopped.results["extract"]["accounts_changed"] == 1
    assert p.scalar("SELECT name FROM customers WHERE sf_account_id = :a", a=account) == "Renamed Before A Failure Ltd"

    run = p.run()

    assert run.succeeded, run.error
    assert run.results["extract"]["accounts_changed"] == 1
    orders = [o for o in loaded(p).values() if o["sf_account_id"] == account]
    assert len(orders) > 1
    for order in orders:
        assert (order["account_name"], order["customer_id"]) == ("Renamed Before A Failure Ltd", "ERP-0815")
        assert order["external_name"].endswith(f"{order['order_number']} Renamed Before A Failure Ltd")
    quiet = p.run()
    assert quiet.succeeded and quiet.results["extract"]["accounts_changed"] == 0


def test_stages_load_takes_the_plan_of_its_extract():
    with pytest.raises(TypeError, match="window"):
        stages.load(run_id="r", max_system_modstamp=None)  # type: ignore[call-arg]
