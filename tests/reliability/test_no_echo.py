"""No echo: the run after an import does not read back the orders whose only change is our own
write-back, and always reads an order someone else changed, before or after our write.

The stages run as the DAG's tasks (``conftest.Pipeline``) against the sandbox org and a SQLite or
PostgreSQL warehouse. "Someone else" is another user of the org: the sandbox records them as the
change's ``LastModifiedById``, as Salesforce does for an edit in its UI.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from salesforce_orders import faultpoints, writeback
from salesforce_orders.own_writes import MAX_REREAD, OWN_WRITES_KEY, OwnWrites, current, remember, span_of
from salesforce_orders.soql import build_orders_query, stamp_literal


@pytest.fixture
def imported(pipeline):
    """The org imported once and every order written back; no overlap, so the next window starts
    exactly at the last stamp loaded."""
    pipeline.set_config(overlap_minutes=0)
    first = pipeline.run()
    assert first.succeeded, first.error
    assert first.results["write_back"]["written"] > 0
    return pipeline


def someone_else(p) -> str:
    """A user of the org other than the integration user (the one the import logs in as)."""
    integration = p.org.store.integration_user_id
    return next(r["Id"] for r in p.org_rows('SELECT Id FROM "User" WHERE Id != ? ORDER BY Id', integration))


def edit_as(p, user_id: str, order_id: str, **values) -> None:
    with p.org.store.lock:
        p.org.store.update("Order", order_id, values, as_user=user_id)


# The span ends (exclusive) at the highest stamp read back: the order written last is read again,
# as a write of ours in the same second could hide a later one on an org that keeps whole seconds.
LAST_WRITTEN = 1


def po_number(p, order_id: str) -> str | None:
    return p.scalar("SELECT po_number FROM external_orders WHERE sf_order_id = :i", i=order_id)


def imported_orders(p) -> list[str]:
    return sorted(r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM external_orders"))


def test_the_run_after_an_import_reads_none_of_the_orders_it_wrote_back(imported):
    p = imported
    written = p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE sf_object = 'Order' AND state = 'DONE'")
    statuses = {p.org_rows('SELECT Status FROM "Order" WHERE Id = ?', order)[0]["Status"] for order in imported_orders(p)[:5]}
    assert statuses == {"Imported"}  # the write-back did change them (and their SystemModstamp)
    before = p.query("SELECT sf_order_id, content_hash FROM external_orders ORDER BY sf_order_id")

    second = p.run()

    assert second.succeeded, second.error
    assert written > 0
    assert second.results["extract"]["extracted"] == LAST_WRITTEN
    assert second.results["extract"]["window"]["own_writes_left_out"] >= 1
    assert p.query("SELECT sf_order_id, content_hash FROM external_orders ORDER BY sf_order_id") == before


def test_an_edit_after_the_write_back_is_read_by_the_next_run(imported):
    p = imported
    order = imported_orders(p)[3]
    edit_as(p, someone_else(p), order, PoNumber="PO-EDITED-AFTER")

    second = p.run()

    assert second.succeeded, second.error
    assert second.results["extract"]["extracted"] == 1 + LAST_WRITTEN
    assert po_number(p, order) == "PO-EDITED-AFTER"


def test_an_edit_by_the_integration_user_after_the_write_back_is_read_by_the_next_run(imported):
    """A later write under the import's own user (another of its tasks) is past the span's end."""
    p = imported
    order = imported_orders(p)[4]
    p.org_update("Order", order, PoNumber="PO-OURS-LATER")

    second = p.run()

    assert second.succeeded, second.error
    assert second.results["extract"]["extracted"] == 1 + LAST_WRITTEN
    assert po_number(p, order) == "PO-OURS-LATER"


def test_an_edit_between_our_write_and_its_read_back_is_read_by_the_next_run(pipeline, monkeypatch):
    """Salesforce has answered a batch; before the write-back reads back what it wrote, a user edits
    one of the orders just written: the read-back must not take that stamp for ours."""
    p = pipeline
    p.set_config(overlap_minutes=0)
    edited: list[str] = []
    user = someone_else(p)
    reach = faultpoints.reach

    def edit_when_sent(name: str) -> None:
        reach(name)
        if name == "write_back.sent" and not edited:
            order = p.scalar(
                "SELECT o.sf_record_id FROM writeback_outbox o JOIN external_orders e ON e.sf_order_id = o.sf_record_id "
                "WHERE o.sf_object = 'Order' AND o.state = 'PROCESSING' ORDER BY o.id LIMIT 1"
            )
            edit_as(p, user, order, PoNumber="PO-EDITED-MID-WRITE")
            edited.append(order)

    monkeypatch.setattr(writeback.faultpoints, "reach", edit_when_sent)
    first = p.run()
    monkeypatch.setattr(writeback.faultpoints, "reach", reach)
    assert first.succeeded, first.error
    assert edited and po_number(p, edited[0]) != "PO-EDITED-MID-WRITE"

    second = p.run()

    assert second.succeeded, second.error
    assert second.results["extract"]["extracted"] == 1 + LAST_WRITTEN
    assert po_number(p, edited[0]) == "PO-EDITED-MID-WRITE"


@pytest.mark.parametrize("by_integration_user", [False, True], ids=["another-user", "integration-user"])
def test_an_edit_between_the_import_and_its_write_back_is_read_by_the_next_run(pipeline, by_integration_user):
    """The edit comes before our write, which then names the integration user as the last to
    change the order: the write-back's check before sending finds it, and it is read again."""
    p = pipeline
    p.set_config(overlap_minutes=0)
    run = p.run(until="mark_status_changes")
    assert run.succeeded, run.error
    order = imported_orders(p)[5]
    if by_integration_user:
        p.org_update("Order", order, PoNumber="PO-EDITED-BEFORE")  # e.g. another integration, same user
    else:
        edit_as(p, someone_else(p), order, PoNumber="PO-EDITED-BEFORE")
    p.stage("write_back", run)
    p.stage("mask_card_fields", run)
    assert p.org_rows('SELECT Status FROM "Order" WHERE Id = ?', order) == [{"Status": "Imported"}]  # written over

    second = p.run()

    assert second.succeeded, second.error
    assert second.results["extract"]["extracted"] == 1 + LAST_WRITTEN
    assert po_number(p, order) == "PO-EDITED-BEFORE"
    spans = p.scalar("SELECT value FROM sync_state WHERE key = :k", k=OWN_WRITES_KEY)
    assert order in spans


# ---------------------------------------------------------------------------------------
# the span and the window's condition
# ---------------------------------------------------------------------------------------

START = datetime(2026, 3, 1, 12, 0, 0, 250_000, tzinfo=UTC)


def test_a_span_ends_at_the_highest_stamp_read_back_and_names_what_is_not_ours():
    read_back = [("801A", "2026-03-01T12:00:01.000+0000"), ("801B", "2026-03-01T12:00:05.000+0000"), ("801X", "2026-03-01T12:00:03.000Z")]

    span = span_of("005U", START, read_back, {"801A", "801B"})

    assert span == OwnWrites("005U", START, datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC), ("801X",))
    assert span_of("005U", START, read_back, set()) is None  # nothing of ours: nothing to leave out
    too_many = [(f"801{i:04d}", "2026-03-01T12:00:01Z") for i in range(MAX_REREAD + 1)] + [("801A", "2026-03-01T12:00:02Z")]
    assert span_of("005U", START, too_many, {"801A"}) is None  # everything is read back then


def test_the_window_leaves_out_spans_of_our_writes_except_the_orders_to_read_again():
    from salesforce_orders.config import ImportConfig
    from salesforce_orders.soql import ExtractWindow

    import_config = ImportConfig()
    span = OwnWrites("005U", START, datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC), ("801X",))
    window = ExtractWindow(datetime(2026, 3, 1, tzinfo=UTC), None, datetime(2025, 1, 1, tzinfo=UTC), own_writes=(span,))

    soql = build_orders_query(import_config, window)

    assert (
        "(Id IN ('801X') OR (LastModifiedById != '005U' OR SystemModstamp < 2026-03-01T12:00:00.250Z "
        "OR SystemModstamp >= 2026-03-01T12:00:05Z))"
    ) in soql
    resync = ExtractWindow(None, None, datetime(2025, 1, 1, tzinfo=UTC), order_numbers=("00000001",), own_writes=(span,))
    assert "LastModifiedById" not in build_orders_query(import_config, resync)  # chosen orders: read whatever changed them
    assert stamp_literal(datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)) == "2026-03-01T12:00:05Z"


def test_the_window_names_at_most_max_reread_orders_keeping_the_newest_spans(sqlite_engine):
    """The REST query travels in a URL: older spans are left aside (their orders read again)
    rather than naming more orders than a query can hold."""
    from salesforce_orders.schema_versions import create_all
    from salesforce_orders.warehouse import tables

    create_all(sqlite_engine, None)
    sync_state = tables(None).sync_state
    half = MAX_REREAD // 2 + 1
    spans = [
        OwnWrites("005U", START.replace(hour=h), START.replace(hour=h, minute=30), tuple(f"801{h:02d}{i:04d}" for i in range(half)))
        for h in (10, 11, 12)
    ]
    for span in spans:
        remember(sqlite_engine, sync_state, span, watermark=None, now=START)

    assert current(sqlite_engine, sync_state) == (spans[-1],)


def test_a_later_write_back_round_does_not_read_back_the_customer_ids_the_earlier_rounds_wrote(pipeline, monkeypatch):
    """Before each round the write-back asks Salesforce which Accounts someone filled a customer id
    on since the last check; the customer ids the earlier rounds of the same drain wrote are ours,
    and reading them back cost a page of calls per 2,000 Accounts, round after round."""
    from salesforce_orders.salesforce import SalesforceOrdersHook

    checked: list[int] = []
    read_pages = SalesforceOrdersHook.iter_query_pages

    def counting(self, query, *args, **kwargs):
        for page in read_pages(self, query, *args, **kwargs):
            if "FROM Account WHERE SystemModstamp >=" in query:
                checked.append(len(page))
            yield page

    monkeypatch.setattr(SalesforceOrdersHook, "iter_query_pages", counting)
    monkeypatch.setattr(writeback, "BULK_JOB_RECORDS", 40)  # several Bulk rounds from a small org
    pipeline.set_config(bulk_writeback_threshold=0)

    outcome = pipeline.run()

    assert outcome.succeeded, outcome.error
    accounts_written = pipeline.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE sf_object = 'Account' AND state = 'DONE'")
    assert accounts_written > 40  # the customer ids went out over more than one round
    assert len(checked) > 1 and sum(checked) == 0
