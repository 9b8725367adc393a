"""The warehouse reads behind the External Orders pages: filtered, paged, one query per list.

Every list is ordered on an indexed column and fetched a page at a time (LIMIT/OFFSET plus one
COUNT with the same filters), so a page costs the same on 100 orders as on 100,000. The functions
take a connection and the warehouse ``Tables`` and return plain dicts, ready for a template.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from salesforce_orders.model import COMPLETE, FAILED, LIFECYCLE_STATES, SF_ACTIVE
from salesforce_orders.redaction import mask_card_numbers
from salesforce_orders.warehouse.definitions import OUTBOX_DEAD, OUTBOX_FAILED, Tables
from salesforce_orders.warehouse.views import superseded_outbox_row

# An Order's Salesforce id (key prefix 801, 15 or 18 characters): a re-sync names it in ``order_ids``.
ORDER_ID = re.compile(r"801[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
MAX_SEARCH_LENGTH = 100

# Why an order's write-back rows were abandoned without a Salesforce error (see load.mark_status_changes).
ABANDONED_CODES = ("ORDER_DEACTIVATED", "ORDER_DELETED")


@dataclass(frozen=True)
class Page:
    """One page of a list: its rows, and where it sits in the whole result."""

    rows: list[dict[str, Any]]
    total: int
    number: int
    size: int
    asked: int | None = None  # the page number asked for when it was past the last one (the last is shown)

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.size))

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages

    @property
    def first_row(self) -> int:
        return (self.number - 1) * self.size + 1 if self.rows else 0

    @property
    def last_row(self) -> int:
        return self.first_row + len(self.rows) - 1 if self.rows else 0


@dataclass(frozen=True)
class OrderFilter:
    """The Orders page's filters; each one left empty matches everything."""

    state: str | None = None  # one of LIFECYCLE_STATES
    failed_only: bool = False  # red sync status: write-back failed, or failing and being retried
    card_data_masked_only: bool = False  # card numbers were masked in the order's Salesforce data
    imported_from: date | None = None  # last import on or after this UTC day
    imported_to: date | None = None  # last import on or before this UTC day
    search: str = ""  # order number (exact, or its start) or part of the account name

    def __post_init__(self) -> None:
        if self.state is not None and self.state not in LIFECYCLE_STATES:
            raise ValueError(f"unknown lifecycle state {self.state!r}: use one of {', '.join(LIFECYCLE_STATES)}")
        if len(self.search) > MAX_SEARCH_LENGTH:
            raise ValueError(f"search text is longer than {MAX_SEARCH_LENGTH} characters")


@dataclass(frozen=True)
class Overview:
    """The counts shown above every page."""

    orders_by_state: dict[str, int] = field(default_factory=dict)
    open_quarantine: int = 0
    open_writeback_failures: int = 0

    @property
    def orders(self) -> int:
        return sum(self.orders_by_state.values())


def page_bounds(number: int, size: int) -> tuple[int, int]:
    """A valid (page number, page size) from what the request asked for."""
    return max(1, number), min(max(1, size), MAX_PAGE_SIZE)


def search_text(text: str) -> str:
    """A search as the warehouse can hold it: trimmed, without NUL characters. PostgreSQL text cannot
    contain one (the query would fail), and ``storable`` drops them from what the import stores.
    A card number (or security code) pasted into a search box is masked as the import masks what it
    stores: the warehouse holds none to find, and the page echoes the search (its box, its notice,
    its pager's links), which must never show one. An Order's Salesforce id is kept: 15 digits may
    pass the Luhn check, but no payment card's number begins with 8 (ISO/IEC 7812)."""
    text = text.replace("\x00", "").strip()
    return text if ORDER_ID.fullmatch(text) else mask_card_numbers(text) or ""


def _like_pattern(text: str, *, prefix_only: bool = False) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"{escaped}%" if prefix_only else f"%{escaped}%"


# SQLite's lower() and LIKE fold ASCII letters only: "österreich" would not find "Österreich Telekom".
# Searches on SQLite compare through this function instead (Python's str.lower, registered on the
# connection), as PostgreSQL's ILIKE folds every letter.
SQLITE_LOWER = "salesforce_orders_lower"


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _with_search_functions(conn: sa.Connection) -> None:
    """Register what the searches use on a SQLite connection (cheap; idempotent)."""
    if conn.dialect.name == "sqlite":
        conn.connection.driver_connection.create_function(SQLITE_LOWER, 1, _lower, deterministic=True)


def _contains_any_case(column: sa.ColumnElement[str], text: str, dialect: str) -> sa.ColumnElement[bool]:
    """``column`` holds ``text`` anywhere, in any case: non-ASCII letters too (``Ö`` as ``ö``)."""
    if dialect == "sqlite":
        return getattr(sa.func, SQLITE_LOWER)(column).like(_like_pattern(text.lower()), escape="\\")
    return column.ilike(_like_pattern(text), escape="\\")


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _count(conn: sa.Connection, query: sa.Select) -> int:
    return conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()


def _paged(
    conn: sa.Connection, query: sa.Select, order_by: Sequence[Any], number: int, size: int, *, count_query: sa.Select | None = None
) -> Page:
    """``query`` sorted and cut to page ``number``; ``count_query`` (default ``query``) counts the whole result."""
    number, size = page_bounds(number, size)
    total = _count(conn, count_query if count_query is not None else query)
    # Past the last page: the last one. Its OFFSET then fits the database's integer (a page number
    # typed into the address could ask for more rows than PostgreSQL's bigint or SQLite can count).
    last = max(1, math.ceil(total / size))
    asked, number = (number, last) if number > last else (None, number)
    rows = conn.execute(query.order_by(*order_by).limit(size).offset((number - 1) * size)).mappings().all()
    return Page([dict(r) for r in rows], total, number, size, asked)


def order_conditions(t: Tables, flt: OrderFilter, dialect: str = "postgresql") -> list[sa.ColumnElement[bool]]:
    """The WHERE conditions for ``flt`` on ``external_orders``, as ``dialect`` spells them (on SQLite,
    with :func:`_with_search_functions` registered on the connection)."""
    o = t.external_orders
    conditions: list[sa.ColumnElement[bool]] = []
    if flt.state:
        conditions.append(o.c.lifecycle_state == flt.state)
    if flt.failed_only:
        conditions.append(sa.or_(o.c.lifecycle_state == FAILED, o.c.lifecycle_error.is_not(None)))
    if flt.card_data_masked_only:
        conditions.append(o.c.card_data_masked.is_(True))
    if flt.imported_from:
        conditions.append(o.c.last_imported_at >= _day_start(flt.imported_from))
    if flt.imported_to and flt.imported_to < date.max:  # up to the last day there is: no upper bound
        conditions.append(o.c.last_imported_at < _day_start(flt.imported_to + timedelta(days=1)))
    search = search_text(flt.search)
    if search:
        # The order number through its index (exact or leading part); the account name anywhere, any case.
        conditions.append(
            sa.or_(
                o.c.order_number == search,
                o.c.order_number.like(_like_pattern(search, prefix_only=True), escape="\\"),
                _contains_any_case(o.c.account_name, search, dialect),
            )
        )
    return conditions


def sync_status(lifecycle_state: str, lifecycle_error: str | None) -> str:
    """The mark the page shows: ``ok`` (green), ``failed`` (red: Salesforce rejected it, counted as a
    failed write-back), ``retrying`` (a transient error such as a locked row: the next run sends it,
    not a failure) or ``pending``."""
    if lifecycle_state == COMPLETE and not lifecycle_error:
        return "ok"
    if lifecycle_state == FAILED:
        return "failed"
    if lifecycle_error:
        return "retrying"
    return "pending"


def list_orders(conn: sa.Connection, t: Tables, flt: OrderFilter, number: int = 1, size: int = DEFAULT_PAGE_SIZE) -> Page:
    """Orders matching ``flt``, most recently imported first, with their customer and its parent."""
    o, c = t.external_orders, t.customers
    parent = c.alias("parent")
    _with_search_functions(conn)
    conditions = order_conditions(t, flt, conn.dialect.name)
    query = (
        sa.select(
            o.c.sf_order_id,
            o.c.order_number,
            o.c.external_name,
            o.c.salesforce_url,
            o.c.customer_id,
            o.c.account_name,
            c.c.parent_customer_id,
            parent.c.name.label("parent_name"),
            o.c.destination,
            o.c.lifecycle_state,
            o.c.lifecycle_error,
            o.c.sf_state,
            o.c.total_amount,
            o.c.currency,
            o.c.last_imported_at,
            o.c.last_run_id,
            o.c.card_data_masked,
            o.c.card_data_masked_fields,
            o.c.newer_version_quarantined_at,
            o.c.sf_state_changed_at,
        )
        .select_from(o.outerjoin(c, c.c.customer_id == o.c.customer_id).outerjoin(parent, parent.c.customer_id == c.c.parent_customer_id))
        .where(*conditions)
    )
    # Counted without the customer joins: they add columns to a page, never rows.
    count_query = sa.select(o.c.sf_order_id).where(*conditions)
    page = _paged(conn, query, [o.c.last_imported_at.desc(), o.c.sf_order_id.desc()], number, size, count_query=count_query)
    left_out = _activated_again_left_out(conn, t, page.rows)
    for row in page.rows:
        row["activated_again_left_out"] = left_out.get(row["sf_order_id"])
        row["sync_status"] = sync_status(row["lifecycle_state"], row["lifecycle_error"])
        if row["newer_version_quarantined_at"] and row["sync_status"] == "ok":
            row["sync_status"] = "pending"  # this version synced, but Salesforce's newest one was refused: not green
    return page


def _activated_again_left_out(conn: sa.Connection, t: Tables, rows: list[dict[str, Any]]) -> dict[str, str]:
    """Of a page's orders whose row says they left Activated (set back to Draft, deleted), those
    activated again since and refused (``"refused"``) or skipped (``"skipped"``): leaving Activated
    released an order's refusals and skips (load.mark_status_changes), so one still open and newer
    than the change is Salesforce's order Activated again; the row keeps its sf_state until a version
    loads. One query per table for the page's few such orders, not a subquery per row of the list."""
    left = {row["sf_order_id"]: row["sf_state_changed_at"] for row in rows if row["sf_state"] != SF_ACTIVE}
    if not left:
        return {}
    latest: dict[str, tuple[datetime, str]] = {}
    q, s = t.quarantined_orders, t.skipped_orders
    for outcome, table, at in (("refused", q, q.c.quarantined_at), ("skipped", s, s.c.skipped_at)):
        query = (
            sa.select(table.c.sf_order_id, sa.func.max(at))
            .where(table.c.sf_order_id.in_(sorted(left)), table.c.released_at.is_(None))
            .group_by(table.c.sf_order_id)
        )
        for order_id, when in conn.execute(query):
            changed = left[order_id]
            if when is not None and (changed is None or when > changed) and (order_id not in latest or when > latest[order_id][0]):
                latest[order_id] = (when, outcome)
    return {order_id: outcome for order_id, (_, outcome) in latest.items()}


def _latest_open_quarantine(t: Tables) -> sa.Select:
    """Each quarantined, not yet released order once: its latest refusal."""
    q = t.quarantined_orders
    newer = q.alias("newer")
    superseded = (
        sa.select(newer.c.id)
        .where(newer.c.sf_order_id == q.c.sf_order_id, newer.c.released_at.is_(None), newer.c.id > q.c.id)
        .exists()
    )
    return sa.select(q).where(q.c.released_at.is_(None), ~superseded)


def list_quarantine(conn: sa.Connection, t: Tables, search: str = "", number: int = 1, size: int = DEFAULT_PAGE_SIZE) -> Page:
    """Orders still refused by validation, latest refusal first, with the checks they failed."""
    query = _latest_open_quarantine(t)
    q = t.quarantined_orders
    search = search_text(search)
    if search:
        _with_search_functions(conn)
        # As the Orders page searches: the order number exact or its leading part, the account name anywhere, any case.
        query = query.where(
            sa.or_(
                q.c.order_number == search,
                q.c.order_number.like(_like_pattern(search, prefix_only=True), escape="\\"),
                _contains_any_case(q.c.account_name, search, conn.dialect.name),
            )
        )
    return _paged(conn, query, [q.c.quarantined_at.desc(), q.c.id.desc()], number, size)


def list_runs(conn: sa.Connection, t: Tables, number: int = 1, size: int = DEFAULT_PAGE_SIZE) -> Page:
    """Import runs, newest first."""
    r = t.import_runs
    return _paged(conn, sa.select(r), [r.c.started_at.desc(), r.c.run_id.desc()], number, size)


def open_writeback_failures(t: Tables) -> sa.Select:
    """Newest outbox row per Salesforce record, where that row failed or was given up after errors."""
    w = t.writeback_outbox
    return sa.select(w).where(
        w.c.state.in_([OUTBOX_FAILED, OUTBOX_DEAD]),
        sa.or_(w.c.last_error_code.is_(None), w.c.last_error_code.not_in(ABANDONED_CODES)),
        ~superseded_outbox_row(w),
    )


def overview(conn: sa.Connection, t: Tables) -> Overview:
    o = t.external_orders
    by_state = {state: 0 for state in LIFECYCLE_STATES}
    by_state.update(conn.execute(sa.select(o.c.lifecycle_state, sa.func.count()).group_by(o.c.lifecycle_state)).tuples().all())
    return Overview(by_state, _count(conn, _latest_open_quarantine(t)), _count(conn, open_writeback_failures(t)))


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "OrderFilter",
    "Overview",
    "Page",
    "list_orders",
    "list_quarantine",
    "list_runs",
    "open_writeback_failures",
    "overview",
    "page_bounds",
    "search_text",
    "sync_status",
]
