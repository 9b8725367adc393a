"""Load: write a run's transformed orders into the warehouse in one transaction.

Everything a run writes (customers, locations, orders, items, services, outbox rows, released
quarantine rows and the watermark) commits together or not at all, so a crash mid-load leaves
nothing half-written and the retry redoes the whole load cleanly.

An order whose ``content_hash`` equals the stored one is *unchanged*: nothing is written for it
(not even ``last_run_id``), so the echo of our own write-back, which only moves
``SystemModstamp``, costs nothing and sends nothing back to Salesforce.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import cache, lru_cache
from operator import attrgetter
from typing import Any

import msgspec
import sqlalchemy as sa

from . import faultpoints, history
from .api_names import SALESFORCE_ID_PATTERN
from .card_masks import CARD_MASK_ACTION, queue_card_masks
from .model import (
    READY,
    SF_ACTIVE,
    SF_DEACTIVATED,
    SF_DELETED,
    Address,
    CustomerRecord,
    ItemRecord,
    ServiceRecord,
    SkippedOrder,
    TransformedOrder,
    WriteBack,
    storable,
)
from .partitions import EVERY_ORDER_ID, OrderIdRange
from .progress import Progress
from .readahead import read_ahead
from .warehouse.definitions import (
    OUTBOX_DEAD,
    OUTBOX_DONE,
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_PROCESSING,
    OUTBOX_UNSENT_STATES,
    SHIPMENT_INVALID,
    SHIPMENT_QUEUED,
    Tables,
    tables,
)
from .warehouse.errors import refuses_every_row
from .warehouse.types import parse_utc, utc_now
from .warehouse.writes import (
    Columns,
    convert_for_copy,
    in_batches,
    insert_rows,
    one_of,
    select_in,
    update_rows,
    upsert,
)

log = logging.getLogger(__name__)

ORDERS_PER_BATCH = 2000
_NEVER = datetime.min.replace(tzinfo=UTC)
WATERMARK_KEY = "orders.system_modstamp"
# How far status changes (back to Draft, deleted) have been checked: moves only when the check
# succeeds, so a run that failed before checking loses nothing.
STATUS_CHECK_KEY = "orders.status_checked_to"


@dataclass
class LoadCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    outbox_rows: int = 0
    customers: int = 0
    locations: int = 0
    superseded: int = 0  # staged versions older than the one stored (a late or cleared load): kept as stored
    refused: int = 0  # orders the warehouse refused a value of: quarantined, the rest loaded

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _RunTally:
    """Counts across batches; customers, locations and write-backs are counted once per run."""

    counts: LoadCounts = field(default_factory=LoadCounts)
    customers: set[str] = field(default_factory=set)
    customer_hashes: dict[str, str] = field(default_factory=dict)  # as this run last wrote them
    locations: set[str] = field(default_factory=set)
    write_backs: set[tuple[str, str]] = field(default_factory=set)  # (sObject, record id)
    recount: set[str] = field(default_factory=set)  # customer ids whose locations may have changed
    history: bool = False  # the run keeps every version (config history_mode, see history.py)
    # The records with outbox rows when the load began, read whole when there are few (a first
    # import): with those this run queues (write_backs), the only ones to look up (_write_outbox).
    outbox_records: set[tuple[str, str]] | None = None
    # The orders refused or skipped by earlier runs and not released when the load began (_release_quarantine).
    unreleased: set[str] | None = None
    read_until: datetime | None = None  # when the run's extract ended (_read_after)
    refused_later: frozenset[str] = frozenset()  # orders a later run refused (_refused_by_later_runs)

    def result(self) -> LoadCounts:
        self.counts.customers = len(self.customers)
        self.counts.locations = len(self.locations)
        self.counts.outbox_rows = len(self.write_backs)
        return self.counts


# ---------------------------------------------------------------------------------------
# Record -> row
# ---------------------------------------------------------------------------------------


def _timestamp(value: str | None) -> datetime | None:
    return parse_utc(value) if value else None


@lru_cache(maxsize=1 << 12)  # an order's dates and its items' repeat: made once, not per row
def _date(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


@cache
def _address_names(prefix: str) -> dict[str, str]:
    """Each Address field's column name, with ``prefix``: made once, not per address."""
    return {f.name: f"{prefix}{f.name}" for f in fields(Address)}


def _fields(record: Any) -> dict[str, Any]:
    """A record's fields by name, the record a dataclass or its view (staging.record_view)."""
    return msgspec.structs.asdict(record) if isinstance(record, msgspec.Struct) else vars(record)


def _address_columns(prefix: str, address: Address) -> dict[str, Any]:
    names = _address_names(prefix)
    return {names[name]: value for name, value in _fields(address).items()}


def _customer_hash(customer: CustomerRecord) -> str:
    return hashlib.sha256(json.dumps(_fields(customer), sort_keys=True, default=_fields).encode()).hexdigest()


def customer_row(customer: CustomerRecord, now: datetime) -> dict[str, Any]:
    return {
        "customer_id": customer.customer_id,
        "sf_account_id": customer.sf_account_id,
        "name": customer.name,
        "parent_customer_id": customer.parent_customer_id,
        "parent_sf_account_id": customer.parent_sf_account_id,
        "customer_id_source": customer.customer_id_source,
        **_address_columns("billing_", customer.billing),
        "first_imported_at": now,
        "updated_at": now,
        "content_hash": _customer_hash(customer),
    }


def _masked_fields(fields: Iterable[str]) -> list[str] | None:
    return list(fields) or None


def card_data_flag(fields: Iterable[str]) -> dict[str, Any]:
    """The card-data flag columns of a row, from the fields whose card numbers were masked."""
    masked = _masked_fields(fields)
    return {"card_data_masked": masked is not None, "card_data_masked_fields": masked}


_Spec = tuple[tuple[str, str, Callable[[Any], Any] | None], ...]


def _address_spec(prefix: str, attribute: str) -> _Spec:
    return tuple((column, f"{attribute}.{name}", None) for name, column in _address_names(prefix).items())


# An order's row: each column read from an attribute of its TransformedOrder, converted (None:
# as it is). The columns that are not the record's own are added by _order_columns.
_ORDER_SPEC: _Spec = (
    ("sf_order_id", "order.sf_order_id", None),
    ("order_number", "order.order_number", None),
    ("external_name", "order.external_name", None),
    ("salesforce_url", "order.salesforce_url", None),
    ("customer_id", "order.customer_id", None),
    ("sf_account_id", "order.sf_account_id", None),
    ("account_name", "order.account_name", None),
    ("sf_status", "order.status", None),
    ("sf_status_code", "order.status_code", None),
    ("order_type", "order.order_type", None),
    ("effective_date", "order.effective_date", _date),
    ("activated_at", "order.activated_at", _timestamp),
    ("total_amount", "order.total_amount", None),
    ("currency", "order.currency", None),
    ("corporate_currency", "order.corporate_currency", None),
    ("conversion_rate", "order.conversion_rate", None),
    ("corporate_amount", "order.corporate_amount", None),
    *_address_spec("billing_", "order.billing"),
    *_address_spec("service_", "order.service"),
    ("service_address_source", "order.service_address_source", None),
    ("location_id", "order.location_id", None),
    ("destination", "order.destination", None),
    ("notes", "order.notes", None),
    ("po_number", "order.po_number", None),
    ("metadata", "order.metadata", None),
    ("is_zero_total", "order.is_zero_total", None),
    ("sf_created_at", "order.sf_created_at", _timestamp),
    ("card_data_masked", "order.card_data_masked", bool),
    ("card_data_masked_fields", "order.card_data_masked", _masked_fields),
    ("content_hash", "content_hash", None),
    ("end_date", "order.end_date", _date),
    ("contract_id", "order.contract_id", None),
    ("opportunity_id", "order.opportunity_id", None),
    ("owner_id", "order.owner_id", None),
    ("owner_name", "order.owner_name", None),
)


def _record_columns(records: Sequence[Any], spec: _Spec, **more: Any) -> Columns:
    """``records`` as the columns of their rows, with no dict per row: each record's attributes
    in one C call (an attrgetter of them all), turned into columns by zip. (A map over the
    records per column costs twice that: each pass reads every record again.) ``more``: further
    columns, a list of values each (one per record) or, for any other value, that value in
    every row. A spec names two attributes or more (attrgetter of one gives no tuple)."""
    getter = attrgetter(*(attribute for _, attribute, _ in spec))
    columns = list(zip(*map(getter, records), strict=True)) if records else [() for _ in spec]
    values = [column if convert is None else list(map(convert, column)) for column, (_, _, convert) in zip(columns, spec, strict=True)]
    values += [value if isinstance(value, list) else [value] * len(records) for value in more.values()]
    return Columns([name for name, _, _ in spec] + list(more), values)


def _order_columns(
    written: Sequence[TransformedOrder], run_id: str, now: datetime, state_changed_at: list[datetime], modstamps: list[datetime | None]
) -> Columns:
    """The orders' rows; ``state_changed_at``, ``modstamps`` (parsed once per order, see
    _prepare_batch): one per order."""
    return _record_columns(
        written,
        _ORDER_SPEC,
        sf_system_modstamp=modstamps,
        lifecycle_state=READY,
        lifecycle_error=None,
        sf_state=SF_ACTIVE,
        sf_state_changed_at=state_changed_at,
        first_imported_at=now,
        last_imported_at=now,
        last_run_id=run_id,
        newer_version_quarantined_at=None,
        updated_at=now,
    )


# ---------------------------------------------------------------------------------------
# The load
# ---------------------------------------------------------------------------------------


def _batches(chunks: Iterable[list[TransformedOrder]]) -> Iterable[list[TransformedOrder]]:
    """Re-cut the incoming chunks into statement batches of at most ORDERS_PER_BATCH orders."""
    for chunk in chunks:
        yield from in_batches(chunk, ORDERS_PER_BATCH)


def _by_modstamp(records: list[TransformedOrder], modstamps: dict[str, datetime | None]) -> list[TransformedOrder]:
    """Oldest Salesforce version first, so when orders share an account the newest snapshot wins."""
    return sorted(records, key=lambda r: modstamps[r.order.sf_order_id] or _NEVER)


def _stored_orders(conn: sa.Connection, t: Tables, order_ids: list[str]) -> dict[str, sa.Row]:
    o = t.external_orders
    columns = [
        o.c.sf_order_id,
        o.c.content_hash,
        o.c.sf_system_modstamp,
        o.c.sf_state,
        o.c.sf_state_changed_at,
        o.c.last_run_id,
        o.c.first_imported_at,
        o.c.last_imported_at,
    ]
    return {row.sf_order_id: row for row in select_in(conn, o, columns, o.c.sf_order_id, order_ids)}


def _older_than_stored(staged: datetime | None, stored: sa.Row | None) -> bool:
    """Whether the staged version (its ``SystemModstamp``) is older than the stored one."""
    if stored is None or stored.sf_system_modstamp is None:
        return False
    return staged is not None and staged < stored.sf_system_modstamp


def _read_after(
    conn: sa.Connection,
    t: Tables,
    run_id: str,
    records: list[TransformedOrder],
    stored: dict[str, sa.Row],
    read_until: datetime | None,
    modstamps: dict[str, datetime | None] | None = None,
) -> set[str]:
    """The orders among ``records`` whose stored version differs and was read after this run's
    reading ended (``read_until``): its run began reading Salesforce later. Such a version is newer
    whatever the stamps say: an order's SystemModstamp does not move when its Account is renamed,
    so a late or cleared load of the run before the rename would put the old name back, and no
    later run would see a change to read again."""
    if read_until is None:
        return set()
    differing = {
        r.order.sf_order_id: s.last_run_id
        for r in records
        if (s := stored.get(r.order.sf_order_id)) is not None and s.last_run_id != run_id and s.content_hash != r.content_hash
    }
    if not differing:
        return set()
    runs = t.import_runs
    later = set(
        conn.execute(
            sa.select(runs.c.run_id).where(runs.c.run_id.in_(sorted(set(differing.values()))), runs.c.started_at > read_until)
        ).scalars()
    )
    read_later = {order_id for order_id, last_run_id in differing.items() if last_run_id in later}
    # ``started_at`` is the extract's first try: a run whose extract failed and was retried (or was
    # cleared) began reading again later. The stored version's own staging row, while kept, says
    # when that run read it (staged as its page was read; a retry clears and stages anew). Looked
    # up for the versions with the same stamp only (a later stamp was read later anyway): rare.
    rest = {
        order_id: last_run_id
        for order_id, last_run_id in differing.items()
        if order_id not in read_later and modstamps is not None and modstamps.get(order_id) == stored[order_id].sf_system_modstamp
    }
    if rest:
        s = t.stg_orders
        staged = select_in(
            conn, s, [s.c.run_id, s.c.sf_order_id], s.c.sf_order_id, sorted(rest),
            s.c.run_id.in_(sorted(set(rest.values()))), s.c.staged_at > read_until,
        )
        read_later |= {row.sf_order_id for row in staged if rest.get(row.sf_order_id) == row.run_id}
    return read_later


def _refused_by_later_runs(conn: sa.Connection, t: Tables, run_id: str, read_until: datetime | None) -> frozenset[str]:
    """The orders that a run which began reading after this run's reading ended (``read_until``)
    quarantined or skipped, not released since: Salesforce's newer version was refused, so this
    run's older one is superseded. Loaded, it would be taken for the current one and release the
    refusal (a late or cleared load after the pool let a newer run's validate or transform go
    first): the newer version's problem would be hidden, and never read again. Read once a load
    (two queries): such rows are few, and none in most runs."""
    if read_until is None:
        return frozenset()
    runs = t.import_runs
    later = sa.select(runs.c.run_id).where(runs.c.started_at > read_until, runs.c.run_id != run_id)
    refused: set[str] = set()
    for table in (t.quarantined_orders, t.skipped_orders):
        refused.update(conn.execute(sa.select(table.c.sf_order_id).where(table.c.released_at.is_(None), table.c.run_id.in_(later))).scalars())
    return frozenset(refused)


def _all_but(row: dict[str, Any], *kept: str) -> list[str]:
    """The columns an update overwrites: all the row carries except ``kept`` (keys, first-seen times)."""
    return [column for column in row if column not in kept]


def _customer_rows(written: list[TransformedOrder], now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The parents' rows and the orders' own accounts' rows."""
    parents = [customer_row(r.parent_customer, now) for r in written if r.parent_customer is not None]
    return parents, [customer_row(r.customer, now) for r in written]


def _write_customers(conn: sa.Connection, t: Tables, parents: list[dict[str, Any]], full: list[dict[str, Any]]) -> None:
    """Parents first, insert-only: a parent known only by name never overwrites a full record.
    Then the orders' own accounts, updated only when their content changed."""
    c = t.customers
    upsert(conn, c, parents, ["sf_account_id"], update_columns=[])
    if full:
        upsert(
            conn,
            c,
            full,
            ["sf_account_id"],
            _all_but(full[0], "sf_account_id", "first_imported_at"),
            update_where=lambda incoming: c.c.content_hash != incoming.content_hash,
        )


def _location_rows(written: list[TransformedOrder], now: datetime) -> list[dict[str, Any]]:
    # The id is a hash of customer and normalised address: an existing id is the same location.
    # One row per id, the last one, as upsert would keep it of several.
    latest = {r.location.location_id: r.location for r in written if r.location is not None}
    return [
        {
            "location_id": loc.location_id,
            "customer_id": loc.customer_id,
            "sf_account_id": loc.sf_account_id,
            **_address_columns("", loc.address),
            "first_seen_at": now,
            "updated_at": now,
        }
        for loc in latest.values()
    ]


def _recount_locations(conn: sa.Connection, t: Tables, customer_ids: set[str], now: datetime) -> None:
    """Set the customers' location counts; only customers whose count changed are written.

    Each customer's locations are counted once, grouped in a subquery the UPDATE joins: written
    into the UPDATE's conditions and values, the count was taken four times a customer."""
    c, loc = t.customers, t.customer_locations
    counted = c.alias("counted")
    for batch in in_batches(sorted(customer_ids)):
        counts = (
            sa.select(counted.c.customer_id, sa.func.count(loc.c.location_id).label("n"))  # 0: no location
            .select_from(counted.outerjoin(loc, loc.c.customer_id == counted.c.customer_id))
            .where(one_of(conn, counted.c.customer_id, batch))
            .group_by(counted.c.customer_id)
            .subquery()
        )
        conn.execute(
            sa.update(c)
            .where(c.c.customer_id == counts.c.customer_id)
            .where(sa.or_(c.c.location_count != counts.c.n, c.c.is_multi_location != (counts.c.n > 1)))
            .values(location_count=counts.c.n, is_multi_location=counts.c.n > 1, updated_at=now)
        )


def _new_and_stored(rows: Columns, stored_ids: set[str]) -> tuple[Columns, list[dict[str, Any]]]:
    """Of rows carrying ``sf_order_id``: those of orders not stored before the batch (inserted
    whole, as the columns they are: a first import's, all of them), and those of stored orders
    (merged), as dicts."""
    if not rows:
        return rows, []
    new = [order_id not in stored_ids for order_id in rows.column("sf_order_id")]
    return rows.where(new), (list(rows.where([not n for n in new])) if not all(new) else [])


# What says a child row is written by a run rather than changed: not compared.
_CHILD_BOOKKEEPING = frozenset({"last_run_id", "updated_at"})


def _replace_children(conn: sa.Connection, table: sa.Table, key: str, stored_ids: set[str], rows: Columns, now: datetime) -> None:
    """Write the orders' items (or services); those the new versions no longer have are marked
    deleted (``is_deleted``, ``deleted_at``), never removed, so "what changed since" sees them go.

    ``stored_ids``: the orders among them stored before this batch, the only ones with children.
    The children of new orders are new too (an item belongs to one order for good, a service key
    starts with its order's id): they are inserted, without the merge an upsert costs. A stored
    child is rewritten only when a value differs, so its ``updated_at`` moves with real changes."""
    new, of_stored = _new_and_stored(rows, stored_ids)
    insert_rows(conn, table, new)
    keep = {row[key] for row in of_stored}
    existing = select_in(conn, table, [table.c[key], table.c.is_deleted], table.c.sf_order_id, sorted(stored_ids))
    stale = sorted(row[0] for row in existing if row[0] not in keep and not row[1])
    for batch in in_batches(stale):
        conn.execute(
            sa.update(table).where(one_of(conn, table.c[key], batch)).values(is_deleted=True, deleted_at=now, updated_at=now)
        )
    if of_stored:
        compared = [c for c in of_stored[0] if c != key and c not in _CHILD_BOOKKEEPING]
        upsert(conn, table, of_stored, [key], update_where=lambda incoming: sa.or_(*(table.c[c].is_distinct_from(incoming[c]) for c in compared)))


# Of an item record, what belongs to the product dimension (``products``), not to the item's row.
_PRODUCT_FIELDS = ("product_family", "product_is_active", "pricebook_list_price")
_ITEM_SPEC: _Spec = tuple(
    (f.name, f.name, _date if f.name in ("service_date", "end_date") else None)
    for f in fields(ItemRecord)
    if f.name not in _PRODUCT_FIELDS
)
_SERVICE_SPEC: _Spec = tuple((f.name, f.name, None) for f in fields(ServiceRecord))


def _child_rows(written: list[TransformedOrder], run_id: str, now: datetime) -> tuple[Columns, Columns]:
    """The orders' item rows and service rows (present: a service that comes back is no longer deleted)."""
    present = {"is_deleted": False, "deleted_at": None, "updated_at": now}
    items = _record_columns([item for r in written for item in r.items], _ITEM_SPEC, last_run_id=run_id, **present)
    services = _record_columns([service for r in written for service in r.services], _SERVICE_SPEC, **present)
    return items, services


def _product_rows(written: list[TransformedOrder], now: datetime) -> list[dict[str, Any]]:
    """The price book entries of the orders' products, as these versions of the orders read them.
    Many items share an entry: one row per entry and currency, the last one, as upsert keeps it."""
    latest = {
        (item.sf_pricebook_entry_id, r.order.currency): item  # an order's price book entries are in its currency
        for r in written
        if r.order.currency
        for item in r.items
        if item.sf_pricebook_entry_id and item.sf_product_id
    }
    return [
        {
            "sf_pricebook_entry_id": entry_id,
            "sf_product_id": item.sf_product_id,
            "name": item.product_name,
            "product_code": item.product_code,
            "family": item.product_family,
            "is_active": item.product_is_active,
            "list_price": item.pricebook_list_price,
            "currency": currency,
            "first_imported_at": now,
            "updated_at": now,
        }
        for (entry_id, currency), item in latest.items()
    ]


def _write_products(conn: sa.Connection, t: Tables, rows: list[dict[str, Any]]) -> None:
    """Insert new entries; rewrite known ones only when a value differs, so updated_at means a change."""
    if not rows:
        return
    p = t.products
    key = ["sf_pricebook_entry_id", "currency"]
    compared = [c for c in rows[0] if c not in (*key, "first_imported_at", "updated_at")]
    upsert(
        conn, p, rows, key, _all_but(rows[0], *key, "first_imported_at"),
        update_where=lambda incoming: sa.or_(*(p.c[c].is_distinct_from(incoming[c]) for c in compared)),
    )


# An outbox row of a write-back: the record's own fields, then the request's (_write_outbox).
_WRITE_BACK_SPEC: _Spec = tuple((f.name, f.name, None) for f in fields(WriteBack))


def _write_outbox(
    conn: sa.Connection, t: Tables, written: list[TransformedOrder], run_id: str, now: datetime,
    modstamps: dict[str, datetime | None], tally: _RunTally,
) -> set[tuple[str, str]]:
    """Queue the write-backs as PENDING; a row of the import for the same record still to be sent
    (PENDING, FAILED with attempts left, or PROCESSING, left by a write-back that died: the pool
    keeps every write-back out while a load runs) is replaced by the new write, not duplicated: two
    rows of one record would reach Salesforce in no set order, the older value perhaps last, or
    both in one call. (A shipment's rows are not the import's.) Returns the (sObject, record id) of the records queued. ``modstamps``: the orders' parsed
    ``SystemModstamp`` by order id.

    Where the outbox's records at the load's start are known (``tally.outbox_records``), only
    those and the ones this run queued in earlier batches (``tally.write_backs``) can have rows:
    the rest are inserted without being looked up (most of a first import's)."""
    w = t.writeback_outbox
    latest = {(wb.sf_object, wb.sf_record_id): (wb, r.order.sf_order_id) for r in written for wb in r.write_backs}
    if not latest:
        return set()
    known, queued = tally.outbox_records, tally.write_backs
    replaceable, done = _outbox_rows(conn, t, latest if known is None else [k for k in latest if k in known or k in queued])
    # The same write already made after this version was read (an overlapping run planned it from
    # the version before our write-back): sending it again would write the record twice.
    for key in done.keys() & latest.keys():
        wb, order_id = latest[key]
        read_at = modstamps[order_id]
        if any(fields == wb.fields and read_at is not None and read_at < at for fields, at in done[key]):
            del latest[key]
    request = {
        "next_attempt_at": now,
        "attempts": 0,
        "last_error_code": None,
        "last_error_message": None,
        "updated_run_id": run_id,
        "updated_at": now,
    }
    replacements = [
        {"id": row_id, "sf_order_id": wb.sf_order_id, "action": wb.action, "fields": wb.fields, "state": OUTBOX_PENDING, **request}
        for key, (wb, _) in latest.items()
        for row_id in replaceable.get(key, ())
    ]
    update_rows(conn, w, replacements, ["id"])
    # in the order queued: the rows' ids follow it
    queued_now = [wb for key, (wb, _) in latest.items() if key not in replaceable]
    insert_rows(conn, w, _record_columns(queued_now, _WRITE_BACK_SPEC, state=OUTBOX_PENDING, created_run_id=run_id, created_at=now, **request))
    return set(latest)


def _outbox_rows(
    conn: sa.Connection, t: Tables, keys: Iterable[tuple[str, str]]
) -> tuple[dict[tuple[str, str], list[int]], dict[tuple[str, str], list[tuple[Any, datetime]]]]:
    """For each (sObject, record id) in ``keys``: the ids of the import's outbox rows a new write
    replaces (PENDING, FAILED, PROCESSING), and the fields and time of its DONE ones (those that
    wrote all their fields: not one sent without its Status, which a later write may still set). A shipment's rows (of the
    same Order, say) are left out: they are not the import's to replace.

    Found per sObject through the (sf_object, sf_record_id) index, the state checked here: with
    the state in the query PostgreSQL may read through the (state, ...) index, whose statistics
    miss the PENDING rows this load wrote, and so scan all of them for every batch.
    """
    w = t.writeback_outbox
    record_ids: dict[str, list[str]] = {}
    for sf_object, record_id in sorted(keys):
        record_ids.setdefault(sf_object, []).append(record_id)
    replaceable: dict[tuple[str, str], list[int]] = {}
    done: dict[tuple[str, str], list[tuple[Any, datetime]]] = {}
    columns = [w.c.id, w.c.sf_record_id, w.c.state, w.c.fields, w.c.updated_at, w.c.last_error_code]
    for sf_object, ids in record_ids.items():
        for row in select_in(conn, w, columns, w.c.sf_record_id, ids, w.c.sf_object == sf_object, w.c.shipment_key.is_(None)):
            if row.state in _REPLACED_STATES:
                replaceable.setdefault((sf_object, row.sf_record_id), []).append(row.id)
            elif row.state == OUTBOX_DONE and row.last_error_code is None:  # (with a code, sent without its Status)
                done.setdefault((sf_object, row.sf_record_id), []).append((row.fields, row.updated_at))
    return replaceable, done


# A FAILED row has attempts left (at the limit it is DEAD). A PROCESSING one was claimed by a
# write-back that died before its bookkeeping: whether or not its call reached Salesforce, the new
# write (the record's whole state as the newer version has it) is what is to be sent.
_REPLACED_STATES = (OUTBOX_PENDING, OUTBOX_FAILED, OUTBOX_PROCESSING)

# Up to this many outbox rows (or unreleased refusals and skips), the load reads their records
# once instead of looking up each batch's.
OUTBOX_READ_WHOLE = 10_000


def _outbox_records(conn: sa.Connection, t: Tables) -> set[tuple[str, str]] | None:
    """The (sObject, record id) of every outbox row, read in the load's transaction, or None: more
    than ``OUTBOX_READ_WHOLE`` rows (then each batch looks up its own records)."""
    w = t.writeback_outbox
    rows = conn.execute(sa.select(w.c.sf_object, w.c.sf_record_id).limit(OUTBOX_READ_WHOLE + 1)).all()
    return None if len(rows) > OUTBOX_READ_WHOLE else {(row.sf_object, row.sf_record_id) for row in rows}


def _unreleased_orders(conn: sa.Connection, t: Tables) -> set[str] | None:
    """The orders with a refusal or skip not yet released, read in the load's transaction, or
    None: more than ``OUTBOX_READ_WHOLE`` rows (then each batch releases its own orders)."""
    found: set[str] = set()
    for table in (t.quarantined_orders, t.skipped_orders):
        unreleased = sa.select(table.c.sf_order_id).where(table.c.released_at.is_(None)).limit(OUTBOX_READ_WHOLE + 1)
        order_ids = conn.execute(unreleased).scalars().all()
        if len(order_ids) > OUTBOX_READ_WHOLE:
            return None
        found.update(order_ids)
    return found


def _release_quarantine(conn: sa.Connection, t: Tables, order_ids: list[str], now: datetime, unreleased: set[str] | None) -> None:
    """The orders are loaded: their refusals and skips of earlier runs are over.

    ``unreleased``: the orders that had any at the load's start (None: not known). Only those
    are updated: a batch of others (most of a run's) sends no statement, where two UPDATEs with
    its 2,000 order ids each cost some 10 ms a batch. (The load's own refusals are of orders in
    batches already written: each order of a run is in one batch.)"""
    if unreleased is not None:
        order_ids = [order_id for order_id in order_ids if order_id in unreleased]
        if not order_ids:
            return
    for table in (t.quarantined_orders, t.skipped_orders):
        _released(conn, table, order_ids, now)


@dataclass
class _PreparedBatch:
    """One batch, classified against the stored orders and turned into rows: everything the
    load can do before it writes, so it is done ahead (see load_run) while the previous batch
    is being written."""

    order_ids: list[str]  # the batch's orders but the superseded ones
    inserted: int
    updated: int
    unchanged: int
    superseded: int
    written: list[TransformedOrder]  # new and changed, oldest Salesforce version first
    stored_ids: set[str]  # of the written ones, those stored before (the changed ones)
    modstamps: dict[str, datetime | None]  # the orders' SystemModstamp, parsed once, by order id
    parents: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)
    locations: list[dict[str, Any]] = field(default_factory=list)
    products: list[dict[str, Any]] = field(default_factory=list)
    orders: Columns = field(default_factory=lambda: Columns((), ()))
    items: Columns = field(default_factory=lambda: Columns((), ()))
    services: Columns = field(default_factory=lambda: Columns((), ()))


def _prepare_batch(
    engine: sa.Engine,
    t: Tables,
    run_id: str,
    batch: list[TransformedOrder],
    now: datetime,
    conn: sa.Connection | None = None,
    read_until: datetime | None = None,
    refused_later: frozenset[str] = frozenset(),
) -> _PreparedBatch:
    """Classify the batch's orders (new, changed, unchanged) and build the rows to write.

    The stored orders are read on a connection of their own: the load's transaction has not
    written these orders (each order of a run is in one batch), so it would see the same. (The
    load's own ``conn`` when it prepares again, order by order, inside its transaction.)

    Prepared on a connection of its own (the read-ahead thread), a batch of new orders only (a
    first import's) also has its COPY input converted: see :func:`convert_for_copy`.

    ``read_until``: when this run's extract ended (None: not known, a run of an older release).
    ``refused_later``: see :func:`_refused_by_later_runs`."""
    if conn is None:
        with engine.connect() as reader:
            prepared = _prepare_batch(engine, t, run_id, batch, now, conn=reader, read_until=read_until, refused_later=refused_later)
            if prepared.written and not prepared.stored_ids:  # all inserted whole (_write_batch)
                for table, rows in ((t.external_orders, prepared.orders), (t.external_order_items, prepared.items), (t.order_services, prepared.services)):
                    convert_for_copy(reader, table, rows)
            return prepared
    records = list({r.order.sf_order_id: r for r in batch}.values())
    modstamps = {r.order.sf_order_id: _timestamp(r.order.sf_system_modstamp) for r in records}
    stored = _stored_orders(conn, t, [r.order.sf_order_id for r in records])
    # A version never replaces a later one: a load that commits after a newer run (a cleared or
    # late task) keeps what the newer run stored. Equal stamps go on to the content hash, unless the
    # stored version was read after this one (its Account renamed in between, the order unchanged).
    current = [r for r in records if not _older_than_stored(modstamps[r.order.sf_order_id], stored.get(r.order.sf_order_id))]
    read_later = _read_after(conn, t, run_id, current, stored, read_until, modstamps)
    read_later |= {r.order.sf_order_id for r in current if r.order.sf_order_id in refused_later}
    current = [r for r in current if r.order.sf_order_id not in read_later]
    superseded = len(records) - len(current)
    records = current
    order_ids = [r.order.sf_order_id for r in records]
    new = [r for r in records if r.order.sf_order_id not in stored]
    # A changed hash, or an order we had marked deactivated/deleted that is Activated again.
    changed = [
        r
        for r in records
        if (s := stored.get(r.order.sf_order_id)) is not None and (s.content_hash != r.content_hash or s.sf_state != SF_ACTIVE)
    ]
    # Unchanged because an earlier try of this same run committed them (the task died after its
    # commit): counted as that try wrote them, so the run's counts stay right.
    written_ids = {r.order.sf_order_id for r in new + changed}
    earlier_try = [
        stored[r.order.sf_order_id]
        for r in records
        if r.order.sf_order_id not in written_ids and stored[r.order.sf_order_id].last_run_id == run_id
    ]
    inserted_before = sum(1 for row in earlier_try if row.first_imported_at == row.last_imported_at)
    prepared = _PreparedBatch(
        order_ids=order_ids,
        inserted=len(new) + inserted_before,
        updated=len(changed) + len(earlier_try) - inserted_before,
        unchanged=len(records) - len(new) - len(changed) - len(earlier_try),
        superseded=superseded,
        written=_by_modstamp(new + changed, modstamps),
        stored_ids={r.order.sf_order_id for r in changed},
        modstamps=modstamps,
    )
    if not prepared.written:
        return prepared

    def state_changed_at(order_id: str) -> datetime:
        s = stored.get(order_id)
        return s.sf_state_changed_at if s is not None and s.sf_state == SF_ACTIVE else now

    prepared.parents, prepared.customers = _customer_rows(prepared.written, now)
    prepared.locations = _location_rows(prepared.written, now)
    written_ids = [r.order.sf_order_id for r in prepared.written]
    prepared.orders = _order_columns(
        prepared.written, run_id, now, list(map(state_changed_at, written_ids)), list(map(modstamps.__getitem__, written_ids))
    )
    prepared.items, prepared.services = _child_rows(prepared.written, run_id, now)
    prepared.products = _product_rows(prepared.written, now)
    return prepared


def _write_batch(conn: sa.Connection, t: Tables, run_id: str, batch: _PreparedBatch, now: datetime, tally: _RunTally) -> None:
    """Write one prepared batch; ``tally`` takes it in only once every statement went through, so a
    batch the warehouse refuses (rolled back to its savepoint) leaves the run's counts as they were."""
    _release_quarantine(conn, t, batch.order_ids, now, tally.unreleased)
    written = batch.written
    # An account has orders in many batches: what this run already wrote is not sent again (the
    # merge would leave it as it is), which spares most customer and location rows of a large run.
    parents = [row for row in batch.parents if row["sf_account_id"] not in tally.customers]
    customers = [row for row in batch.customers if tally.customer_hashes.get(row["sf_account_id"]) != row["content_hash"]]
    locations = [row for row in batch.locations if row["location_id"] not in tally.locations]
    write_backs: set[tuple[str, str]] = set()
    if written:
        _write_customers(conn, t, parents, customers)
        upsert(conn, t.customer_locations, locations, ["location_id"], update_columns=[])
        # Orders not stored when the batch was prepared are inserted outright: the import writes
        # orders one run at a time (the warehouse pool). The changed ones are merged.
        stored = batch.stored_ids
        new, changed_rows = _new_and_stored(batch.orders, stored)
        insert_rows(conn, t.external_orders, new)
        if changed_rows:
            upsert(conn, t.external_orders, changed_rows, ["sf_order_id"], _all_but(changed_rows[0], "sf_order_id", "first_imported_at"))
        _replace_children(conn, t.external_order_items, "sf_order_item_id", stored, batch.items, now)
        _replace_children(conn, t.order_services, "service_key", stored, batch.services, now)
        _write_products(conn, t, batch.products)
        if tally.history:
            history.add(conn, t, batch.orders, batch.items, run_id, now)
        write_backs = _write_outbox(conn, t, written, run_id, now, batch.modstamps, tally)
    tally.counts.inserted += batch.inserted
    tally.counts.updated += batch.updated
    tally.counts.unchanged += batch.unchanged
    tally.counts.superseded += batch.superseded
    tally.customers.update(row["sf_account_id"] for row in parents + customers)
    tally.customer_hashes.update((row["sf_account_id"], row["content_hash"]) for row in customers)
    tally.locations.update(row["location_id"] for row in locations)
    tally.write_backs |= write_backs
    tally.recount |= {r.customer.customer_id for r in written} | {r.location.customer_id for r in written if r.location}


def _write_batch_or_refuse(
    engine: sa.Engine, conn: sa.Connection, t: Tables, run_id: str, batch: _PreparedBatch, records: list[TransformedOrder],
    now: datetime, tally: _RunTally,
) -> list[TransformedOrder]:
    """Write the batch in a savepoint; if the warehouse refuses a value, write its orders one by
    one and quarantine those it refuses (naming the field and why), so one bad row never stops
    the run; returns the orders refused. The failed statement's text and values are never logged:
    they hold customer data."""
    try:
        with conn.begin_nested():
            _write_batch(conn, t, run_id, batch, now, tally)
        return []
    except sa.exc.DBAPIError as exc:
        if refuses_every_row(exc):
            raise  # not one value (the warehouse gone, read-only, a missing privilege): the task fails, saying so
        log.warning("The warehouse refused a batch of %d orders (%s); writing them one by one", len(records), refused_reason(exc))
    refused, refused_records = [], []
    for record in records:
        single = _prepare_batch(engine, t, run_id, [record], now, conn=conn, read_until=tally.read_until, refused_later=tally.refused_later)
        try:
            with conn.begin_nested():
                _write_batch(conn, t, run_id, single, now, tally)
        except sa.exc.DBAPIError as exc:
            if refuses_every_row(exc):
                raise
            refused.append(_refusal(t, single, record, exc))
            refused_records.append(record)
    record_quarantine(conn, run_id, refused, schema=t.metadata.schema)
    tally.counts.refused += len(refused)
    for row in refused:
        log.warning("Quarantined order %s (%s): %s", row["sf_order_id"], row["order_number"], row["details"]["warehouse_refused"])
    return refused_records


def refused_reason(exc: sa.exc.DBAPIError) -> str:
    """The database's own words, first line only: never the statement or its bound values."""
    return f"{type(exc.orig).__name__}: {str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else 'no message'}"


def _refusal(t: Tables, batch: _PreparedBatch, record: TransformedOrder, exc: sa.exc.DBAPIError) -> dict[str, Any]:
    """The quarantine row of an order the warehouse refused: which field and why, where it can tell."""
    problems = [
        problem
        # (every table the batch writes: a product's, a location's or a parent's value refuses the order too)
        for table, rows in ((t.external_orders, batch.orders), (t.external_order_items, batch.items),
                            (t.order_services, batch.services), (t.customers, batch.customers), (t.customers, batch.parents),
                            (t.customer_locations, batch.locations), (t.products, batch.products))
        for row in rows
        for problem in column_problems(table, row)
    ]
    reason = "; ".join(dict.fromkeys(problems)) or refused_reason(exc)
    return {
        "sf_order_id": record.order.sf_order_id,
        "order_number": record.order.order_number,
        "account_name": record.order.account_name,
        "sf_account_id": record.customer.sf_account_id,
        "failed_checks": ["warehouse_refused"],
        "details": {"warehouse_refused": f"the warehouse refused the order: {reason}"},
        "card_data_masked": record.order.card_data_masked,
    }


def column_problems(table: sa.Table, row: dict[str, Any]) -> list[str]:
    """What in ``row`` its table's columns cannot hold: a text too long, a NUL character, a number
    with more digits or decimals than the column keeps. Values are not quoted (they may be
    personal data): the column, its limit and the size are."""
    problems = []
    for name, value in row.items():
        column = table.c.get(name)
        if column is None or value is None:
            continue
        kind = column.type
        if isinstance(value, str):
            length = getattr(kind, "length", None)
            if length is not None and len(value) > length:
                problems.append(f"{table.name}.{name} is {len(value)} characters, more than the {length} it holds")
            if "\x00" in value:
                problems.append(f"{table.name}.{name} contains a NUL character")
        elif isinstance(kind, sa.Numeric) and kind.precision is not None and isinstance(value, int | float | Decimal):
            exact = Decimal(str(value))
            scale = kind.scale or 0
            digits = len(exact.as_tuple().digits) + exact.as_tuple().exponent
            if digits > kind.precision - scale:
                problems.append(f"{table.name}.{name} has {digits} digits before the point, more than the {kind.precision - scale} it holds")
            if -exact.as_tuple().exponent > scale and exact != exact.quantize(Decimal(1).scaleb(-scale)):
                problems.append(f"{table.name}.{name} has more than {scale} decimals: they would be lost")
    return problems


def _advance_watermark(
    conn: sa.Connection,
    t: Tables,
    watermark: str,
    now: datetime,
    key: str = WATERMARK_KEY,
    covered_from: datetime | None = None,
    staging_gone: bool = False,
) -> None:
    """sync_state's ``key`` := max(stored, ``watermark``), compared as instants, kept as ISO UTC.

    ``covered_from``: the run read every order changed from then on (None: since the lookback's
    start). The mark moves only when that reaches back to the stored mark: a run that read a later
    stretch alone (a backfill of a later interval) would otherwise jump over what it never read.

    ``staging_gone``: the run read orders and none of them is staged any more (see
    :class:`StagingGone`), raised rather than moving the mark over them."""
    s = t.sync_state
    candidate = parse_utc(watermark)
    stored = conn.execute(sa.select(s.c.value).where(s.c.key == key).with_for_update()).scalar()
    if stored is not None and parse_utc(stored) >= candidate:
        return
    if covered_from is not None and (stored is None or parse_utc(stored) < covered_from):
        log.info(
            "%s stays at %s: this run read changes from %s on only, not everything since the mark",
            key, stored, _iso(covered_from),
        )
        return
    if staging_gone:
        raise StagingGone(f"{key} would move from {stored} to {_iso(candidate)} over orders that were never loaded")
    upsert(conn, s, [{"key": key, "value": _iso(candidate), "updated_at": now}], ["key"])


class StagingGone(RuntimeError):
    """A run's load found none of the orders its extract read still staged (purged after
    ``retention_days``, before a failed load was cleared) where loading nothing would have moved the
    watermark over them. Were they all dropped as superseded (later versions loaded by a later run),
    that run moved the mark past them already, or the run is refused where it could have gone on:
    a run from ``extract`` then does it."""


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def load_run(
    engine: sa.Engine,
    run_id: str,
    chunks: Iterable[list[TransformedOrder]],
    *,
    schema: str | None = None,
    now: datetime | None = None,
    watermark: str | None,
    covered_from: datetime | None = None,
    card_fields: Sequence[str] = (),
    order_object: str = "Order",
    keep_history: bool = False,
    staging_gone: bool = False,
    read_until: datetime | None = None,
) -> LoadCounts:
    """Load every chunk of the run in ONE transaction and move the watermark to ``watermark``
    (where the run's window reached: ``runs.watermark_reached``) if it is later than the stored one and the run
    read everything changed since the stored one (``covered_from``, see _advance_watermark).
    The orders the warehouse refuses are quarantined, and their ``card_fields`` queued to be
    X-ed out (``card_masks``). ``keep_history``: every new version is kept as well (history.py).
    ``staging_gone``: see :class:`StagingGone`. ``read_until``: when the run's extract ended (a
    version read before a stored one never replaces it, see :func:`_read_after`)."""
    now = now or utc_now()
    t = tables(schema)
    tally = _RunTally(history=keep_history)
    progress = Progress("load", "orders")
    # Reading, decoding and preparing the next batch (Python) overlaps writing this one (mostly
    # waiting for the database).
    tally.read_until = read_until
    with engine.connect() as conn:
        tally.refused_later = _refused_by_later_runs(conn, t, run_id, read_until)
    prepared = read_ahead(
        (_prepare_batch(engine, t, run_id, batch, now, read_until=read_until, refused_later=tally.refused_later), batch)
        for batch in _batches(chunks)
    )
    with engine.begin() as conn:
        if keep_history:
            history.seed(conn, t)
        tally.outbox_records = _outbox_records(conn, t)
        tally.unreleased = _unreleased_orders(conn, t)
        for batch, records in prepared:
            refused = _write_batch_or_refuse(engine, conn, t, run_id, batch, records, now, tally)
            stamps = {r.order.sf_order_id: r.order.sf_system_modstamp for r in refused}
            queue_card_masks(conn, stamps, card_fields=card_fields, order_object=order_object, run_id=run_id, now=now, schema=schema)
            faultpoints.reach("load.orders_written")
            progress.add(len(batch.order_ids), f"{tally.counts.inserted} inserted, {tally.counts.updated} updated")
        # once for the run, not per batch: a customer's orders are spread over many batches
        _recount_locations(conn, t, tally.recount, now)
        if watermark:
            _advance_watermark(conn, t, watermark, now, covered_from=covered_from, staging_gone=staging_gone)
        faultpoints.reach("load.before_commit")
    faultpoints.reach("load.committed")
    progress.finish(f"{tally.counts.inserted} inserted, {tally.counts.updated} updated, committed")
    return tally.result()


def get_watermark(engine: sa.Engine, schema: str | None = None, key: str = WATERMARK_KEY) -> str | None:
    """The watermark: every order changed before it is loaded (ISO 8601 UTC, ``...Z``), or None before the first load.

    ``key=STATUS_CHECK_KEY``: how far status changes have been checked, or None before the first check."""
    s = tables(schema).sync_state
    with engine.connect() as conn:
        return conn.execute(sa.select(s.c.value).where(s.c.key == key)).scalar()


# ---------------------------------------------------------------------------------------
# Orders that left the Activated state in Salesforce
# ---------------------------------------------------------------------------------------


_LEFT_ACTIVE = {SF_DEACTIVATED: "set back to Draft", SF_DELETED: "deleted"}


def _state_from_change(change: dict[str, Any]) -> str:
    if str(change.get("IsDeleted")).lower() == "true":  # JSON true, or "true" from a Bulk CSV
        return SF_DELETED
    if change.get("StatusCode") == "Draft":
        return SF_DEACTIVATED
    return SF_ACTIVE


def mark_status_changes(
    engine: sa.Engine,
    changes: list[dict[str, Any]],
    *,
    run_id: str,
    schema: str | None = None,
    now: datetime | None = None,
    checked_to: str | None = None,
    card_fields: Sequence[str] = (),
    order_object: str = "Order",
) -> int:
    """Mark orders we hold that went back to Draft (``deactivated``) or were deleted (``deleted``).

    ``changes``: ``{"Id", "StatusCode", "IsDeleted", "SystemModstamp"}`` per Salesforce order.
    Their write-backs still to be sent become DEAD with the reason: writing ``Imported`` onto a
    Draft or deleted order would be wrong. A Draft order whose cancelled write-back was to X out
    its card fields gets a write-back of only ``card_fields`` instead (``card_masks``).
    ``checked_to``: the instant up to which ``changes`` holds every status change; it becomes the
    ``STATUS_CHECK_KEY`` mark in the same transaction. Returns how many orders were marked.
    """
    now = now or utc_now()
    t = tables(schema)
    o, w = t.external_orders, t.writeback_outbox
    latest: dict[str, dict[str, Any]] = {}
    for change in sorted(changes, key=lambda c: c.get("SystemModstamp") or ""):
        latest[change["Id"]] = change
    wanted = {order_id: state for order_id, c in latest.items() if (state := _state_from_change(c)) != SF_ACTIVE}
    marked: dict[str, str] = {}
    with engine.begin() as conn:
        for batch in in_batches(sorted(wanted)):
            held = conn.execute(sa.select(o.c.sf_order_id, o.c.sf_state).where(one_of(conn, o.c.sf_order_id, batch)))
            marked.update({row.sf_order_id: wanted[row.sf_order_id] for row in held if row.sf_state != wanted[row.sf_order_id]})
            # A quarantined or skipped order that left Activated is no longer the import's to hold
            # back: its rows are released (activated again, it is read and checked anew).
            for left_out in (t.quarantined_orders, t.skipped_orders):
                _released(conn, left_out, batch, now)
        # The marked version's stamp is stored with it: an older Activated version staged by a late
        # or cleared run can then never make the order active again (see load._older_than_stored).
        stamped = [
            {"b_id": order_id, "b_state": state, "b_stamp": _timestamp(latest[order_id].get("SystemModstamp"))}
            for order_id, state in marked.items()
        ]
        if stamped:
            conn.execute(
                sa.update(o)
                .where(o.c.sf_order_id == sa.bindparam("b_id"))
                .values(
                    sf_state=sa.bindparam("b_state"),
                    sf_state_changed_at=now,
                    updated_at=now,
                    last_run_id=run_id,
                    sf_system_modstamp=sa.func.coalesce(sa.bindparam("b_stamp", type_=o.c.sf_system_modstamp.type), o.c.sf_system_modstamp),
                ),
                stamped,
            )
            history.close(conn, t, marked, now)  # its version ends with it (history mode)
        for state, reason in _LEFT_ACTIVE.items():
            for batch in in_batches(sorted(order_id for order_id, s in marked.items() if s == state)):
                unsent_masks = (
                    sa.select(w.c.sf_order_id)
                    .where(one_of(conn, w.c.sf_order_id, batch), w.c.state.in_(OUTBOX_UNSENT_STATES))
                    .where(w.c.sf_object == order_object, w.c.action.contains(CARD_MASK_ACTION))
                )
                cancelled_masks = set(conn.execute(unsent_masks).scalars()) if state == SF_DEACTIVATED else set()
                _wait_for_the_order(conn, t, batch, reason, now)
                conn.execute(
                    sa.update(w)
                    .where(one_of(conn, w.c.sf_order_id, batch), w.c.state.in_(OUTBOX_UNSENT_STATES))
                    .values(
                        state=OUTBOX_DEAD,
                        next_attempt_at=None,
                        last_error_code=f"ORDER_{state.upper()}",
                        last_error_message=f"not sent: the order was {reason} in Salesforce",
                        updated_run_id=run_id,
                        updated_at=now,
                    )
                )
                stamps = {order_id: latest[order_id].get("SystemModstamp") for order_id in cancelled_masks}
                queue_card_masks(
                    conn, stamps, card_fields=card_fields, order_object=order_object, run_id=run_id, now=now, schema=schema
                )
        if checked_to:
            _advance_watermark(conn, t, checked_to, now, key=STATUS_CHECK_KEY)
        faultpoints.reach("mark_status_changes.before_commit")
    return len(marked)


def _wait_for_the_order(conn: sa.Connection, t: Tables, order_ids: list[str], reason: str, now: datetime) -> None:
    """The shipments whose writes to these orders are about to be given up wait for their order
    instead: ``INVALID`` with why, checked again by every shipments run, and queued again once the
    order is active (an order is set back to Draft to amend its products, then activated again):
    given up for good, the Order would never show its tracking."""
    w, s = t.writeback_outbox, t.order_shipments
    keys = conn.execute(
        sa.select(w.c.shipment_key)
        .where(one_of(conn, w.c.sf_order_id, order_ids), w.c.state.in_(OUTBOX_UNSENT_STATES), w.c.shipment_key.is_not(None))
        .distinct()
    ).scalars().all()
    for batch in in_batches(sorted(keys)):
        conn.execute(
            sa.update(s)
            .where(one_of(conn, s.c.shipment_key, batch), s.c.state == SHIPMENT_QUEUED)
            .values(state=SHIPMENT_INVALID, errors=[f"order: {reason} in Salesforce before this shipment's write was sent: sent once the order is Activated again"],
                    checked_at=now)
        )


# ---------------------------------------------------------------------------------------
# Quarantine
# ---------------------------------------------------------------------------------------


def record_skipped(conn: sa.Connection, run_id: str, skipped: Sequence[SkippedOrder], *, schema: str | None = None, now: datetime | None = None) -> None:
    """One ``skipped_orders`` row per order the run deliberately did not import, with why."""
    skipped_at = now or utc_now()
    rows = [
        {
            "run_id": run_id,
            "sf_order_id": order.sf_order_id,
            "order_number": order.order_number,
            "account_name": order.account_name,
            "reason": order.reason,
            "total_amount": order.total_amount,
            "currency": order.currency,
            "sf_system_modstamp": _timestamp(order.sf_system_modstamp),
            "skipped_at": skipped_at,
            "released_at": None,
            "updated_at": skipped_at,
        }
        for order in skipped
    ]
    t = tables(schema)
    upsert(conn, t.skipped_orders, rows, ["run_id", "sf_order_id"])
    _released(conn, t.quarantined_orders, [order.sf_order_id for order in skipped], skipped_at)


def _released(conn: sa.Connection, left_out: sa.Table, order_ids: Sequence[str], now: datetime) -> None:
    """Release the orders' open rows of ``left_out`` (quarantined_orders or skipped_orders): an
    order's newest outcome says where it is (loaded, refused, skipped, left Activated), never two."""
    for batch in in_batches(sorted(set(order_ids))):
        conn.execute(
            sa.update(left_out)
            .where(one_of(conn, left_out.c.sf_order_id, batch), left_out.c.released_at.is_(None))
            .values(released_at=now, updated_at=now)
        )


def clear_skipped(conn: sa.Connection, run_id: str, *, within: OrderIdRange = EVERY_ORDER_ID, schema: str | None = None) -> None:
    """A retried transform decides again which orders it skips (``within``: of its range of order ids)."""
    s = tables(schema).skipped_orders
    conn.execute(sa.delete(s).where(s.c.run_id == run_id, *within.where(s.c.sf_order_id)))


def _account_id(value: Any) -> str | None:
    """An order's Account Id as the quarantine keeps it: an Id, or nothing (never a value that
    would make the quarantine itself refused)."""
    return value if isinstance(value, str) and SALESFORCE_ID_PATTERN.fullmatch(value) else None


def record_quarantine(
    conn: sa.Connection, run_id: str, rows: list[dict[str, Any]], *, schema: str | None = None, now: datetime | None = None
) -> None:
    """Quarantine invalid orders of the run; ``rows``: sf_order_id, order_number, account_name,
    sf_account_id (the order's Account, when known), failed_checks (check names), details ({check: message naming the field and value}), and
    optionally card_data_masked (the fields whose card numbers were masked)."""
    quarantined_at = now or utc_now()
    records = [
        {
            "run_id": run_id,
            "sf_order_id": row["sf_order_id"],
            # as Salesforce holds them (an order may be quarantined for them), but storable
            "order_number": storable(row.get("order_number")),
            "account_name": storable(row.get("account_name")),
            "sf_account_id": _account_id(row.get("sf_account_id")),
            "failed_checks": list(row["failed_checks"]),
            "details": dict(row["details"]),
            **card_data_flag(row.get("card_data_masked", ())),
            "quarantined_at": quarantined_at,
            "released_at": None,
            "updated_at": quarantined_at,
        }
        for row in rows
    ]
    t = tables(schema)
    upsert(conn, t.quarantined_orders, records, ["run_id", "sf_order_id"])
    _released(conn, t.skipped_orders, [row["sf_order_id"] for row in rows], quarantined_at)
    # An imported order whose newer version is refused keeps its loaded version, marked as such:
    # never silently taken for Salesforce's current one.
    o = t.external_orders
    for batch in in_batches(sorted({row["sf_order_id"] for row in rows})):
        conn.execute(
            sa.update(o)
            .where(one_of(conn, o.c.sf_order_id, batch), o.c.newer_version_quarantined_at.is_(None))
            .values(newer_version_quarantined_at=quarantined_at, updated_at=quarantined_at)
        )


__all__ = [
    "STATUS_CHECK_KEY", "LoadCounts", "WATERMARK_KEY", "clear_skipped", "get_watermark", "load_run", "mark_status_changes",
    "record_quarantine", "record_skipped",
]
