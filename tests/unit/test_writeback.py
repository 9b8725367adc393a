"""Write-back: field preparation for the org, lifecycles, retry delays, and draining the outbox of
a SQLite warehouse through a fake Salesforce that answers per record as sObject Collections do."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders import writeback
from salesforce_orders.config import DEFAULT_CARD_FIELDS
from salesforce_orders.load import load_run
from salesforce_orders.model import WriteBack
from salesforce_orders.salesforce import COLLECTION_LIMIT, ApiUsage, SalesforceApiError
from salesforce_orders.schema_versions import create_all
from salesforce_orders.warehouse import tables
from salesforce_orders.writeback import (
    CARD_MASK_MAX,
    ImportedStatusRefused,
    OrgCapabilities,
    OutboxDrainer,
    WriteBackSummary,
    lifecycle_for,
    prepare_fields,
    retry_delay,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CARD_NUMBER, CARD_CVV, CARD_MONTH, CARD_YEAR = DEFAULT_CARD_FIELDS
MASK = "X" * 16
LOCKED = {"statusCode": "UNABLE_TO_LOCK_ROW", "message": "unable to obtain exclusive access to this record", "fields": []}
RULE = {"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Status cannot change this week", "fields": ["Status"]}


def order_describe(statuses: tuple[str, ...] = ("Draft", "Activated", "Imported"), card_lengths: dict[str, int] | None = None) -> dict:
    """The part of an Order describe the write-back reads."""
    lengths = {CARD_NUMBER: 20, CARD_CVV: 4, CARD_MONTH: 2, CARD_YEAR: 4} if card_lengths is None else card_lengths
    return {
        "name": "Order",
        "fields": [
            {"name": "Id", "length": 18},
            {"name": "Status", "length": 40, "picklistValues": [{"value": s, "active": True} for s in statuses]},
            *({"name": name, "length": length} for name, length in lengths.items()),
        ],
    }


# ---------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------


def test_capabilities_from_the_describe():
    describe = order_describe(card_lengths={CARD_NUMBER: 20, CARD_CVV: 0})
    describe["fields"][1]["picklistValues"].append({"value": "Archived", "active": False})

    org = OrgCapabilities.from_describe(describe, "Imported", DEFAULT_CARD_FIELDS)
    assert org == OrgCapabilities(imported_status_available=True, card_field_lengths={CARD_NUMBER: 20, CARD_CVV: CARD_MASK_MAX})
    # An inactive picklist value cannot be set.
    assert OrgCapabilities.from_describe(describe, "Archived", ()).imported_status_available is False
    assert OrgCapabilities.from_describe({"fields": []}, "Imported", DEFAULT_CARD_FIELDS) == OrgCapabilities(False, {})


def test_prepare_fields_sizes_card_masks_and_drops_what_the_org_lacks():
    org = OrgCapabilities(imported_status_available=False, card_field_lengths={CARD_NUMBER: 20, CARD_CVV: 4, CARD_MONTH: 2})
    fields = {"Status": "Imported", **dict.fromkeys(DEFAULT_CARD_FIELDS, MASK), "Description": "XY", "PoNumber": ""}

    assert prepare_fields("Order", fields, org, "Imported") == {
        CARD_NUMBER: MASK,  # at most 16 characters, however long the field
        CARD_CVV: "XXXX",
        CARD_MONTH: "XX",
        "Description": "XY",  # not a mask: sent as it is
        "PoNumber": "",
    }


def test_prepare_fields_writes_the_configured_status_when_the_org_has_it():
    """A row's Status means "mark imported": it takes the configured status when it is sent."""
    with_status = OrgCapabilities(imported_status_available=True, card_field_lengths={})
    without = OrgCapabilities(imported_status_available=False, card_field_lengths={})

    assert prepare_fields("Order", {"Status": "Imported"}, with_status, "Imported") == {"Status": "Imported"}
    assert prepare_fields("Order", {"Status": "Draft"}, with_status, "Imported") == {"Status": "Imported"}  # queued under a wrong config
    assert prepare_fields("Order", {"Status": "Imported"}, without, "Imported") == {}


def test_prepare_fields_leaves_other_objects_alone():
    org = OrgCapabilities(imported_status_available=False, card_field_lengths={})
    fields = {"Customer_ID__c": "C-1", "Status": "Imported", "Code__c": "XXXX"}

    prepared = prepare_fields("Account", fields, org, "Imported")
    assert prepared == fields and prepared is not fields


@pytest.mark.parametrize(
    ("attempts", "minutes"), [(0, 1), (1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (20, 60)]
)
def test_retry_delay_doubles_up_to_an_hour(attempts: int, minutes: int):
    assert retry_delay(attempts) == timedelta(minutes=minutes)


def outbox_row(sf_object: str, record: str, state: str, code: str | None = None, message: str | None = None) -> Any:
    return SimpleNamespace(sf_object=sf_object, sf_record_id=record, state=state, last_error_code=code, last_error_message=message)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], ("COMPLETE", None)),
        ([outbox_row("Order", "o1", "DONE"), outbox_row("Account", "a1", "DONE")], ("COMPLETE", None)),
        ([outbox_row("Order", "o1", "DONE"), outbox_row("Account", "a1", "PENDING")], ("PROCESSING", None)),
        (
            [outbox_row("Order", "o1", "PENDING", "UNABLE_TO_LOCK_ROW", "locked")],
            ("PROCESSING", "Order: UNABLE_TO_LOCK_ROW: locked (will retry)"),
        ),
        (
            [outbox_row("Order", "o1", "FAILED", "INVALID_FIELD", "bad"), outbox_row("Account", "a1", "PENDING")],
            ("FAILED", "Order: INVALID_FIELD: bad"),
        ),
        ([outbox_row("Account", "a1", "DEAD", "DUPLICATE_VALUE", "taken")], ("FAILED", "Account: DUPLICATE_VALUE: taken (gave up)")),
        # A newer row for the same record supersedes the one that failed.
        ([outbox_row("Order", "o1", "FAILED", "INVALID_FIELD", "bad"), outbox_row("Order", "o1", "DONE")], ("COMPLETE", None)),
    ],
    ids=["no rows", "all done", "one waiting", "transient error", "failed wins", "dead", "superseded failure"],
)
def test_lifecycle_for(rows: list[Any], expected: tuple[str, str | None]):
    assert lifecycle_for(rows) == expected


# ---------------------------------------------------------------------------------------
# Draining the outbox
# ---------------------------------------------------------------------------------------


class FakeSalesforce:
    """What the drainer uses of the hook: ``describe``, ``read_together``, ``update_records``, ``usage.calls``
    and ``calls_made_here``.

    ``answer(record)`` gives the per-record result (an error dict, or None for success);
    ``fail_call`` makes the whole call raise instead.
    """

    def __init__(self, describe: dict | None = None):
        self.usage = ApiUsage()
        self._this_thread = threading.local()
        self._describe = describe or order_describe()
        self.answer: Callable[[dict], dict | None] = lambda record: None
        self.fail_call: BaseException | None = None
        self.calls: list[list[dict]] = []
        self.bulk_rounds: list[list[tuple[str, list[str]]]] = []  # per Bulk round: (object, record ids) per job
        # What queries find, by object: the org's Order statuses; the re-read before sending finds
        # the records changed since they were planned
        self.changed: dict[str, list[dict]] = {
            "Order": [],
            "Account": [],
            "OrderStatus": [
                {"ApiName": "Draft", "StatusCode": "Draft"},
                {"ApiName": "Activated", "StatusCode": "Activated"},
                {"ApiName": "Imported", "StatusCode": "Activated"},
            ],
        }
        self.queries: list[str] = []

    def iter_query_pages(self, soql: str, include_deleted: bool = False):
        self.queries.append(soql)
        self._count(1)
        sobject = soql.split(" FROM ", 1)[1].split()[0]
        yield list(self.changed[sobject])

    def describe(self, sobject: str) -> dict:
        assert sobject == "Order"
        return self._describe

    def read_together(self, queries: Any = (), *, describes: Any = ()) -> list[Any]:
        for sobject in describes:
            self.describe(sobject)
        return [self.iter_query_pages(query.soql, query.include_deleted) for query in queries]

    def update_records(self, records: list[dict]) -> list[dict]:
        if self.fail_call is not None:
            raise self.fail_call
        self.calls.append(records)
        self._count(math.ceil(len(records) / COLLECTION_LIMIT))
        results = []
        for record in records:
            error = self.answer(record)
            results.append({"id": record["id"], "success": error is None, "errors": [error] if error else []})
        return results

    def bulk_update_objects(self, updates: list[tuple[str, list[dict]]]) -> list[list[dict]]:
        """One ingest job per object, as the hook runs them (create, upload, close, a status poll)."""
        if self.fail_call is not None:
            raise self.fail_call
        self.bulk_rounds.append([(sobject, [record["id"] for record in records]) for sobject, records in updates])
        self._count(4 * len(updates))
        return [
            [{"id": r["id"], "success": (error := self.answer(r)) is None, "errors": [error] if error else []} for r in records]
            for _, records in updates
        ]

    def sent(self) -> list[dict]:
        return [record for call in self.calls for record in call]

    def _count(self, calls: int) -> None:
        self.usage.calls += calls
        self._this_thread.calls = self.calls_made_here() + calls

    def calls_made_here(self) -> int:
        return getattr(self._this_thread, "calls", 0)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> sa.Engine:
    """A warehouse with its tables, on SQLite and on PostgreSQL (where the drain marks a batch while
    it re-reads Salesforce, and sets lifecycles from a thread of their own)."""
    if request.param == "sqlite":
        target = request.getfixturevalue("sqlite_engine")
        create_all(target)
        return target
    target = request.getfixturevalue("postgres_warehouse")  # its schema is the engine's search path
    create_all(target.engine, target.schema)
    return target.engine


@pytest.fixture
def loaded(engine: sa.Engine, make_transformed: Callable[..., Any]) -> Callable[..., list[Any]]:
    """Load orders (each with its own Account) so their write-backs sit in the outbox as PENDING."""

    def load(*numbers: int, records: list[Any] | None = None) -> list[Any]:
        records = records or [make_transformed(n, account=n) for n in numbers]
        load_run(engine, "run-load", [records], now=T0, watermark=None)
        return records

    return load


def drain(engine: sa.Engine, hook: FakeSalesforce, *, now: datetime = T0, run_id: str = "run-wb", max_attempts: int = 5,
          sleeps: list[float] | None = None, imported_status: str = "Imported", bulk_threshold: int | None = None,
          only_shipments: bool = False) -> WriteBackSummary:
    drainer = OutboxDrainer(
        engine,
        hook,  # type: ignore[arg-type]
        tables=tables(),
        run_id=run_id,
        order_object="Order",
        imported_status=imported_status,
        card_fields=DEFAULT_CARD_FIELDS,
        max_attempts=max_attempts,
        bulk_threshold=bulk_threshold,
        now=now,
        sleep=(sleeps if sleeps is not None else []).append,
        only_shipments=only_shipments,
    )
    return drainer.drain()


def outbox(engine: sa.Engine) -> list[dict]:
    t = tables().writeback_outbox
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(t).order_by(t.c.id)).mappings()]


def order_row(engine: sa.Engine, transformed: Any) -> dict:
    t = tables().external_orders
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(t).where(t.c.sf_order_id == transformed.order.sf_order_id)).mappings().one())


def lifecycle(engine: sa.Engine, transformed: Any) -> tuple[str, str | None]:
    row = order_row(engine, transformed)
    return row["lifecycle_state"], row["lifecycle_error"]


def fail(record_id: str, error: dict) -> Callable[[dict], dict | None]:
    return lambda record: error if record["id"] == record_id else None


def test_success_marks_rows_done_and_orders_complete(engine, loaded):
    first, second = loaded(1, 2)
    hook = FakeSalesforce()

    summary = drain(engine, hook)

    assert summary.as_dict() == {
        "attempted": 4, "written": 4, "retry_later": 0, "failed": 0, "dead": 0, "calls": 1,
        "status_skipped": False, "errors_by_code": {},
    }
    assert hook.sent() == [
        {"attributes": {"type": "Order"}, "id": first.order.sf_order_id, "Status": "Imported"},
        {"attributes": {"type": "Account"}, "id": first.customer.sf_account_id, "Customer_ID__c": "C-1"},
        {"attributes": {"type": "Order"}, "id": second.order.sf_order_id, "Status": "Imported"},
        {"attributes": {"type": "Account"}, "id": second.customer.sf_account_id, "Customer_ID__c": "C-2"},
    ]
    assert [(r["state"], r["attempts"], r["updated_run_id"], r["last_error_code"]) for r in outbox(engine)] == [
        ("DONE", 1, "run-wb", None)
    ] * 4
    assert lifecycle(engine, first) == lifecycle(engine, second) == ("COMPLETE", None)


def order_rows_updated(engine: sa.Engine, action: Callable[[], Any]) -> int:
    """How many external_orders rows the UPDATE statements of ``action`` changed."""
    counted: list[int] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE") and "external_orders" in statement.split(" SET ")[0]:
            counted.append(cursor.rowcount)

    sa.event.listen(engine, "after_cursor_execute", count)
    try:
        action()
    finally:
        sa.event.remove(engine, "after_cursor_execute", count)
    return sum(counted)


def test_an_order_is_written_once_when_its_rows_go_and_once_when_they_settle_and_not_again(engine, loaded):
    """PROCESSING when its rows are sent; then lifecycle and the Status written in one UPDATE; an
    order already showing its lifecycle is left alone (a new row version costs an entry in every
    index on PostgreSQL, and updated_at keeps saying when the order last changed)."""
    first, second = loaded(1, 2)

    assert order_rows_updated(engine, lambda: drain(engine, FakeSalesforce())) == 2 * 2
    settled = {o.order.sf_order_id: order_row(engine, o) for o in (first, second)}
    assert {(r["lifecycle_state"], r["sf_status"]) for r in settled.values()} == {("COMPLETE", "Imported")}

    drainer = OutboxDrainer(engine, FakeSalesforce(), tables=tables(), run_id="run-again", order_object="Order",  # type: ignore[arg-type]
                            imported_status="Imported", card_fields=DEFAULT_CARD_FIELDS, max_attempts=5, now=T0)
    assert order_rows_updated(engine, lambda: drainer.update_lifecycles(set(settled))) == 0
    assert {o.order.sf_order_id: order_row(engine, o) for o in (first, second)} == settled


@pytest.mark.parametrize("same_outcome_min_rows", [2, 10**9], ids=["shared outcomes by id", "each with its values"])
def test_outcomes_shared_by_several_rows_are_stored_as_those_stored_one_by_one(engine, loaded, monkeypatch, same_outcome_min_rows):
    """Rows sharing an outcome (DONE at the same attempt; the same error) are updated by their ids;
    the rows they are stored with keep their own values: both ways leave the same outbox."""
    monkeypatch.setattr(writeback, "SAME_OUTCOME_MIN_ROWS", same_outcome_min_rows)
    records = loaded(1, 2, 3)
    hook = FakeSalesforce()
    hook.answer = fail(records[2].order.sf_order_id, RULE)

    drain(engine, hook)

    assert [(r["state"], r["attempts"], r["last_error_code"], r["last_error_message"], r["next_attempt_at"], r["updated_run_id"])
            for r in outbox(engine)] == [
        *[("DONE", 1, None, None, None, "run-wb")] * 4,
        ("FAILED", 1, RULE["statusCode"], RULE["message"], T0 + retry_delay(1), "run-wb"),
        ("DONE", 1, None, None, None, "run-wb"),
    ]
    assert [lifecycle(engine, r)[0] for r in records] == ["COMPLETE", "COMPLETE", "FAILED"]


def test_a_bulk_round_sends_its_objects_together_and_keeps_failures_visible(engine, loaded):
    """Above the Bulk threshold a round's Order and Account jobs go out together; a record that
    failed is FAILED with Salesforce's error, the rest DONE, as through collections."""
    first, second = loaded(1, 2)
    hook = FakeSalesforce()
    hook.answer = fail(second.order.sf_order_id, RULE)

    summary = drain(engine, hook, bulk_threshold=0)

    assert hook.bulk_rounds == [[
        ("Order", [first.order.sf_order_id, second.order.sf_order_id]),
        ("Account", [first.customer.sf_account_id, second.customer.sf_account_id]),
    ]]
    assert hook.calls == []  # no collections call
    assert (summary.written, summary.failed, summary.calls) == (3, 1, 8)
    assert [r["state"] for r in outbox(engine)] == ["DONE", "DONE", "FAILED", "DONE"]
    assert lifecycle(engine, first) == ("COMPLETE", None)
    assert lifecycle(engine, second) == ("FAILED", "Order: FIELD_CUSTOM_VALIDATION_EXCEPTION: Status cannot change this week")


def test_the_next_bulk_round_is_sent_while_the_one_before_is_still_at_salesforce(engine, loaded, monkeypatch):
    """An org keeps each Bulk job a while in its queue: the second round is sent (its jobs uploaded
    and closed) before the first round's jobs have finished, and every row is settled as before.
    The first round's jobs finish only once the second round has reached Salesforce: sent one
    after the other, the drain would stop here (and the test fail at the wait)."""
    monkeypatch.setattr(writeback, "BULK_JOB_RECORDS", 2)
    orders = loaded(1, 2, 3)
    second_round_sent = threading.Event()

    class SlowJobs(FakeSalesforce):
        def bulk_update_objects(self, updates):
            if not self.bulk_rounds:
                super_results = super().bulk_update_objects(updates)
                assert second_round_sent.wait(timeout=60), "the second round waited for the first to finish"
                return super_results
            second_round_sent.set()
            return super().bulk_update_objects(updates)

    hook = SlowJobs()
    summary = drain(engine, hook, bulk_threshold=0)

    assert [[sobject for sobject, _ in jobs] for jobs in hook.bulk_rounds] == [["Order", "Account"]] * 3
    assert (summary.attempted, summary.written, summary.calls) == (6, 6, 3 * 8)  # each round's own calls
    assert [r["state"] for r in outbox(engine)] == ["DONE"] * 6
    assert {lifecycle(engine, o) for o in orders} == {("COMPLETE", None)}


def test_a_round_writing_a_record_the_round_in_flight_writes_waits_for_it_to_settle(engine, loaded, monkeypatch):
    """Two rows for one Account (an older one still due, a newer one queued after it) in
    consecutive rounds: the second round goes only once the first has settled, so Salesforce
    gets the Account's writes in the order they were queued and keeps the newer value."""
    monkeypatch.setattr(writeback, "BULK_JOB_RECORDS", 3)
    first, _ = loaded(1, 2)
    w = tables().writeback_outbox
    older = next(r for r in outbox(engine) if r["sf_object"] == "Account" and r["sf_record_id"] == first.customer.sf_account_id)
    with engine.begin() as conn:
        conn.execute(sa.insert(w).values({**{k: v for k, v in older.items() if k != "id"}, "fields": {"Customer_ID__c": "C-1 newer"}}))
    # rounds: [Order 1, Account 1, Order 2], then [Account 2, Account 1 (newer)]
    events: list[str] = []
    first_round_answering = threading.Event()
    settle = writeback.OutboxDrainer._settle
    mark_sending = writeback.OutboxDrainer._mark_sending

    def settling(self, batch):
        events.append(f"settle {len(batch.rows)} rows")
        first_round_answering.set()
        return settle(self, batch)

    def marking(self, rows):
        events.append(f"mark {len(rows)} rows")
        first_round_answering.set()
        mark_sending(self, rows)

    monkeypatch.setattr(writeback.OutboxDrainer, "_settle", settling)
    monkeypatch.setattr(writeback.OutboxDrainer, "_mark_sending", marking)

    account_values: list[str] = []

    class FirstRoundWaits(FakeSalesforce):
        def bulk_update_objects(self, updates):
            if not self.bulk_rounds:  # answers once the drain settles it, or marks the next round
                first_round_answering.clear()
                assert first_round_answering.wait(timeout=60)
                events.append("first round answered")
            account_values.extend(r["Customer_ID__c"] for sobject, records in updates if sobject == "Account" for r in records)
            return super().bulk_update_objects(updates)

    drain(engine, FirstRoundWaits(), bulk_threshold=0)

    assert events == ["mark 3 rows", "settle 3 rows", "first round answered", "mark 2 rows", "settle 2 rows"]
    assert account_values == ["C-1", "C-2", "C-1 newer"]
    assert [r["state"] for r in outbox(engine)] == ["DONE"] * 5


def test_nothing_due_sends_nothing(engine, loaded):
    loaded(1)
    hook = FakeSalesforce()
    drain(engine, hook)

    again = drain(engine, hook, now=T0 + timedelta(hours=1))

    assert len(hook.calls) == 1
    assert (again.attempted, again.calls) == (0, 0)


def test_transient_error_is_retried_in_the_run_then_left_pending(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce()
    hook.answer = fail(order.order.sf_order_id, LOCKED)
    sleeps: list[float] = []

    summary = drain(engine, hook, sleeps=sleeps)

    assert sleeps == [1.0, 2.0]  # two in-run retries, backing off
    assert [len(call) for call in hook.calls] == [2, 1, 1]  # the Account went through the first time
    assert (summary.written, summary.retry_later, summary.failed, summary.dead) == (1, 1, 0, 0)
    assert summary.errors_by_code == {"UNABLE_TO_LOCK_ROW": 3}
    order_outbox, account_outbox = outbox(engine)
    # the in-run retries are part of this run's one attempt
    assert (order_outbox["state"], order_outbox["attempts"], order_outbox["last_error_code"]) == ("PENDING", 1, "UNABLE_TO_LOCK_ROW")
    assert order_outbox["next_attempt_at"] == T0 + retry_delay(1)
    assert account_outbox["state"] == "DONE"
    state, error = lifecycle(engine, order)
    assert state == "PROCESSING"
    assert error == f"Order: UNABLE_TO_LOCK_ROW: {LOCKED['message']} (will retry)"

    # Once the lock is gone, a later run writes it and the order completes.
    hook.answer = lambda record: None
    later = drain(engine, hook, now=T0 + timedelta(hours=1), run_id="run-wb-2")
    assert later.written == 1
    assert outbox(engine)[0]["state"] == "DONE"
    assert lifecycle(engine, order) == ("COMPLETE", None)


def test_a_record_locked_through_two_runs_is_not_given_up(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce()
    hook.answer = fail(order.order.sf_order_id, LOCKED)

    drain(engine, hook, sleeps=[])
    second = drain(engine, hook, now=T0 + timedelta(hours=1), run_id="run-wb-2", sleeps=[])

    assert second.dead == 0 and second.retry_later == 1
    assert (outbox(engine)[0]["state"], outbox(engine)[0]["attempts"]) == ("PENDING", 2)


def test_permanent_error_fails_is_retried_later_and_given_up_after_max_attempts(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce()
    hook.answer = fail(order.order.sf_order_id, RULE)
    expected_error = f"Order: FIELD_CUSTOM_VALIDATION_EXCEPTION: {RULE['message']}"

    first = drain(engine, hook, max_attempts=3)
    assert (first.written, first.failed, first.dead, len(hook.calls)) == (1, 1, 0, 1)  # not retried in the run
    row = outbox(engine)[0]
    assert (row["state"], row["attempts"], row["last_error_message"]) == ("FAILED", 1, RULE["message"])
    assert row["next_attempt_at"] == T0 + timedelta(minutes=1)
    assert lifecycle(engine, order) == ("FAILED", expected_error)

    # Not due yet: the backoff holds it back.
    assert drain(engine, hook, now=T0 + timedelta(seconds=30), max_attempts=3).attempted == 0

    second = drain(engine, hook, now=T0 + timedelta(minutes=2), run_id="run-wb-2", max_attempts=3)
    assert (second.attempted, second.failed) == (1, 1)
    assert outbox(engine)[0]["attempts"] == 2

    third = drain(engine, hook, now=T0 + timedelta(minutes=10), run_id="run-wb-3", max_attempts=3)
    assert (third.attempted, third.failed, third.dead) == (1, 0, 1)
    row = outbox(engine)[0]
    assert (row["state"], row["attempts"], row["next_attempt_at"]) == ("DEAD", 3, None)
    assert lifecycle(engine, order) == ("FAILED", f"{expected_error} (gave up)")

    # A dead row is never sent again.
    calls = len(hook.calls)
    assert drain(engine, hook, now=T0 + timedelta(days=1), run_id="run-wb-4", max_attempts=3).attempted == 0
    assert len(hook.calls) == calls


def test_a_failed_record_written_by_a_later_run_completes_the_order(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce()
    hook.answer = fail(order.order.sf_order_id, RULE)
    drain(engine, hook)

    hook.answer = lambda record: None
    drain(engine, hook, now=T0 + timedelta(minutes=5), run_id="run-wb-2")

    assert [r["state"] for r in outbox(engine)] == ["DONE", "DONE"]
    assert lifecycle(engine, order) == ("COMPLETE", None)


def test_an_order_loaded_again_with_nothing_new_to_write_back_takes_the_lifecycle_its_rows_say(engine, loaded, make_transformed):
    """The load sets a changed order READY. With nothing new to queue (its write was made already,
    after the version read: the load drops it), no row of the write-back's touches it: its
    lifecycle is still set from its earlier rows, COMPLETE or FAILED, and not left READY."""
    done, dead = loaded(1, 2)
    hook = FakeSalesforce()
    hook.answer = fail(dead.order.sf_order_id, RULE)
    drain(engine, hook, max_attempts=1)
    assert lifecycle(engine, done) == ("COMPLETE", None) and lifecycle(engine, dead)[0] == "FAILED"

    again = [make_transformed(n, account=n, notes="changed in Salesforce", write_backs=False) for n in (1, 2)]
    load_run(engine, "run-load-2", [again], now=T0 + timedelta(minutes=5), watermark=None)
    assert lifecycle(engine, done) == lifecycle(engine, dead) == ("READY", None)

    summary = drain(engine, FakeSalesforce(), now=T0 + timedelta(minutes=6), run_id="run-wb-2", max_attempts=1)

    assert summary.attempted == 0
    assert lifecycle(engine, done) == ("COMPLETE", None)
    assert lifecycle(engine, dead) == ("FAILED", f"Order: FIELD_CUSTOM_VALIDATION_EXCEPTION: {RULE['message']} (gave up)")


def test_the_imported_status_is_dropped_when_the_org_lacks_it(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce(order_describe(statuses=("Draft", "Activated")))

    summary = drain(engine, hook)

    assert summary.status_skipped is True
    # The Order row had only the status to write: nothing of it is sent, and it counts as done.
    assert hook.sent() == [{"attributes": {"type": "Account"}, "id": order.customer.sf_account_id, "Customer_ID__c": "C-1"}]
    assert [r["state"] for r in outbox(engine)] == ["DONE", "DONE"]
    # the Order's row says why its Status was not sent, so the warehouse never takes it for written
    assert [r["last_error_code"] for r in outbox(engine)] == ["STATUS_NOT_IN_PICKLIST", None]
    assert lifecycle(engine, order) == ("COMPLETE", None)


def test_only_the_imports_drain_sends_again_the_status_left_alone_once_the_org_has_it(engine, loaded):
    """Once the admin adds the imported status, the import's rows written without it are due again,
    in the import's next drain. The shipments DAG's drain (shipment rows only) leaves them alone: it
    would make them due without sending them, and the import's drain would no longer know they were."""
    [order] = loaded(1)
    drain(engine, FakeSalesforce(order_describe(statuses=("Draft", "Activated"))))
    left_alone = [(r["state"], r["last_error_code"]) for r in outbox(engine)]
    assert left_alone == [("DONE", "STATUS_NOT_IN_PICKLIST"), ("DONE", None)]

    shipments_drain = FakeSalesforce()  # the org has the value now
    drain(engine, shipments_drain, now=T0 + timedelta(minutes=5), run_id="ship-1", only_shipments=True)

    assert shipments_drain.sent() == []
    assert [(r["state"], r["last_error_code"]) for r in outbox(engine)] == left_alone

    import_drain = FakeSalesforce()
    summary = drain(engine, import_drain, now=T0 + timedelta(minutes=6), run_id="run-wb-2")

    assert import_drain.sent() == [{"attributes": {"type": "Order"}, "id": order.order.sf_order_id, "Status": "Imported"}]
    assert (summary.attempted, summary.written) == (1, 1)
    assert [(r["state"], r["last_error_code"]) for r in outbox(engine)] == [("DONE", None), ("DONE", None)]
    assert lifecycle(engine, order) == ("COMPLETE", None)
    assert drain(engine, FakeSalesforce(), now=T0 + timedelta(minutes=7), run_id="run-wb-3").attempted == 0  # caught up once


def test_card_masks_are_sized_to_the_org_fields(engine, loaded, make_transformed):
    base = make_transformed(1)
    order_id = base.order.sf_order_id
    fields = {"Status": "Imported", **dict.fromkeys(DEFAULT_CARD_FIELDS, MASK)}
    record = replace(base, write_backs=(WriteBack("Order", order_id, fields, order_id, "mark_imported+x_out_card"),))
    loaded(records=[record])
    # The org has no expiration-year field, and short CVV and month fields.
    hook = FakeSalesforce(order_describe(card_lengths={CARD_NUMBER: 20, CARD_CVV: 4, CARD_MONTH: 2}))

    drain(engine, hook)

    assert hook.sent() == [
        {"attributes": {"type": "Order"}, "id": order_id, "Status": "Imported", CARD_NUMBER: MASK, CARD_CVV: "XXXX", CARD_MONTH: "XX"}
    ]
    assert outbox(engine)[0]["fields"] == fields  # the outbox keeps what was asked for


def test_a_call_that_raises_leaves_rows_pending(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce()
    hook.fail_call = SalesforceApiError("Salesforce answered 403 REQUEST_LIMIT_EXCEEDED", code="REQUEST_LIMIT_EXCEEDED", status=403)

    with pytest.raises(SalesforceApiError):
        drain(engine, hook)

    assert [(r["state"], r["attempts"]) for r in outbox(engine)] == [("PENDING", 0), ("PENDING", 0)]
    assert lifecycle(engine, order)[0] == "PROCESSING"

    hook.fail_call = None
    assert drain(engine, hook, run_id="run-wb-2").written == 2
    assert lifecycle(engine, order) == ("COMPLETE", None)


class RereadRefused(FakeSalesforce):
    """Salesforce refuses the re-read before sending (the query of the orders changed since planning)."""

    def iter_query_pages(self, soql: str, include_deleted: bool = False):
        if " FROM Order " in soql:
            raise SalesforceApiError("Salesforce answered 503 SERVER_UNAVAILABLE", code="SERVER_UNAVAILABLE", status=503)
        yield from super().iter_query_pages(soql, include_deleted)


def test_a_batch_whose_reread_fails_is_left_pending_and_sent_next_run(engine, loaded):
    [order] = loaded(1)

    with pytest.raises(SalesforceApiError, match="SERVER_UNAVAILABLE"):
        drain(engine, RereadRefused())

    assert [(r["state"], r["attempts"]) for r in outbox(engine)] == [("PENDING", 0), ("PENDING", 0)]
    hook = FakeSalesforce()
    assert drain(engine, hook, run_id="run-wb-2").written == 2
    assert lifecycle(engine, order) == ("COMPLETE", None)


def test_a_batch_is_marked_while_salesforce_is_reread_on_postgres_and_after_it_on_sqlite(engine, loaded, monkeypatch):
    loaded(1, 2)
    marked = threading.Event()
    mark_sending = writeback.OutboxDrainer._mark_sending

    def mark_then_say_so(self, rows):
        mark_sending(self, rows)
        marked.set()

    monkeypatch.setattr(writeback.OutboxDrainer, "_mark_sending", mark_then_say_so)
    seen_during_reread: list[set[str]] = []

    class Reread(FakeSalesforce):
        def iter_query_pages(self, soql: str, include_deleted: bool = False):
            if " FROM Order " in soql:
                if engine.dialect.name == "postgresql":  # the re-read waits for the batch to be marked
                    assert marked.wait(timeout=60), "the batch was not marked while Salesforce was re-read"
                seen_during_reread.append({r["state"] for r in outbox(engine)})
            yield from super().iter_query_pages(soql, include_deleted)

    assert drain(engine, Reread()).written == 4
    expected = "PROCESSING" if engine.dialect.name == "postgresql" else "PENDING"
    assert seen_during_reread == [{expected}]


class Crash(BaseException):
    """The worker dies mid-call: nothing after the call runs."""


def test_rows_left_processing_by_a_crashed_run_are_sent_again(engine, loaded):
    [order] = loaded(1)
    hook = FakeSalesforce()
    hook.fail_call = Crash()
    with pytest.raises(Crash):
        drain(engine, hook)
    assert [r["state"] for r in outbox(engine)] == ["PROCESSING", "PROCESSING"]

    hook.fail_call = None
    summary = drain(engine, hook, run_id="run-wb-2")

    assert summary.written == 2
    assert {r["id"] for r in hook.sent()} == {order.order.sf_order_id, order.customer.sf_account_id}
    assert [(r["state"], r["attempts"]) for r in outbox(engine)] == [("DONE", 1), ("DONE", 1)]
    assert lifecycle(engine, order) == ("COMPLETE", None)


def test_450_rows_go_out_in_three_calls_of_at_most_200(engine, loaded):
    loaded(*range(1, 226))  # an Order and an Account row each
    hook = FakeSalesforce()

    summary = drain(engine, hook)

    assert len(outbox(engine)) == 450
    assert [len(call) for call in hook.calls] == [200, 200, 50]
    assert len({r["id"] for r in hook.sent()}) == 450
    assert (summary.attempted, summary.written, summary.calls) == (450, 450, 3)
    orders = tables().external_orders
    with engine.connect() as conn:
        states = conn.execute(sa.select(orders.c.lifecycle_state, sa.func.count()).group_by(orders.c.lifecycle_state)).all()
    assert [tuple(row) for row in states] == [("COMPLETE", 225)]


def test_a_call_never_names_a_record_twice_an_import_row_and_a_shipment_row_of_one_order_go_in_turn(engine, loaded):
    """An Order's import row (Status) and a shipment's row (tracking) due together: Salesforce
    refuses a list naming an Id twice (and would apply the two in no set order). The batch ends
    before the second; it goes in the next call, once the first has settled."""
    (order,) = loaded(1)
    order_id = order.order.sf_order_id
    with engine.begin() as conn:
        conn.execute(sa.insert(tables().writeback_outbox).values(
            sf_object="Order", sf_record_id=order_id, sf_order_id=order_id, action="shipment:order_fields", shipment_key="SHIP-1",
            fields={"Tracking_Number__c": "1ZTURN"}, state="PENDING", attempts=0, created_run_id="ship-1", updated_run_id="ship-1", created_at=T0,
            updated_at=T0,
        ))
    hook = FakeSalesforce()

    summary = drain(engine, hook)

    assert [[r["id"] for r in call] for call in hook.calls] == [[order_id, order.customer.sf_account_id], [order_id]]
    assert hook.calls[0][0]["Status"] == "Imported" and hook.calls[1][0]["Tracking_Number__c"] == "1ZTURN"
    assert {r["state"] for r in outbox(engine)} == {"DONE"} and summary.written == 3


def test_a_failed_call_keeps_the_outcomes_of_the_batches_around_it(engine, loaded):
    # Batches are sent one at a time while the outcomes of the one before are recorded: when a
    # call fails, the batch before it is recorded and the batch already sent after it too.
    loaded(*range(1, 226))  # 450 rows: three calls
    hook = FakeSalesforce()
    update_records = hook.update_records

    def second_call_fails(records: list[dict]) -> list[dict]:
        if len(hook.calls) == 1 and not getattr(hook, "failed_once", False):
            hook.failed_once = True
            raise SalesforceApiError("Salesforce answered 503", code="SERVER_UNAVAILABLE", status=503)
        return update_records(records)

    hook.update_records = second_call_fails  # type: ignore[method-assign]

    with pytest.raises(SalesforceApiError):
        drain(engine, hook)

    states = [r["state"] for r in outbox(engine)]
    assert states[:200] == ["DONE"] * 200
    assert states[200:400] == ["PENDING"] * 200
    assert states[400:] == ["DONE"] * 50  # already sent when the failure was seen
    assert drain(engine, hook, run_id="run-wb-2").attempted == 200
    assert {r["state"] for r in outbox(engine)} == {"DONE"}


# ---- records changed in Salesforce after the import read them -----------------------------


def test_an_order_set_back_to_draft_after_planning_keeps_its_status_and_still_gets_its_card_fields_masked(engine, loaded):
    first, second = loaded(1, 2)
    with engine.begin() as conn:  # the first order had card data: its row X-es the card fields out too
        t = tables().writeback_outbox
        conn.execute(
            sa.update(t)
            .where(t.c.sf_record_id == first.order.sf_order_id)
            .values(fields={"Status": "Imported", "Credit_Card_Number__c": "XXXXXXXXXXXXXXXX"})
        )
    hook = FakeSalesforce()
    hook.changed["Order"] = [{"Id": first.order.sf_order_id, "StatusCode": "Draft", "IsDeleted": False}]

    summary = drain(engine, hook)

    sent = {record["id"]: record for record in hook.sent()}
    assert sent[first.order.sf_order_id] == {
        "attributes": {"type": "Order"}, "id": first.order.sf_order_id, "Credit_Card_Number__c": "XXXXXXXXXXXXXXXX",
    }
    assert sent[second.order.sf_order_id]["Status"] == "Imported"
    row = next(r for r in outbox(engine) if r["sf_record_id"] == first.order.sf_order_id)
    assert (row["state"], row["last_error_code"]) == ("DONE", "ORDER_DEACTIVATED")
    assert "set back to Draft in Salesforce after the import read it" in row["last_error_message"]
    assert summary.written == 4
    # the re-read asks only for orders changed since the planning run started (less the overlap)
    assert any("FROM Order WHERE SystemModstamp >=" in q and "StatusCode != 'Activated'" in q for q in hook.queries)


def test_an_order_deleted_after_planning_is_not_written(engine, loaded):
    first, second = loaded(1, 2)
    hook = FakeSalesforce()
    hook.changed["Order"] = [{"Id": first.order.sf_order_id, "StatusCode": "Activated", "IsDeleted": True}]

    summary = drain(engine, hook)

    assert first.order.sf_order_id not in {record["id"] for record in hook.sent()}
    row = next(r for r in outbox(engine) if r["sf_record_id"] == first.order.sf_order_id)
    assert (row["state"], row["last_error_code"]) == ("DEAD", "ORDER_DELETED")
    assert summary.errors_by_code == {"ORDER_DELETED": 1}
    assert lifecycle(engine, second) == ("COMPLETE", None)


def test_a_customer_id_someone_set_on_the_account_after_the_extract_is_never_overwritten(engine, loaded):
    first, second = loaded(1, 2)
    hook = FakeSalesforce()
    hook.changed["Account"] = [
        {"Id": first.customer.sf_account_id, "Customer_ID__c": "ERP-77"},  # set by someone else
        {"Id": second.customer.sf_account_id, "Customer_ID__c": "C-2"},  # the same value: nothing to fear
    ]

    drain(engine, hook)

    sent = {record["id"] for record in hook.sent()}
    assert first.customer.sf_account_id not in sent and second.customer.sf_account_id in sent
    row = next(r for r in outbox(engine) if r["sf_record_id"] == first.customer.sf_account_id)
    assert (row["state"], row["last_error_code"]) == ("DEAD", "CUSTOMER_ID_CHANGED")
    assert "set to 'ERP-77' in Salesforce after the import read it" in row["last_error_message"]
    assert lifecycle(engine, first)[0] == "FAILED"
    assert any("FROM Account WHERE SystemModstamp >=" in q and "Customer_ID__c != null" in q for q in hook.queries)


class SalesforceThatTellsEachChangeOnce(FakeSalesforce):
    """As Salesforce answers the checks before each batch: each looks back only to the one before
    (less an overlap), so a change the first check found is not found again by a later one."""

    def iter_query_pages(self, soql: str, include_deleted: bool = False):
        yield from super().iter_query_pages(soql, include_deleted)
        sobject = soql.split(" FROM ", 1)[1].split()[0]
        if sobject in ("Order", "Account"):
            self.changed[sobject] = []


def test_a_change_the_first_check_found_still_holds_for_a_record_sent_in_a_later_batch(engine, loaded):
    """A long drain (many batches, or a write-back task retried later): an order set back to Draft
    and a customer id someone set, both seen by the first check, hold for their records although
    those go in a later batch, after checks that no longer see the change."""
    orders = loaded(*range(1, COLLECTION_LIMIT))  # two rows an order: two collection batches at least
    late = orders[-1]
    hook = SalesforceThatTellsEachChangeOnce()
    hook.changed["Order"] = [{"Id": late.order.sf_order_id, "StatusCode": "Draft", "IsDeleted": False}]
    hook.changed["Account"] = [{"Id": late.customer.sf_account_id, "Customer_ID__c": "ERP-4711"}]

    drain(engine, hook)

    assert len(hook.calls) >= 2 and late.order.sf_order_id not in {r["id"] for r in hook.calls[0]}
    sent = {record["id"]: record for record in hook.sent()}
    assert "Status" not in sent.get(late.order.sf_order_id, {})  # (nothing else to write: not sent at all)
    assert late.customer.sf_account_id not in sent
    codes = {r["sf_record_id"]: r["last_error_code"] for r in outbox(engine)}
    assert codes[late.order.sf_order_id] == "ORDER_DEACTIVATED" and codes[late.customer.sf_account_id] == "CUSTOMER_ID_CHANGED"
    assert sent[orders[0].order.sf_order_id]["Status"] == "Imported"


def test_an_imported_status_of_the_draft_category_is_refused_before_anything_is_sent(engine, loaded):
    loaded(1, 2)
    hook = FakeSalesforce()

    with pytest.raises(ImportedStatusRefused) as refused:
        drain(engine, hook, imported_status="Draft")

    message = str(refused.value)
    assert message.startswith("imported_status: 'Draft' is in the org's Draft status category")
    assert "this org's: Activated, Imported" in message
    assert hook.sent() == []
    assert {r["state"] for r in outbox(engine)} == {"PENDING"}


def test_queued_rows_take_the_imported_status_the_config_names_when_they_are_sent(engine, loaded):
    """A corrected imported_status applies to the rows queued while it was wrong."""
    first, _ = loaded(1, 2)
    hook = FakeSalesforce()
    hook.changed["OrderStatus"].append({"ApiName": "Synced", "StatusCode": "Activated"})
    hook._describe = order_describe(statuses=("Draft", "Activated", "Imported", "Synced"))

    drain(engine, hook, imported_status="Synced")

    assert {r["Status"] for r in hook.sent() if r["attributes"]["type"] == "Order"} == {"Synced"}


def test_an_org_that_does_not_say_who_we_are_leaves_the_echo_to_be_read_back(engine, loaded):
    """userinfo refused: the write-back still writes everything and keeps no span of its own writes
    (the next run then reads the orders written, as before the no-echo change)."""
    from salesforce_orders.own_writes import OWN_WRITES_KEY
    from salesforce_orders.salesforce import SalesforceApiError

    class NoUserinfo(FakeSalesforce):
        def integration_user_id(self) -> str:
            raise SalesforceApiError("Salesforce answered 403 to userinfo", status=403)

    loaded(1, 2)
    hook = NoUserinfo()
    drainer = OutboxDrainer(
        engine, hook, tables=tables(), run_id="run-wb", order_object="Order", imported_status="Imported",  # type: ignore[arg-type]
        card_fields=DEFAULT_CARD_FIELDS, max_attempts=5, now=T0, own_writes_table=tables().sync_state,
    )

    summary = drainer.drain()

    assert summary.written == len(outbox(engine)) > 0
    assert not any("LastModifiedById" in q for q in hook.queries)
    s = tables().sync_state
    with engine.connect() as conn:
        assert conn.execute(sa.select(s.c.value).where(s.c.key == OWN_WRITES_KEY)).scalar() is None


@pytest.mark.postgres
def test_a_batch_marked_while_lifecycles_are_set_leaves_their_orders_to_them(postgres_warehouse, make_transformed, monkeypatch):
    """An order with rows in the first and the third batch: the third is marked while the first's
    lifecycles are being set from their thread. Marking leaves that order alone, so the two
    transactions never wait on the same row, and the order ends COMPLETE."""
    target = postgres_warehouse
    create_all(target.engine, target.schema)
    engine = target.engine
    records = [make_transformed(n, account=n) for n in range(1, 251)]  # outbox ids 1..500: batches of 200
    load_run(engine, "run-load", [records], now=T0, watermark=None)
    twice = records[0].order.sf_order_id  # rows 1 and 2 (first batch), and the one added here (third)
    outbox_table = tables().writeback_outbox
    with engine.begin() as conn:
        conn.execute(outbox_table.insert().values(
            sf_object="Order", sf_record_id=twice, sf_order_id=twice, action="mark_imported", fields={"Status": "Imported"},
            state="PENDING", attempts=0, created_run_id="run-later", updated_run_id="run-later", created_at=T0, updated_at=T0,
        ))
    third_marked = threading.Event()
    marked_with: list[str] = []  # the order ids bound to each marking's UPDATE of the orders
    set_lifecycles = writeback._LifecycleSetter._set
    mark_sending = writeback.OutboxDrainer._mark_sending

    def set_once_the_third_is_marked(self, order_ids):
        if twice in order_ids:
            assert third_marked.wait(timeout=60), "the third batch was not marked while these lifecycles waited"
        set_lifecycles(self, order_ids)

    def mark(self, rows):
        mark_sending(self, rows)
        if any(r.id > 500 for r in rows):
            third_marked.set()

    def bound(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("UPDATE") and "external_orders" in statement.split(" SET ")[0] and "lifecycle_state IN" in statement:
            marked_with.append(str(parameters))

    monkeypatch.setattr(writeback._LifecycleSetter, "_set", set_once_the_third_is_marked)
    monkeypatch.setattr(writeback.OutboxDrainer, "_mark_sending", mark)
    sa.event.listen(engine, "before_cursor_execute", bound)
    try:
        summary = drain(engine, FakeSalesforce())
    finally:
        sa.event.remove(engine, "before_cursor_execute", bound)

    assert summary.written == 501 and len(marked_with) == 3
    assert twice in marked_with[0] and twice not in marked_with[2]
    assert lifecycle(engine, records[0]) == ("COMPLETE", None)
