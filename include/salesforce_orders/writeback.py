"""Write-back: drain the warehouse outbox into Salesforce with sObject Collections.

The load step writes one outbox row per Salesforce record to change (the Order: Status and
card fields; the Account: the customer id) in the same transaction as the orders. This step
sends them, 200 records a call with ``allOrNone=false``, and keeps every record's outcome:

- success -> ``DONE``;
- a transient error (``UNABLE_TO_LOCK_ROW``, ...) -> retried a few times within the run, then left
  ``PENDING`` for the next run;
- a permanent error (validation rule, bad value, ...) -> ``FAILED`` with Salesforce's code and
  message; later runs try again (the data may have been fixed) until ``writeback_max_attempts``,
  then ``DEAD``.

Rows are marked ``PROCESSING`` (committed) before each call, so a crash between the call and
the bookkeeping leaves them ``PROCESSING``: the next run sends them again, which is harmless
because every write is an idempotent field update.

Batches go to Salesforce from threads of their own, at most two at a time: a batch is sent as soon
as it is marked, while the one before it may still be at Salesforce (a Bulk job spends seconds to
minutes in the org's queue; two take about as long as one), and the outcomes of the one before
are recorded meanwhile. A batch that writes a record the batch in flight writes waits for it to
settle, so a record's writes reach Salesforce in the order they were queued. When a call fails,
the batch already sent after it is still recorded before the error is raised. A Bulk batch sends
one ingest job per object (Order, Account), all closed before any is waited for.

Shipment rows (``shipment_key`` set; see ``shipments.py``) go through the same steps; a row with an
``external_id_field`` is upserted by that field (the record it created is kept in
``sf_record_id``). They do not move the order's lifecycle: a shipment has its own sync status.

No echo (``own_writes.py``): the import's write-backs keep the span of the orders they wrote, so
that the next run does not read them back; the check before each batch also finds the orders
someone else changed since the import read them (those are read again).

Each order's lifecycle follows its rows: ``PROCESSING`` while any is in flight or waiting,
``COMPLETE`` when all are done, ``FAILED`` (with the error) when one failed or is dead. The
lifecycles of a settled batch's orders are set while the next batch is at Salesforce (on PostgreSQL
from a thread and connection of their own, while the next batch is marked); the last
batch's, and those of orders with rows in a batch still to settle, at the end. An order's row is
written at most twice a drain: ``PROCESSING`` when its rows go, then its lifecycle and the Status
written in one UPDATE, skipped when it already shows them (every write of a row is a new version
with an entry in each of its indexes, and ``updated_at`` says when it last changed).
"""

from __future__ import annotations

import json
import logging
import operator
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from . import faultpoints
from .model import COMPLETE, FAILED, PROCESSING, READY
from .redaction import mask_card_numbers
from .salesforce import COLLECTION_LIMIT, Query, SalesforceOrdersHook
from .warehouse.writes import in_batches, one_of, select_in, update_rows

log = logging.getLogger(__name__)

PENDING, SENDING, DONE, ROW_FAILED, DEAD = "PENDING", "PROCESSING", "DONE", "FAILED", "DEAD"
TRANSIENT_ERRORS = frozenset(
    {
        "UNABLE_TO_LOCK_ROW",
        "SERVER_UNAVAILABLE",
        "REQUEST_RUNNING_TOO_LONG",
        "QUERY_TIMEOUT",
        "API_TEMPORARILY_UNAVAILABLE",
        "BULK_UNPROCESSED",
    }
)
BULK_JOB_RECORDS = 25_000  # outbox rows per Bulk ingest round: ~6 calls an object a round, bounded memory
BATCHES_AT_SALESFORCE = 2  # sent and not yet settled: the next batch goes while the last is processed
IN_RUN_RETRIES = 2
IN_RUN_RETRY_DELAY = 1.0  # seconds; doubled on each round
CARD_MASK_CHAR = "X"
ACTIVATED_CATEGORY = "Activated"
CARD_MASK_MAX = 16
SAME_OUTCOME_MIN_ROWS = 100  # rows with the same outcome stored by their ids alone; fewer, with their values
# What an outcome (_outcome, _with_change, _not_sent) sets on its outbox row besides the id.
OUTCOME_COLUMNS = ("state", "attempts", "last_error_code", "last_error_message", "next_attempt_at")
_outcome_values = operator.itemgetter(*OUTCOME_COLUMNS)


@dataclass
class WriteBackSummary:
    attempted: int = 0
    written: int = 0
    retry_later: int = 0
    failed: int = 0
    dead: int = 0
    calls: int = 0
    status_skipped: bool = False  # the org's Status picklist has no imported status
    errors_by_code: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted,
            "written": self.written,
            "retry_later": self.retry_later,
            "failed": self.failed,
            "dead": self.dead,
            "calls": self.calls,
            "status_skipped": self.status_skipped,
            "errors_by_code": dict(sorted(self.errors_by_code.items())),
        }


@dataclass
class _Round:
    """One batch of outbox rows on its way: the rows, what is sent for them, and the call in flight."""

    rows: list[Any]
    payloads: list[tuple[Any, dict]]  # (row, record sent)
    nothing_to_write: list[Any]  # rows with nothing left to write for this org: done
    delivery: Future | None  # (results, API calls)
    changed: dict[int, _Changed] = field(default_factory=dict)  # by row id: the record changed since it was planned


@dataclass(frozen=True)
class _Changed:
    """A record that someone changed in Salesforce after the import read it."""

    code: str
    message: str
    send_the_rest: bool  # the other fields (card X-outs) still go; else the row is not sent


# What a write-back may not overwrite, and why (the row's outbox code).
STATUS_LEFT_ALONE = {"ORDER_DEACTIVATED": "set back to Draft", "ORDER_DELETED": "deleted"}
STATUS_NOT_IN_PICKLIST = "STATUS_NOT_IN_PICKLIST"  # a row sent without Status: the org has no imported status
STATUS_SKIPPED_KEY = "writeback.status_not_in_picklist"  # sync_state: a write-back left Status alone (when)


@dataclass(frozen=True)
class OrgCapabilities:
    """What the org's describe says about the fields we write."""

    imported_status_available: bool
    card_field_lengths: dict[str, int]  # only the configured card fields the org has

    @classmethod
    def from_describe(cls, describe: dict, imported_status: str, card_fields: Iterable[str]) -> OrgCapabilities:
        fields = {f["name"]: f for f in describe.get("fields", [])}
        status = fields.get("Status", {})
        values = {p["value"] for p in status.get("picklistValues", []) if p.get("active", True)}
        lengths = {name: int(fields[name].get("length") or CARD_MASK_MAX) for name in card_fields if name in fields}
        return cls(imported_status_available=imported_status in values, card_field_lengths=lengths)


def prepare_fields(sf_object: str, fields: dict[str, Any], org: OrgCapabilities, imported_status: str) -> dict[str, Any]:
    """Adjust an outbox row's fields to the org: drop an unavailable status, size card masks."""
    if sf_object != "Order":
        return dict(fields)
    prepared: dict[str, Any] = {}
    for name, value in fields.items():
        if name == "Status":
            # The row asks for "mark imported": the status the config names now (a corrected
            # imported_status applies to rows queued before the correction).
            if not org.imported_status_available:
                continue
            value = imported_status
        if isinstance(value, str) and value and not value.strip(CARD_MASK_CHAR):  # all X's: a card mask
            if name not in org.card_field_lengths:
                continue  # the org has no such card field
            value = CARD_MASK_CHAR * min(org.card_field_lengths[name], CARD_MASK_MAX)
        prepared[name] = value
    return prepared


class ImportedStatusRefused(ValueError):
    """The configured imported status is not in the org's Activated category (a config error)."""


def _is_shipment(row: Any) -> bool:
    return getattr(row, "shipment_key", None) is not None


def _moves_order(row: Any, order_object: str) -> bool:
    """Whether writing the row moves its order's ``SystemModstamp``: a write of the Order, or a
    shipment's write of one of its Order Products (rolled up into the order, a write of it too).
    (A shipment record, upserted by external id, is a record of its own.)"""
    return row.sf_object == order_object or (_is_shipment(row) and not row.external_id_field)


def _fields(row: Any) -> dict[str, Any]:
    return row.fields if isinstance(row.fields, dict) else json.loads(row.fields or "{}")


def _record_of(row: Any) -> tuple[str, str]:
    """The Salesforce record a row writes (a shipment to be upserted has no id yet: its key)."""
    return row.sf_object, row.sf_record_id or f"shipment {row.shipment_key}"


def _records_of(rows: Iterable[Any]) -> set[tuple[str, str]]:
    return set(map(_record_of, rows))


def _each_record_once(rows: list[Any]) -> list[Any]:
    """The rows up to the first that writes a record an earlier one of them writes (an Order's
    import row and a shipment's row): Salesforce refuses a call naming an Id twice, and would apply
    the two in no set order. The rest come in the next batch, which waits for this one to settle."""
    seen: set[tuple[str, str]] = set()
    for position, record in enumerate(map(_record_of, rows)):
        if record in seen:
            return rows[:position]
        seen.add(record)
    return rows


def retry_delay(attempts: int) -> timedelta:
    """Backoff between runs for a record that keeps failing: 1, 2, 4 ... minutes, at most 1 hour."""
    return timedelta(minutes=min(2 ** max(attempts - 1, 0), 60))


class OutboxDrainer:
    def __init__(
        self,
        engine: sa.Engine,
        hook: SalesforceOrdersHook,
        *,
        tables: Any,
        run_id: str,
        order_object: str,
        imported_status: str,
        card_fields: Iterable[str],
        max_attempts: int,
        bulk_threshold: int | None = None,
        actions: Iterable[str] | None = None,
        now: datetime | None = None,
        sleep: Any = time.sleep,
        recheck_overlap: timedelta = timedelta(minutes=10),
        only_shipments: bool = False,
        own_writes_table: Any = None,
    ):
        self.engine = engine
        self.hook = hook
        self.t = tables
        self.run_id = run_id
        self.order_object = order_object
        self.imported_status = imported_status
        self.card_fields = tuple(card_fields)
        self.max_attempts = max_attempts
        self.bulk_threshold = bulk_threshold
        self.actions = None if actions is None else tuple(actions)  # None: rows of every action
        self.now = now or datetime.now(UTC)
        self.sleep = sleep
        self.summary = WriteBackSummary()
        self.recheck_overlap = recheck_overlap
        self.only_shipments = only_shipments
        self._checked_at: datetime | None = None  # when the records were last re-read (see _changed_since_planned)
        # What the checks found, for the batches after theirs too: each check looks back only to the
        # one before it, so a change the first check saw must still count for a record sent later.
        self._left_active: dict[str, str] = {}  # order id -> ORDER_DEACTIVATED / ORDER_DELETED
        self._set_by_others: dict[str, dict[str, Any]] = {}  # Account field -> {account id: value}
        # Rows already counted as attempted in this run: the in-run retries of a transient error
        # belong to the same attempt, so a record locked across two runs is not given up early.
        self._attempted: set[int] = set()
        # No echo (own_writes.py): set to the sync_state table, the write-back records what it wrote.
        self.own_writes_table = own_writes_table
        self._user_id: str | None = None
        self._started: datetime | None = None
        self._written_orders: set[str] = set()  # orders this drain wrote, as nobody else changed them
        self._own_spans: tuple[Any, ...] = ()  # our earlier write-backs' spans (own_writes.current)
        self._changed_by_others: set[str] = set()  # orders someone else changed after the import read them
        self._lifecycles: _LifecycleSetter | None = None  # while a drain runs

    # ---- selection --------------------------------------------------------------------

    def _due(self) -> sa.ColumnElement[bool]:
        outbox = self.t.writeback_outbox
        due = sa.and_(
            outbox.c.shipment_key.is_not(None) if self.only_shipments else sa.true(),
            sa.or_(
                outbox.c.state.in_([PENDING, SENDING]),
                sa.and_(outbox.c.state == ROW_FAILED, outbox.c.attempts < self.max_attempts),
            ),
            sa.or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= self.now),
        )
        return due if self.actions is None else sa.and_(due, outbox.c.action.in_(self.actions))

    def _sent_columns(self) -> list[sa.Column]:
        """What sending a row and recording its outcome read of it: not its errors and times (each
        timestamp read is a conversion to UTC in Python); its state and last run for its attempts."""
        outbox = self.t.writeback_outbox
        return [outbox.c[name] for name in (
            "id", "sf_object", "sf_record_id", "sf_order_id", "shipment_key", "external_id_field", "fields", "attempts",
            "created_run_id", "created_at", "state", "updated_run_id",
        )]

    def _due_rows(self, after_id: int, limit: int) -> list[Any]:
        outbox = self.t.writeback_outbox
        query = sa.select(*self._sent_columns()).where(outbox.c.id > after_id, self._due()).order_by(outbox.c.id).limit(limit)
        with self.engine.connect() as conn:
            return conn.execute(query).all()  # one fetchall, not a fetchone per row

    def due_count(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(self.t.writeback_outbox).where(self._due())).scalar_one()

    # ---- bookkeeping ------------------------------------------------------------------

    def _set_rows(self, conn: sa.Connection, ids: list[int], **values: Any) -> None:
        outbox = self.t.writeback_outbox
        for batch in in_batches(ids):
            conn.execute(
                sa.update(outbox)
                .where(one_of(conn, outbox.c.id, batch))
                .values(updated_at=datetime.now(UTC), updated_run_id=self.run_id, **values)
            )

    def _mark_sending(self, rows: list[Any]) -> None:
        orders = self.t.external_orders
        # Orders whose lifecycles are being set from the other thread are left alone: the two
        # transactions then never wait for each other's rows (nor deadlock). Having rows in this
        # batch, they are set again once it has settled.
        under_way = self._lifecycles.under_way if self._lifecycles is not None else frozenset()
        with self.engine.begin() as conn:
            self._set_rows(conn, [r.id for r in rows], state=SENDING)
            for batch in in_batches(sorted({r.sf_order_id for r in rows if not _is_shipment(r)} - under_way)):
                conn.execute(
                    sa.update(orders)
                    .where(one_of(conn, orders.c.sf_order_id, batch))
                    .where(orders.c.lifecycle_state.in_([READY, FAILED]))
                    .values(lifecycle_state=PROCESSING)
                )

    def _outcome(self, row: Any, result: dict | None) -> dict[str, Any]:
        """One record's new outbox values from Salesforce's answer for it."""
        if result is not None and result.get("success"):
            self.summary.written += 1
            return {"id": row.id, "state": DONE, "attempts": self._attempts(row), "last_error_code": None,
                    "last_error_message": None, "next_attempt_at": None}
        error = ((result or {}).get("errors") or [{}])[0]
        code = error.get("statusCode") or "NO_RESULT"
        # Salesforce's own text may quote a card number (a validation rule's message): never kept.
        message = mask_card_numbers(error.get("message")) or "Salesforce returned no result for this record"
        attempts = self._attempts(row)
        if attempts >= self.max_attempts:
            state = DEAD
        elif code in TRANSIENT_ERRORS:
            state = PENDING
        else:
            state = ROW_FAILED
        self.summary.errors_by_code[code] = self.summary.errors_by_code.get(code, 0) + 1
        log.warning("Write-back of %s %s failed (%s, attempt %d): %s", row.sf_object, row.sf_record_id, code, attempts, message)
        return {"id": row.id, "state": state, "attempts": attempts, "last_error_code": code,
                "last_error_message": message[:2000], "next_attempt_at": self.now + retry_delay(attempts) if state != DEAD else None}

    def _with_change(self, outcome: dict[str, Any], change: _Changed | None) -> dict[str, Any]:
        """A row sent without its Status keeps the reason, visible beside its DONE."""
        if change is None or outcome["state"] != DONE:
            return outcome
        return {**outcome, "last_error_code": change.code, "last_error_message": change.message}

    def _not_sent(self, row: Any, change: _Changed) -> dict[str, Any]:
        log.warning("Write-back of %s %s not sent (%s): %s", row.sf_object, row.sf_record_id, change.code, change.message)
        self.summary.errors_by_code[change.code] = self.summary.errors_by_code.get(change.code, 0) + 1
        return {"id": row.id, "state": DEAD, "attempts": row.attempts or 0, "last_error_code": change.code,
                "last_error_message": change.message, "next_attempt_at": None}

    def _attempts(self, row: Any) -> int:
        """The row's attempt count after this send: one more per run, however often retried in it."""
        if row.id in self._attempted:
            return row.attempts or 0
        self._attempted.add(row.id)
        # An earlier try of this run's task (Airflow retried it) recorded this run's attempt already:
        # counted again, a record failing in a run whose write_back was retried gave up in that run.
        if row.updated_run_id == self.run_id and row.state in (PENDING, ROW_FAILED) and (row.attempts or 0) > 0:
            return row.attempts
        return (row.attempts or 0) + 1

    def _store_outcomes(self, conn: sa.Connection, outcomes: list[dict[str, Any]]) -> None:
        """All outcomes of a batch set-based (no round trip per record): the rows sharing their new
        values (nearly all: DONE at the same attempt) by their ids, the others' values through
        ``update_rows``; shared values need no copy of each row's values to the warehouse."""
        by_values: dict[tuple, list[int]] = {}
        for outcome in outcomes:
            by_values.setdefault(_outcome_values(outcome), []).append(outcome["id"])  # (in C: no loop over each item)
        several = {values: ids for values, ids in by_values.items() if len(ids) >= SAME_OUTCOME_MIN_ROWS}
        for values, ids in several.items():
            self._set_rows(conn, ids, **dict(zip(OUTCOME_COLUMNS, values, strict=True)))
        stamp = {"updated_at": datetime.now(UTC), "updated_run_id": self.run_id}
        rest = [
            {**dict(zip(OUTCOME_COLUMNS, values, strict=True)), "id": i, **stamp}
            for values, ids in by_values.items() if values not in several for i in ids
        ]
        update_rows(conn, self.t.writeback_outbox, rest, ["id"])

    # ---- sending ----------------------------------------------------------------------

    def _deliver(self, payloads: list[dict], bulk: bool) -> tuple[list[dict], int]:
        """Per-record results, in order: sObject Collections, or one Bulk ingest job per object;
        and the API calls it took."""
        faultpoints.reach("write_back.before_send")
        calls_before = self.hook.calls_made_here()  # (another batch may be at Salesforce from another thread)
        results: dict[int, dict] = {}
        # Upserts by external id, one call per object and field (always collections: few records).
        upserts = [i for i, p in enumerate(payloads) if "externalIdField" in p["attributes"]]
        for target in dict.fromkeys((payloads[i]["attributes"]["type"], payloads[i]["attributes"]["externalIdField"]) for i in upserts):
            positions = [i for i in upserts if (payloads[i]["attributes"]["type"], payloads[i]["attributes"]["externalIdField"]) == target]
            records = [{**payloads[i], "attributes": {"type": target[0]}} for i in positions]
            results.update(zip(positions, self.hook.upsert_records(*target, records), strict=True))
        updates = [i for i in range(len(payloads)) if i not in results]
        if not bulk:
            results.update(zip(updates, self.hook.update_records([payloads[i] for i in updates]), strict=False))
            return [results.get(i) for i in range(len(payloads))], self.hook.calls_made_here() - calls_before
        # One ingest job per object, all processed at the same time and waited for together.
        by_object: dict[str, list[int]] = {}
        for i in updates:
            by_object.setdefault(payloads[i]["attributes"]["type"], []).append(i)
        jobs = [
            (sf_object, [{k: v for k, v in payloads[i].items() if k != "attributes"} for i in positions])
            for sf_object, positions in by_object.items()
        ]
        for positions, answers in zip(by_object.values(), self.hook.bulk_update_objects(jobs), strict=True):
            results.update(zip(positions, answers, strict=True))
        return [results.get(i) for i in range(len(payloads))], self.hook.calls_made_here() - calls_before

    # ---- still as planned? --------------------------------------------------------------

    def _recheck_since(self, rows: list[Any]) -> datetime:
        """From when Salesforce is asked what changed: the first time, from the start of the earliest
        run that planned these rows (it read the records after that); then from the last check.

        A shipment's row was planned from no read of its order: the order may have been changed any
        time after the last import read it, so for such rows from the watermark (where the next
        import's window starts) on."""
        if self._checked_at is not None:
            return self._checked_at - self.recheck_overlap
        from .load import get_watermark
        from .own_writes import parse_stamp

        runs = self.t.import_runs
        with self.engine.connect() as conn:
            started = conn.execute(
                sa.select(sa.func.min(runs.c.started_at)).where(runs.c.run_id.in_({r.created_run_id for r in rows}))
            ).scalar()
        since = started or min(r.created_at for r in rows)
        if any(_is_shipment(r) for r in rows) and (mark := get_watermark(self.engine, self.t.metadata.schema)):
            since = min(since, parse_stamp(mark))
        return since - self.recheck_overlap

    def _changed_since_planned(self, rows: list[Any]) -> dict[int, _Changed]:
        """Re-read, just before sending, what may have changed in Salesforce since the rows were
        planned: orders set back to Draft or deleted (Status is then left alone), and Accounts whose
        customer-id field someone filled in with another value (never overwritten). One query per
        object that the batch writes, returning only such records; the queries are independent and
        read together (one Composite call)."""
        from .own_writes import parse_stamp
        from .soql import ACTIVATED, build_accounts_with_field_query, build_status_changes_query

        since, self._checked_at = self._recheck_since(rows), datetime.now(UTC)
        changed: dict[int, _Changed] = {}
        orders = [r for r in rows if r.sf_object == self.order_object and "Status" in _fields(r)]
        # No echo (own_writes.py): the same call finds the orders someone else changed meanwhile.
        track = self._user_id is not None and any(_moves_order(r, self.order_object) for r in rows)
        accounts = [r for r in rows if r.sf_object == "Account"]
        names = sorted({key for r in accounts for key in _fields(r)})
        ours = (self._user_id, self._started) if self._user_id is not None else None
        queries = [Query(build_accounts_with_field_query(name, since, not_written_by=ours)) for name in names]
        if orders or track:
            status_changes = build_status_changes_query(
                self.order_object, since, or_changed_by_others=(self._user_id, self._started) if track else None,
                own_writes=self._own_spans,
            )
            queries.insert(0, Query(status_changes, include_deleted=True))
        answers = iter(self.hook.read_together(queries))
        if orders or track:
            states: dict[str, str] = {}
            activated: set[str] = set()  # (found when someone else changed them: Activated again, say)
            others: dict[str, datetime] = {}
            for page in next(answers):
                for record in page:
                    deleted = str(record.get("IsDeleted")).lower() == "true"
                    if deleted or record.get("StatusCode") != ACTIVATED:
                        states[record["Id"]] = "ORDER_DELETED" if deleted else "ORDER_DEACTIVATED"
                    else:
                        activated.add(record["Id"])
                    if track:
                        stamp = parse_stamp(record["SystemModstamp"])
                        ours = record.get("LastModifiedById") == self._user_id
                        if not ours or (stamp < self._started and not self._in_own_span(record["Id"], stamp)):
                            others[record["Id"]] = stamp
            if others:
                self._note_changes_by_others(others)
            self._left_active.update(states)
            for order_id in activated:
                self._left_active.pop(order_id, None)
            for row in orders:
                if row.sf_record_id in self._left_active:
                    code = self._left_active[row.sf_record_id]
                    changed[row.id] = _Changed(
                        code,
                        f"Status not set: the order was {STATUS_LEFT_ALONE[code]} in Salesforce after the import read it",
                        send_the_rest=code == "ORDER_DEACTIVATED",
                    )
        for name, pages in zip(names, answers, strict=True):
            current = self._set_by_others.setdefault(name, {})
            for page in pages:
                current.update((record["Id"], record.get(name)) for record in page)
            for row in accounts:
                planned = _fields(row).get(name)
                value = current.get(row.sf_record_id)
                if name in _fields(row) and value not in (None, "", planned):
                    changed[row.id] = _Changed(
                        "CUSTOMER_ID_CHANGED",
                        f"not sent: the Account's {name} was set to {mask_card_numbers(str(value))!r} in Salesforce after the import read it; "
                        f"the warehouse keeps {planned!r} until the Account is imported again",
                        send_the_rest=False,
                    )
        return changed

    def _note_changes_by_others(self, seen: dict[str, datetime]) -> None:
        """Of the orders someone else changed since the last check (with their stamps), those changed after
        the import read them (past the warehouse's stamp): our write would hide that change behind
        the integration user's name, so the next run reads them again. Every order found counts,
        not only this batch's: a later batch's order is checked from this check on."""
        from .own_writes import parse_stamp

        orders = self.t.external_orders
        with self.engine.connect() as conn:
            imported = {
                row.sf_order_id: row.sf_system_modstamp
                for row in select_in(conn, orders, [orders.c.sf_order_id, orders.c.sf_system_modstamp], orders.c.sf_order_id, sorted(seen))
            }
        for order_id, stamp in seen.items():
            if imported.get(order_id) is None or parse_stamp(imported[order_id]) != stamp:
                self._changed_by_others.add(order_id)

    def _track_own_writes(self) -> None:
        """Who "we" are in Salesforce (our writes carry that LastModifiedById) and when this drain
        started. An org that does not say leaves the echo to be read back, as it always was."""
        from .own_writes import current
        from .salesforce import SalesforceApiError

        try:
            self._user_id = self.hook.integration_user_id()
        except SalesforceApiError as exc:
            log.warning("Write-back: the org did not say which user we are (%s); the next run reads what we write again", exc)
            return
        now = datetime.now(UTC)
        self._started = now.replace(microsecond=now.microsecond // 1000 * 1000)  # as exact as a SOQL bound
        # An order whose last change is an earlier write-back of ours (the import's, or a shipment's
        # a few minutes before) was changed by nobody else: the next extract leaves it out as well.
        self._own_spans = current(self.engine, self.own_writes_table)

    def _in_own_span(self, order_id: str, stamp: datetime) -> bool:
        """Whether the integration user's change of the order at ``stamp`` is one of our earlier
        write-backs' (inside a span, not named to be read again), as the extract's window tells."""
        return any(s.user_id == self._user_id and s.start <= stamp < s.end and order_id not in s.reread for s in self._own_spans)

    def _start_reading_own_writes(self) -> tuple[set[str], Iterator[list[dict]]] | None:
        """What the integration user last modified since this drain started, to be read back by
        ``_remember_own_writes``: the orders written, and the pages of the query. A Bulk query job
        is started at once, so Salesforce runs it while the warehouse settles the lifecycles."""
        from .soql import build_own_writes_query

        written = self._written_orders - self._changed_by_others
        if not written:
            return None
        query = build_own_writes_query(self.order_object, self._user_id, self._started)
        if self.bulk_threshold is not None and len(written) > self.bulk_threshold:
            return written, self.hook.iter_bulk_query_pages(query, job_id=self.hook.start_bulk_query(query))
        return written, self.hook.iter_query_pages(query)

    def _remember_own_writes(self, written: set[str], pages: Iterator[list[dict]]) -> None:
        """Read back what the integration user last modified since this drain started and keep the
        span, so the next extract leaves our own writes out (own_writes.py)."""
        from .load import get_watermark
        from .own_writes import remember, span_of

        read_back = [(r["Id"], r["SystemModstamp"]) for page in pages for r in page]
        span = span_of(self._user_id, self._started, read_back, written, run_id=self.run_id)
        if span is None:
            log.info("Write-back: no span of our own writes kept; the next run reads the %d orders written again", len(written))
            return
        remember(self.engine, self.own_writes_table, span, watermark=get_watermark(self.engine, self.t.metadata.schema), now=datetime.now(UTC))
        log.info(
            "Write-back: %d orders written are left out of the next extract (%d read again: changed by someone else)",
            len(written), len(span.reread),
        )

    def _dispatch(self, rows: list[Any], org: OrgCapabilities, bulk: bool, salesforce: ThreadPoolExecutor) -> _Round:
        """Mark a batch as being sent (committed first) and hand it to the Salesforce thread."""
        payloads: list[tuple[Any, dict]] = []
        nothing_to_write: list[Any] = []
        changed = self._marked_and_rechecked(rows)
        if not org.imported_status_available:
            changed |= {row.id: self._status_missing for row in rows if "Status" in _fields(row) and row.id not in changed}
        for row in rows:
            fields = _fields(row)
            if row.id in changed:
                if not changed[row.id].send_the_rest:
                    continue
                fields = {k: v for k, v in fields.items() if k != "Status"}
            if _is_shipment(row):
                # Shipment values are sent as queued (a tracking number of X's is no card mask).
                attributes = {"type": row.sf_object}
                if row.external_id_field:
                    payloads.append((row, {"attributes": {**attributes, "externalIdField": row.external_id_field}, **fields}))
                else:
                    payloads.append((row, {"attributes": attributes, "id": row.sf_record_id, **fields}))
                continue
            prepared = prepare_fields(row.sf_object, fields, org, self.imported_status)
            if prepared:
                payloads.append((row, {"attributes": {"type": row.sf_object}, "id": row.sf_record_id, **prepared}))
            else:
                nothing_to_write.append(row)
        delivery = salesforce.submit(self._deliver, [p for _, p in payloads], bulk) if payloads else None
        return _Round(rows, payloads, nothing_to_write, delivery, changed)

    def _marked_and_rechecked(self, rows: list[Any]) -> dict[int, _Changed]:
        """Mark a batch as being sent, and re-read what changed in Salesforce since its rows were
        planned (:meth:`_changed_since_planned`); both before it is sent.

        On PostgreSQL both at once, the re-reading from a thread of its own: one waits for
        Salesforce, the other for the warehouse, and one after the other they made the drain's
        thread slower than the Bulk jobs it feeds. If the re-reading fails, the marked rows are
        pending again (sent next run), as when a call fails. SQLite marks after re-reading."""
        if self.engine.dialect.name != "postgresql":
            changed = self._changed_since_planned(rows)
            self._mark_sending(rows)
            return changed
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="recheck") as salesforce:
            rechecked = salesforce.submit(self._changed_since_planned, rows)
            self._mark_sending(rows)  # raised, the re-reading still ends before the error goes up
            try:
                return rechecked.result()
            except Exception:
                with self.engine.begin() as conn:
                    self._set_rows(conn, [r.id for r in rows], state=PENDING)
                raise

    def _settle(self, batch: _Round) -> list[Any]:
        """Record a sent batch's outcomes; returns the rows that failed transiently (for an in-run retry)."""
        try:
            results, calls = batch.delivery.result() if batch.delivery else ([], 0)
        except Exception:
            # The call itself failed (network, limit): nothing was recorded as sent; retry later.
            with self.engine.begin() as conn:
                self._set_rows(conn, [r.id for r in batch.rows], state=PENDING)
            raise
        faultpoints.reach("write_back.sent")
        self.summary.calls += calls
        outcomes = [self._outcome(row, {"success": True}) for row in batch.nothing_to_write]
        padded = results + [None] * (len(batch.payloads) - len(results))
        outcomes += [self._outcome(row, result) for (row, _), result in zip(batch.payloads, padded, strict=True)]
        outcomes = [self._with_change(outcome, batch.changed.get(outcome["id"])) for outcome in outcomes]
        sent = {row.id for row in batch.nothing_to_write} | {row.id for row, _ in batch.payloads}
        outcomes += [self._not_sent(row, batch.changed[row.id]) for row in batch.rows if row.id not in sent]
        created = [
            {"id": row.id, "sf_record_id": result["id"]}
            for (row, _), result in zip(batch.payloads, padded, strict=True)
            if _is_shipment(row) and row.external_id_field and result and result.get("success") and result.get("id")
        ]
        with self.engine.begin() as conn:
            self._store_outcomes(conn, outcomes)
            update_rows(conn, self.t.writeback_outbox, created, ["id"])  # the record an upsert made or found
        sent_ok = {o["id"] for o in outcomes if o["state"] == DONE}
        self._written_orders.update(
            row.sf_record_id if row.sf_object == self.order_object else row.sf_order_id
            for row, _ in batch.payloads if row.id in sent_ok and _moves_order(row, self.order_object)
        )
        by_id = {row.id: row for row in batch.rows}
        transient = [by_id[o["id"]] for o in outcomes if o["state"] == PENDING]
        self.summary.attempted += len(batch.rows)
        return transient

    def _settle_with_retries(self, batch: _Round, org: OrgCapabilities, salesforce: ThreadPoolExecutor) -> None:
        transient = self._settle(batch)
        delay = IN_RUN_RETRY_DELAY
        for _ in range(IN_RUN_RETRIES):
            if not transient:
                break
            self.sleep(delay)
            delay *= 2
            transient = self._settle(self._dispatch(self._reload(transient), org, False, salesforce))  # few rows: collections

    def _catch_up_on_status(self, org: OrgCapabilities) -> None:
        """Remember that Status was left alone (the org's picklist lacks the imported status); once
        the org has it, the rows written without it are due again, so the runbook's fix (add the
        value) reaches the orders imported meanwhile. (The check before sending still leaves alone
        an order set back to Draft since.) Called by the import's drain only: these are the import's
        rows, which a shipments drain (``only_shipments``) never sends."""
        from .warehouse.views import superseded_outbox_row
        from .warehouse.writes import upsert

        state, w = self.t.sync_state, self.t.writeback_outbox
        with self.engine.begin() as conn:
            if not org.imported_status_available:
                upsert(conn, state, [{"key": STATUS_SKIPPED_KEY, "value": self.now.isoformat(), "updated_at": self.now}], ["key"])
                return
            if conn.execute(sa.select(state.c.key).where(state.c.key == STATUS_SKIPPED_KEY)).scalar() is None:
                return
            skipped = conn.execute(
                sa.select(w.c.id).where(w.c.state == DONE, w.c.last_error_code == STATUS_NOT_IN_PICKLIST, ~superseded_outbox_row(w))
            ).scalars().all()
            for batch in in_batches(skipped):
                conn.execute(
                    sa.update(w).where(w.c.id.in_(batch)).values(
                        state=PENDING, attempts=0, last_error_code=None, last_error_message=None, next_attempt_at=self.now,
                        updated_run_id=self.run_id, updated_at=self.now,
                    )
                )
            conn.execute(sa.delete(state).where(state.c.key == STATUS_SKIPPED_KEY))
        if skipped:
            log.info("The org's Status picklist has %r now: %d write-backs made without it are sent again", self.imported_status, len(skipped))

    @property
    def _status_missing(self) -> _Changed:
        """Why a row's Status was not sent: the org's picklist has no imported status. Kept beside
        its DONE, as a change in Salesforce is: the warehouse's sf_status stays what Salesforce shows."""
        return _Changed(
            STATUS_NOT_IN_PICKLIST,
            f"The org's {self.order_object} Status picklist has no {self.imported_status!r} value: Status left unchanged",
            send_the_rest=True,
        )

    def _check_imported_status_category(self, pages: Iterator[list[dict]]) -> None:
        """Refuse an imported status outside the Activated category: writing a Draft-category value
        would deactivate every imported order in Salesforce. ``pages``: the org's Order statuses."""
        categories: dict[str, str] = {}
        for page in pages:
            categories.update((record["ApiName"], record["StatusCode"]) for record in page)
        category = categories.get(self.imported_status)
        if category is not None and category != ACTIVATED_CATEGORY:
            activated = sorted(name for name, c in categories.items() if c == ACTIVATED_CATEGORY)
            raise ImportedStatusRefused(
                f"imported_status: {self.imported_status!r} is in the org's {category} status category; it must be a "
                f"status of the Activated category (this org's: {', '.join(activated)}), or an imported order would be "
                "deactivated in Salesforce. Nothing was written back; fix the salesforce_orders_config Variable."
            )

    def drain(self) -> WriteBackSummary:
        from .soql import build_order_statuses_query

        # (rows that cannot set Status need no check of the statuses); read with the describe: one call
        check_statuses = self.actions is None or any("mark_imported" in action for action in self.actions)
        statuses = self.hook.read_together([Query(build_order_statuses_query())] if check_statuses else [], describes=[self.order_object])
        describe = self.hook.describe(self.order_object)
        if check_statuses:
            self._check_imported_status_category(statuses[0])
        org = OrgCapabilities.from_describe(describe, self.imported_status, self.card_fields)
        if not org.imported_status_available:
            self.summary.status_skipped = True
            log.warning(
                "The org's %s Status picklist has no %r value: Status is left unchanged", self.order_object, self.imported_status
            )
        if check_statuses and not self.only_shipments:
            # (the import's rows: only the import's drain sends them, so only it revives them)
            self._catch_up_on_status(org)
        bulk = self.bulk_threshold is not None and self.due_count() > self.bulk_threshold
        if bulk:
            log.info("More than %d write-backs due: sending them with Bulk API 2.0 ingest jobs", self.bulk_threshold)
        touched = self._in_flight_orders()
        if self.own_writes_table is not None:
            self._track_own_writes()
        # Threads talk to Salesforce while this one records the outcomes of the previous batch and
        # marks the next: Salesforce's work and the warehouse's overlap. The next batch is sent as
        # soon as it is marked, while the one before is still at Salesforce (BATCHES_AT_SALESFORCE):
        # an org takes seconds to minutes over each Bulk job, and two in progress take about as long
        # as one. (A batch writing a record the one in flight writes waits for it: a record's
        # writes arrive in the order they were queued.)
        # Orders whose lifecycle is set already: those of a settled batch, set while the next batch
        # is at Salesforce, unless a batch sent later has rows of theirs (then set after that one).
        settled: set[str] = set()
        with (
            ThreadPoolExecutor(max_workers=BATCHES_AT_SALESFORCE, thread_name_prefix="write-back") as salesforce,
            _LifecycleSetter(self) as lifecycles,
        ):
            in_flight: _Round | None = None
            try:
                last_id = 0
                while True:
                    rows = _each_record_once(self._due_rows(last_id, BULK_JOB_RECORDS if bulk else COLLECTION_LIMIT))
                    sent = None
                    if rows and in_flight is not None and _records_of(in_flight.rows) & _records_of(rows):
                        waited_for, in_flight = in_flight, None  # (settled here, failed or not)
                        self._settle_with_retries(waited_for, org, salesforce)
                    if rows:
                        last_id = rows[-1].id
                        touched.update(r.sf_order_id for r in rows)
                        settled.difference_update(r.sf_order_id for r in rows)
                        sent = self._dispatch(rows, org, bulk, salesforce)
                    previous, in_flight = in_flight, sent
                    if previous is not None:
                        self._settle_with_retries(previous, org, salesforce)
                        if in_flight is not None:
                            done = {r.sf_order_id for r in previous.rows} - {r.sf_order_id for r in in_flight.rows}
                            lifecycles.set(done)
                            settled |= done
                    if not rows:
                        break
                # While the last settled batch's lifecycles are set: Salesforce runs the read-back's
                # job, and the outcomes are counted. (The job is asked for its results only after the
                # rest of the lifecycles: by then it is done, with no call spent on waiting for it.)
                own_writes = self._start_reading_own_writes() if self._user_id is not None else None
                self._count_final_states(touched)
                lifecycles.wait()
            except Exception:
                if in_flight is not None:
                    self._settle_after_failure(in_flight)
                raise
        self.update_lifecycles(touched - settled)
        if own_writes is not None:
            self._remember_own_writes(*own_writes)
        return self.summary

    def _settle_after_failure(self, batch: _Round) -> None:
        """A later batch already sent when an earlier one failed: keep what Salesforce answered."""
        try:
            self._settle(batch)
        except Exception:
            log.warning("Write-back of %d rows stopped with an earlier failure; they are sent again next run", len(batch.rows))

    def _in_flight_orders(self) -> set[str]:
        """Orders an earlier write-back left PROCESSING when it stopped or died half-way: their
        lifecycle is settled again at the end of this one, whether or not they have rows due."""
        orders = self.t.external_orders
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(orders.c.sf_order_id).where(orders.c.lifecycle_state == PROCESSING)).scalars())

    def _reload(self, rows: list[Any]) -> list[Any]:
        outbox = self.t.writeback_outbox
        with self.engine.connect() as conn:
            query = sa.select(*self._sent_columns()).where(one_of(conn, outbox.c.id, [r.id for r in rows])).order_by(outbox.c.id)
            return conn.execute(query).all()

    def _count_final_states(self, order_ids: set[str]) -> None:
        outbox = self.t.writeback_outbox
        with self.engine.connect() as conn:
            for batch in in_batches(sorted(order_ids)):
                query = (
                    sa.select(outbox.c.state, sa.func.count())
                    .where(one_of(conn, outbox.c.sf_order_id, batch), outbox.c.updated_run_id == self.run_id)
                    .group_by(outbox.c.state)
                )
                for state, count in conn.execute(query):
                    if state == PENDING:
                        self.summary.retry_later += count
                    elif state == ROW_FAILED:
                        self.summary.failed += count
                    elif state == DEAD:
                        self.summary.dead += count

    def update_lifecycles(self, order_ids: set[str]) -> None:
        """Set each touched order's lifecycle from its outbox rows; and that of every READY order
        with no row waiting: from its earlier rows, or COMPLETE when it has none."""
        outbox, orders = self.t.writeback_outbox, self.t.external_orders

        def rows_of_order(*conditions: Any) -> Any:
            return (
                sa.select(outbox.c.id)
                .where(outbox.c.sf_order_id == orders.c.sf_order_id, outbox.c.shipment_key.is_(None), *conditions)
                .exists()
            )

        with self.engine.begin() as conn:
            # Loaded again with nothing new to write back (the write was made already, after the
            # version read; or nothing differs): as its earlier rows say, not READY for ever.
            settled_before = conn.execute(
                sa.select(orders.c.sf_order_id).where(
                    orders.c.lifecycle_state == READY, rows_of_order(), ~rows_of_order(outbox.c.state.in_(_WAITING_STATES))
                )
            ).scalars()
            self._set_lifecycles(conn, order_ids | set(settled_before))
            # Orders loaded with nothing to write back are complete as soon as they are loaded.
            conn.execute(
                sa.update(orders).where(orders.c.lifecycle_state == READY, ~rows_of_order()).values(lifecycle_state=COMPLETE, lifecycle_error=None)
            )

    def _set_lifecycles(self, conn: sa.Connection, order_ids: set[str]) -> None:
        """Each order's lifecycle (and the Status written) from its outbox rows.

        One UPDATE per order at most: lifecycle and Status together, and none for an order that
        already shows them (a new version of an order row adds an entry to each of its indexes)."""
        outbox, orders = self.t.writeback_outbox, self.t.external_orders
        with_status, without_status = [], []
        for chunk in in_batches(sorted(order_ids)):
            rows = conn.execute(
                sa.select(
                    outbox.c.sf_order_id, outbox.c.sf_object, outbox.c.sf_record_id, outbox.c.state,
                    outbox.c.last_error_code, outbox.c.last_error_message, outbox.c.fields,
                )
                .where(one_of(conn, outbox.c.sf_order_id, chunk), outbox.c.shipment_key.is_(None))
                .order_by(outbox.c.id)
            ).all()  # one fetchall, not a fetchone per row
            by_order: dict[str, list[Any]] = {}
            for row in rows:
                by_order.setdefault(row.sf_order_id, []).append(row)
            for order_id, order_rows in by_order.items():
                state, error = lifecycle_for(order_rows)
                update = {"sf_order_id": order_id, "lifecycle_state": state, "lifecycle_error": error}
                # The Status we wrote is the order's Status in Salesforce now: sf_status says so,
                # as Salesforce shows it (the echo of the write is no content change, never re-loaded).
                if (status := status_written(order_rows)) is not None:
                    with_status.append({**update, "sf_status": status})
                else:
                    without_status.append(update)
        update_rows(conn, orders, with_status, ["sf_order_id"], only_changed=True)
        update_rows(conn, orders, without_status, ["sf_order_id"], only_changed=True)


class _LifecycleSetter:
    """Sets the lifecycles of a settled batch's orders in a transaction of their own.

    On PostgreSQL from a thread of its own, on its own connection, while this drain's thread goes
    on to the next batch: the drain's thread was the write-back's slowest part, and the warehouse's
    work for it (marking the next batch, recording the last one's outcomes, then these lifecycles,
    one statement after another) kept the Salesforce thread waiting for its next batch. A batch's
    orders are set once the set before has ended, so an error is raised by the next ``set`` or by
    ``wait``. SQLite, one writer at a time, sets them in the drain's thread.

    The two transactions never update the same order: marking a batch leaves alone the orders
    being set here (``under_way``), so neither waits for the other's locks, and they cannot
    deadlock. (An order with rows in that batch too is set again once the batch has settled.)"""

    def __init__(self, drainer: OutboxDrainer):
        self._drainer = drainer
        concurrent = drainer.engine.dialect.name == "postgresql"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lifecycles") if concurrent else None
        self._last: Future | None = None
        self.under_way: frozenset[str] = frozenset()  # the orders of the set in progress

    def __enter__(self) -> _LifecycleSetter:
        self._drainer._lifecycles = self  # (what its marking of a batch leaves alone: under_way)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)  # a failed drain still lets the lifecycles under way end
        self._drainer._lifecycles = None

    def set(self, order_ids: set[str]) -> None:
        self.wait()
        if self._thread is None:
            self._set(order_ids)
        else:
            self.under_way = frozenset(order_ids)
            self._last = self._thread.submit(self._set, order_ids)

    def wait(self) -> None:
        last, self._last = self._last, None
        if last is not None:
            last.result()
        self.under_way = frozenset()

    def _set(self, order_ids: set[str]) -> None:
        with self._drainer.engine.begin() as conn:
            self._drainer._set_lifecycles(conn, order_ids)


def status_written(rows: list[Any]) -> str | None:
    """The Status the order's newest Order write-back set in Salesforce (None: none did)."""
    written = None
    for row in rows:  # oldest first
        fields = row.fields if isinstance(row.fields, dict) else {}
        if row.sf_object != "Account" and "Status" in fields:
            # DONE with a code: sent without its Status (changed in Salesforce meanwhile, see _with_change)
            written = fields["Status"] if row.state == DONE and row.last_error_code is None else written
    return written


def lifecycle_for(rows: list[Any]) -> tuple[str, str | None]:
    """An order's lifecycle state and error from its outbox rows (oldest first).

    Only the newest row per Salesforce record counts: a row that failed once is superseded by a
    newer row for the same record that went through.
    """
    # (most orders have one row: its own newest)
    latest = {(r.sf_object, getattr(r, "sf_record_id", None)): r for r in rows}.values() if len(rows) > 1 else rows
    failed = waiting = None  # the newest of each
    for r in latest:
        if r.state in _FAILED_STATES:
            failed = r
        elif r.state in _WAITING_STATES:
            waiting = r
    if failed is not None:
        suffix = " (gave up)" if failed.state == DEAD else ""
        return FAILED, f"{failed.sf_object}: {failed.last_error_code}: {failed.last_error_message}{suffix}"
    if waiting is not None:
        r = waiting
        return PROCESSING, (f"{r.sf_object}: {r.last_error_code}: {r.last_error_message} (will retry)" if r.last_error_code else None)
    return COMPLETE, None


_FAILED_STATES, _WAITING_STATES = frozenset({ROW_FAILED, DEAD}), frozenset({PENDING, SENDING})
