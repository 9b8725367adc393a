"""Shipments: from the warehouse's ``order_shipments`` table to the write-back outbox.

A shipment is written once (its ``shipment_key`` is its identity: adding it again changes
nothing), checked against the imported orders (``check``), and, when sending is enabled,
turned into outbox rows in the same transaction that marks it ``QUEUED`` (``queue``): the
outbox drainer sends them like every other write-back, so a shipment is queued, and sent, once.

What goes to Salesforce (``ShipmentTargets``, from the ``shipments`` config section):

- the Order's fields (tracking number, carrier, shipped date, ...) from the order's latest
  shipment: a shipment older than one already queued does not overwrite them;
- each shipped Order Product's details field: every shipment of that product, one line each in
  shipped order, whichever was added last;
- a record of a shipment object per shipment, upserted by an external id holding the shipment key.

One record, one write to send: a shipment row for an Order or an Order Product still to be sent
when a newer shipment row for the same record is queued is superseded (``supersede_older_rows``),
never sent after it nor beside it in one call. The newer row carries what the record should show.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from .api_names import SALESFORCE_ID_PATTERN, case_safe_id
from .redaction import mask_card_numbers
from .warehouse.definitions import (
    OUTBOX_DEAD,
    OUTBOX_DONE,
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_UNSENT_STATES,
    SHIPMENT_INVALID,
    SHIPMENT_KEY_LENGTH,
    SHIPMENT_NEW,
    SHIPMENT_QUEUED,
    SHIPMENT_VALID,
    Tables,
)
from .warehouse.writes import dialect_insert, in_batches, one_of, update_rows

TEXT_LIMITS = {"carrier": 255, "service": 255, "tracking_number": 255, "tracking_url": 1000}
REQUIRED = ("carrier", "tracking_number", "shipped_date")
ATTRIBUTES = ("carrier", "service", "tracking_number", "tracking_url", "shipped_date")
CHECK_BATCH = 2000  # shipments checked or queued per transaction

# Outbox actions of shipment rows (the ``action`` column).
ACTION_ORDER_FIELDS = "shipment:order_fields"
ACTION_ITEM_DETAILS = "shipment:item_details"
ACTION_RECORD = "shipment:record"
# The actions whose rows update one existing record with what it should show now: a newer row of
# the same record replaces an older one still to be sent (a shipment record's row is its own record).
REPLACEABLE_ACTIONS = (ACTION_ORDER_FIELDS, ACTION_ITEM_DETAILS)
# The outbox code of a row superseded that way: DONE, never sent, not a failure.
SUPERSEDED = "SUPERSEDED"
# How a superseded row's message names the row that superseded it (``superseding_rows`` reads it).
_REPLACED_BY = "(outbox row {})"
_REPLACED_BY_ID = re.compile(r"\(outbox row (\d+)\)")


class ShipmentInputError(ValueError):
    """A shipment a person tried to add is unusable; the message names the shipment and the field."""


def _quoted(value: Any) -> str:
    """A refused value as an error quotes it: a card number in it (an export's columns mixed up) masked."""
    text = repr(value)
    return mask_card_numbers(text) or text


@dataclass(frozen=True)
class ShipmentObject:
    """Target B: records of ``name`` looked up to the Order, upserted by ``external_id_field``."""

    name: str
    order_field: str
    external_id_field: str
    fields: Mapping[str, str]  # shipment attribute (carrier, ..., ship_to_name) -> field
    defaults: Mapping[str, Any] = field(default_factory=dict)  # constant values on every record


@dataclass(frozen=True)
class ShipmentTargets:
    order_object: str
    order_item_object: str
    order_fields: Mapping[str, str]  # shipment attribute -> Order field (target A)
    order_item_field: str | None  # the Order Product's shipment details field (target A)
    order_item_field_length: int
    record: ShipmentObject | None  # target B

    @property
    def any(self) -> bool:
        return bool(self.order_fields or self.order_item_field or self.record)


@dataclass
class ShipmentSummary:
    checked: int = 0
    valid: int = 0
    invalid: int = 0
    queued: int = 0
    outbox_rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


# ---- adding ----------------------------------------------------------------------------


def _parse_date(key: str, value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ShipmentInputError(f"shipment {key!r}: shipped_date: {_quoted(value)} is not a date (YYYY-MM-DD)") from None


def _parse_quantity(key: str, position: int, value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        quantity = _exact(value)
    except (TypeError, ValueError, ArithmeticError):
        quantity = None
    if quantity is None or not quantity.is_finite():
        raise ShipmentInputError(f"shipment {key!r}: line {position}: quantity: {_quoted(value)} is not a number")
    return quantity


def _exact(value: Any) -> Decimal:
    """A quantity as the exact decimal it shows (order products' quantities are read back as Decimal)."""
    return value if isinstance(value, Decimal) else Decimal(repr(value) if isinstance(value, float) else str(value))


def _shown(quantity: Decimal) -> str:
    """``2`` rather than ``2.00``, ``1.5`` rather than ``1.50``."""
    return f"{quantity.normalize():f}"


def _record_id(value: Any) -> Any:
    """A record Id as the warehouse holds it (the 18-character form the API returns): a shipment
    may name its order or order products by the 15-character Id a report or the UI shows. A text
    that is no Id is kept as given (the check then names it)."""
    try:
        return case_safe_id(value)
    except ValueError:
        return value


def add_shipment(conn: sa.Connection, t: Tables, shipment: Mapping[str, Any], lines: Iterable[Mapping[str, Any]], now: datetime | None = None) -> bool:
    """Write a shipment and its lines; returns False (and changes nothing) when its key is already there.

    Only what cannot be stored is refused here (a key missing or too long, a date or quantity that
    is not one); everything else is kept as given and checked before sending, so an invalid
    shipment stays visible with its reasons.
    """
    key = str(shipment.get("shipment_key") or "").strip()
    if not key:
        raise ShipmentInputError("shipment: shipment_key: required (it makes a re-sent shipment change nothing)")
    if len(key) > SHIPMENT_KEY_LENGTH:
        raise ShipmentInputError(f"shipment {key[:20]!r}...: shipment_key: longer than {SHIPMENT_KEY_LENGTH} characters")
    order_id = shipment.get("sf_order_id") or None
    if order_id is not None and not SALESFORCE_ID_PATTERN.fullmatch(str(order_id)):
        raise ShipmentInputError(f"shipment {key!r}: sf_order_id: {_quoted(order_id)} is not a Salesforce id")
    row = {
        "shipment_key": key,
        "sf_order_id": _record_id(order_id) if order_id is not None else None,
        "order_number": shipment.get("order_number") or None,
        "shipped_date": _parse_date(key, shipment.get("shipped_date")),
        "state": SHIPMENT_NEW,
        "created_at": now or datetime.now(UTC),
        **{name: (shipment.get(name) or None) for name in ("carrier", "service", "tracking_number", "tracking_url")},
    }
    line_rows = []
    for position, line in enumerate(lines, start=1):
        item_id = line.get("sf_order_item_id") or None
        if item_id is not None and not SALESFORCE_ID_PATTERN.fullmatch(str(item_id)):
            raise ShipmentInputError(f"shipment {key!r}: line {position}: sf_order_item_id: {_quoted(item_id)} is not a Salesforce id")
        line_rows.append({"shipment_key": key, "sf_order_item_id": _record_id(item_id) if item_id is not None else None, "quantity": _parse_quantity(key, position, line.get("quantity"))})
    inserted = conn.execute(
        dialect_insert(conn, t.order_shipments)
        .values(row)
        .on_conflict_do_nothing(index_elements=["shipment_key"])
        .returning(t.order_shipments.c.shipment_key)  # rowcount is not reliable here on every driver
    ).first()
    if inserted is None:
        return False
    if line_rows:
        conn.execute(sa.insert(t.order_shipment_lines), line_rows)
    return True


# ---- checking --------------------------------------------------------------------------


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _problems_of(shipment: Any, lines: list[Any], order: Any, items: Mapping[str, Any], shipped_before: Mapping[str, Decimal]) -> list[str]:
    """Every reason the shipment cannot be sent, each naming its field."""
    # Blank is missing: a fulfilment export's cell of spaces would otherwise put an empty tracking
    # number over the Order's (the latest shipment's fields are written whole).
    problems = [f"{name}: required" for name in REQUIRED if _blank(getattr(shipment, name))]
    for name, limit in TEXT_LIMITS.items():
        value = getattr(shipment, name)
        if value is not None and len(value) > limit:
            problems.append(f"{name}: {len(value)} characters, at most {limit}")
    url = shipment.tracking_url
    if url and not re.match(r"^https?://\S+$", url):
        problems.append("tracking_url: not an http(s) address")
    if not shipment.sf_order_id and not shipment.order_number:
        problems.append("order: sf_order_id or order_number required")
        return problems
    if order is None:
        named = f"sf_order_id {shipment.sf_order_id}" if shipment.sf_order_id else f"order_number {shipment.order_number}"
        problems.append(f"order: {named} is not an imported order")
        return problems
    if order.sf_state != "active":
        problems.append(f"order: {order.order_number} is {order.sf_state} in Salesforce")
    if not lines:
        problems.append("lines: at least one order product and quantity required")
    for position, line in enumerate(lines, start=1):
        item = items.get(_record_id(line.sf_order_item_id)) if line.sf_order_item_id else None
        if line.sf_order_item_id is None:
            problems.append(f"line {position}: sf_order_item_id: required")
        elif item is None:
            problems.append(f"line {position}: sf_order_item_id: {line.sf_order_item_id} is not an order product of order {order.order_number}")
        if line.quantity is None:
            problems.append(f"line {position}: quantity: required")
        elif line.quantity <= 0:
            problems.append(f"line {position}: quantity: {_shown(line.quantity)} is not positive")
        elif item is not None and item.quantity is not None:
            earlier, ordered = shipped_before.get(item.sf_order_item_id, Decimal(0)), _exact(item.quantity)
            if earlier + _exact(line.quantity) > ordered:
                problems.append(
                    f"line {position}: quantity: {_shown(_exact(line.quantity))} more than the {_shown(max(ordered - earlier, Decimal(0)))} left "
                    f"to ship of {_shown(ordered)} ordered ({_shown(earlier)} in earlier shipments)"
                )
    return problems


def _orders_of(conn: sa.Connection, t: Tables, shipments: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The imported orders the shipments name, by id and by order number."""
    o = t.external_orders
    columns = (o.c.sf_order_id, o.c.order_number, o.c.sf_state, o.c.account_name)
    by_id: dict[str, Any] = {}
    by_number: dict[str, list[Any]] = defaultdict(list)
    ids = sorted({_record_id(s.sf_order_id) for s in shipments if s.sf_order_id})
    numbers = sorted({s.order_number for s in shipments if s.order_number and not s.sf_order_id})
    for batch in in_batches(ids):
        by_id.update((r.sf_order_id, r) for r in conn.execute(sa.select(*columns).where(one_of(conn, o.c.sf_order_id, batch))))
    for batch in in_batches(numbers):
        for r in conn.execute(sa.select(*columns).where(one_of(conn, o.c.order_number, batch))):
            by_number[r.order_number].append(r)
    # An order number two imported orders share names neither (order prefixes differ per org).
    return by_id, {number: rows[0] for number, rows in by_number.items() if len(rows) == 1}


def _shipped_so_far(conn: sa.Connection, t: Tables, order_ids: list[str]) -> dict[str, Decimal]:
    """Quantities already in valid or queued shipments, per order product."""
    s, line = t.order_shipments, t.order_shipment_lines
    totals: dict[str, Decimal] = {}
    for batch in in_batches(order_ids):
        query = (
            sa.select(line.c.sf_order_item_id, sa.func.sum(line.c.quantity))
            .join(s, s.c.shipment_key == line.c.shipment_key)
            .where(one_of(conn, s.c.sf_order_id, batch), s.c.state.in_([SHIPMENT_VALID, SHIPMENT_QUEUED]))
            .group_by(line.c.sf_order_item_id)
        )
        totals.update((item_id, _exact(total or 0)) for item_id, total in conn.execute(query))
    return totals


def _lines_of(conn: sa.Connection, t: Tables, keys: list[str]) -> dict[str, list[Any]]:
    line = t.order_shipment_lines
    by_key: dict[str, list[Any]] = defaultdict(list)
    for batch in in_batches(keys):
        for r in conn.execute(sa.select(line).where(one_of(conn, line.c.shipment_key, batch)).order_by(line.c.id)):
            by_key[r.shipment_key].append(r)
    return by_key


def check(engine: sa.Engine, t: Tables, summary: ShipmentSummary, now: datetime | None = None) -> None:
    """Check the new shipments, and the invalid ones again (their order may have been imported since).

    Oldest first, so earlier shipments of an order count against the quantities of later ones.
    """
    now = now or datetime.now(UTC)
    s, i, line_table = t.order_shipments, t.external_order_items, t.order_shipment_lines
    after = ""
    while True:
        with engine.begin() as conn:
            shipments = list(
                conn.execute(
                    sa.select(s)
                    .where(s.c.state.in_([SHIPMENT_NEW, SHIPMENT_INVALID]), s.c.shipment_key > after)
                    .order_by(s.c.shipment_key)
                    .limit(CHECK_BATCH)
                )
            )
            if not shipments:
                return
            after = shipments[-1].shipment_key
            shipments.sort(key=lambda r: (r.shipped_date or date.max, r.created_at, r.shipment_key))
            by_id, by_number = _orders_of(conn, t, shipments)
            orders = {s_.shipment_key: by_id.get(_record_id(s_.sf_order_id)) if s_.sf_order_id else by_number.get(s_.order_number) for s_ in shipments}
            order_ids = sorted({order.sf_order_id for order in orders.values() if order is not None})
            items: dict[str, Any] = {}
            for batch in in_batches(order_ids):
                items.update((r.sf_order_item_id, r) for r in conn.execute(sa.select(i.c.sf_order_item_id, i.c.sf_order_id, i.c.quantity).where(one_of(conn, i.c.sf_order_id, batch), ~i.c.is_deleted)))
            shipped = _shipped_so_far(conn, t, order_ids)
            lines = _lines_of(conn, t, [r.shipment_key for r in shipments])
            for shipment in shipments:
                order = orders[shipment.shipment_key]
                own_items = {k: v for k, v in items.items() if order is not None and v.sf_order_id == order.sf_order_id}
                problems = _problems_of(shipment, lines[shipment.shipment_key], order, own_items, shipped)
                summary.checked += 1
                values: dict[str, Any] = {"checked_at": now, "errors": problems or None}
                if problems:
                    summary.invalid += 1
                    values["state"] = SHIPMENT_INVALID
                else:
                    summary.valid += 1
                    values.update(state=SHIPMENT_VALID, sf_order_id=order.sf_order_id, order_number=order.order_number)
                    for line in lines[shipment.shipment_key]:
                        item_id = _record_id(line.sf_order_item_id)
                        shipped[item_id] = shipped.get(item_id, Decimal(0)) + _exact(line.quantity)
                        if item_id != line.sf_order_item_id:
                            # Written by SQL with a 15-character Id: stored as the Order Product's Id, so
                            # the queue writes one record, and counts one product, whatever form named it.
                            conn.execute(sa.update(line_table).where(line_table.c.id == line.id).values(sf_order_item_id=item_id))
                conn.execute(sa.update(s).where(s.c.shipment_key == shipment.shipment_key).values(**values))


# ---- queueing --------------------------------------------------------------------------


def _value(shipment: Any, attribute: str, account_name: str | None) -> Any:
    if attribute == "ship_to_name":
        return account_name
    value = getattr(shipment, attribute)
    return value.isoformat() if isinstance(value, date) else value


def _ordering(shipment: Any) -> tuple:
    return (shipment.shipped_date or date.min, shipment.created_at, shipment.shipment_key)


def item_details(shipments: list[tuple[Any, Decimal]], limit: int) -> str:
    """An Order Product's shipments, one line each, oldest first: ``2 × UPS Ground 1Z999 (2026-03-01)``."""
    lines = []
    for shipment, quantity in sorted(shipments, key=lambda pair: _ordering(pair[0])):
        carrier = " ".join(part for part in (shipment.carrier, shipment.service) if part)
        lines.append(f"{_shown(_exact(quantity))} × {carrier} {shipment.tracking_number} ({shipment.shipped_date.isoformat()})")
    text = "\n".join(lines)
    return text if len(text) <= limit else text[-limit:]  # the newest shipments matter most


def _outbox_row(
    shipment: Any, sf_object: str, record_id: str | None, action: str, fields: dict, *, run_id: str, now: datetime, external_id_field: str | None = None
) -> dict[str, Any]:
    return {
        "sf_object": sf_object, "sf_record_id": record_id, "sf_order_id": shipment.sf_order_id, "action": action,
        "fields": fields, "state": OUTBOX_PENDING, "attempts": 0, "shipment_key": shipment.shipment_key,
        "external_id_field": external_id_field, "created_run_id": run_id, "updated_run_id": run_id,
        "created_at": now, "updated_at": now,
    }


def _still_of_active_orders(conn: sa.Connection, t: Tables, ready: list[Any], now: datetime) -> list[Any]:
    """Of the valid shipments about to be queued, those whose order is still active in Salesforce.

    A shipment checked valid while sending was off may wait for days: its order may have been set
    back to Draft or deleted since. It is then ``INVALID`` with the reason, as a shipment checked
    now would be (never sent to such an order), and checked again every run: active again, it goes."""
    o, s = t.external_orders, t.order_shipments
    states: dict[str, Any] = {}
    for batch in in_batches(sorted({r.sf_order_id for r in ready})):
        states.update((r.sf_order_id, r) for r in conn.execute(sa.select(o.c.sf_order_id, o.c.order_number, o.c.sf_state).where(one_of(conn, o.c.sf_order_id, batch))))
    kept = []
    for shipment in ready:
        order = states.get(shipment.sf_order_id)
        if order is not None and order.sf_state == "active":
            kept.append(shipment)
            continue
        problem = (f"order: {order.order_number} is {order.sf_state} in Salesforce" if order is not None
                   else f"order: sf_order_id {shipment.sf_order_id} is not an imported order")
        conn.execute(sa.update(s).where(s.c.shipment_key == shipment.shipment_key).values(state=SHIPMENT_INVALID, errors=[problem], checked_at=now))
    return kept


def queue(engine: sa.Engine, t: Tables, targets: ShipmentTargets, run_id: str, summary: ShipmentSummary, now: datetime | None = None) -> None:
    """Turn the valid shipments into outbox rows, marking them QUEUED in the same transaction."""
    now = now or datetime.now(UTC)
    s, o, outbox = t.order_shipments, t.external_orders, t.writeback_outbox
    with engine.begin() as conn:
        # Rows queued before superseding existed (or by hand) may still wait beside a newer one.
        supersede_older_rows(conn, t, run_id=run_id, now=now)
    while True:
        with engine.begin() as conn:
            ready = list(conn.execute(sa.select(s).where(s.c.state == SHIPMENT_VALID).order_by(s.c.shipment_key).limit(CHECK_BATCH)))
            if not ready:
                return
            ready = _still_of_active_orders(conn, t, ready, now)
            if not ready:
                continue
            order_ids = sorted({r.sf_order_id for r in ready})
            # Every valid or queued shipment of these orders: the latest decides the Order's fields,
            # all of them make an Order Product's details.
            known: list[Any] = []
            names: dict[str, str | None] = {}
            for batch in in_batches(order_ids):
                known += conn.execute(sa.select(s).where(one_of(conn, s.c.sf_order_id, batch), s.c.state.in_([SHIPMENT_VALID, SHIPMENT_QUEUED])))
                names.update(conn.execute(sa.select(o.c.sf_order_id, o.c.account_name).where(one_of(conn, o.c.sf_order_id, batch))).all())
            lines = _lines_of(conn, t, [r.shipment_key for r in known])
            latest: dict[str, Any] = {}
            for shipment in known:
                if shipment.sf_order_id not in latest or _ordering(shipment) > _ordering(latest[shipment.sf_order_id]):
                    latest[shipment.sf_order_id] = shipment
            by_item: dict[str, list[tuple[Any, Decimal]]] = defaultdict(list)
            for shipment in known:
                for item_line in lines[shipment.shipment_key]:
                    by_item[item_line.sf_order_item_id].append((shipment, item_line.quantity))

            rows: list[dict[str, Any]] = []
            stamp = {"run_id": run_id, "now": now}
            for shipment in ready:
                account_name = names.get(shipment.sf_order_id)
                if targets.order_fields and latest[shipment.sf_order_id].shipment_key == shipment.shipment_key:
                    fields = {name: _value(shipment, attribute, account_name) for attribute, name in targets.order_fields.items()}
                    rows.append(_outbox_row(shipment, targets.order_object, shipment.sf_order_id, ACTION_ORDER_FIELDS, fields, **stamp))
                if targets.order_item_field:
                    for item_line in lines[shipment.shipment_key]:
                        # The field is overwritten whole: it lists every shipment of the product, the
                        # ones shipped after this one too (a back-dated shipment added later must not
                        # drop the newer one's line).
                        details = item_details(by_item[item_line.sf_order_item_id], targets.order_item_field_length)
                        rows.append(_outbox_row(shipment, targets.order_item_object, item_line.sf_order_item_id, ACTION_ITEM_DETAILS, {targets.order_item_field: details}, **stamp))
                if targets.record:
                    record = targets.record
                    fields = {
                        **record.defaults,
                        **{name: _value(shipment, attribute, account_name) for attribute, name in record.fields.items()},
                        record.order_field: shipment.sf_order_id,
                        record.external_id_field: shipment.shipment_key,
                    }
                    rows.append(_outbox_row(shipment, record.name, None, ACTION_RECORD, fields, **stamp, external_id_field=record.external_id_field))
            if rows:
                conn.execute(sa.insert(outbox), rows)
                # In the same transaction: no drain ever sees the older and the newer row due together.
                supersede_older_rows(conn, t, run_id=run_id, now=now, record_ids={r["sf_record_id"] for r in rows if r["action"] in REPLACEABLE_ACTIONS})
            keys = [r.shipment_key for r in ready]
            for batch in in_batches(keys):
                conn.execute(sa.update(s).where(one_of(conn, s.c.shipment_key, batch)).values(state=SHIPMENT_QUEUED, queued_at=now))
            summary.queued += len(ready)
            summary.outbox_rows += len(rows)


def supersede_older_rows(conn: sa.Connection, t: Tables, *, run_id: str, now: datetime, record_ids: Iterable[str] | None = None) -> int:
    """Settle every shipment row for an Order's fields or an Order Product's details still to be
    sent (PENDING, FAILED with attempts left, or PROCESSING, left by a drain that died) that has a
    newer shipment row for the same record: ``DONE`` with code ``SUPERSEDED``, never sent.

    Sent after the newer one, the older would overwrite it (the Order's tracking back to an older
    shipment); sent in the same call, either may land last. The newer row holds what the record
    should show: the latest shipment's fields, every shipment's line. Superseded rows are neither
    due nor failures (nor, with a newer row of the record, in ``v_open_failures``). The import's
    rows for the same Order are left alone: they write other fields. (The pool keeps every drain
    out while this runs, so no live drain holds a PROCESSING row.)

    ``record_ids``: only these records (the ones just queued); None: every record with such a row
    still to be sent. Returns how many rows were superseded."""
    w = t.writeback_outbox
    of_shipments = (w.c.shipment_key.is_not(None), w.c.action.in_(REPLACEABLE_ACTIONS))
    if record_ids is None:
        unsent = sa.select(w.c.sf_record_id).where(*of_shipments, w.c.state.in_(OUTBOX_UNSENT_STATES)).distinct()
        record_ids = conn.execute(unsent).scalars().all()
    rows: list[Any] = []
    for batch in in_batches(sorted(set(record_ids))):
        columns = (w.c.id, w.c.sf_object, w.c.sf_record_id, w.c.shipment_key, w.c.state)
        rows += conn.execute(sa.select(*columns).where(*of_shipments, one_of(conn, w.c.sf_record_id, batch))).all()
    newest: dict[tuple[str, str], Any] = {}
    for row in rows:
        record = (row.sf_object, row.sf_record_id)
        if record not in newest or row.id > newest[record].id:
            newest[record] = row
    superseded = []
    for row in rows:
        newer = newest[(row.sf_object, row.sf_record_id)]
        if row.state in OUTBOX_UNSENT_STATES and row.id != newer.id:
            message = f"not sent: shipment {newer.shipment_key}'s newer write of this {row.sf_object} replaces it {_REPLACED_BY.format(newer.id)}"
            superseded.append({"id": row.id, "state": OUTBOX_DONE, "last_error_code": SUPERSEDED, "last_error_message": message,
                               "next_attempt_at": None, "updated_run_id": run_id, "updated_at": now})
    update_rows(conn, w, superseded, ["id"])
    return len(superseded)


# ---- status ----------------------------------------------------------------------------


def _is_superseded(row: Any) -> bool:
    return row.state == OUTBOX_DONE and row.last_error_code == SUPERSEDED


def _superseder(row: Any, newer_rows: list[Any], by_id: Mapping[int, Any]) -> Any | None:
    """The row that superseded ``row``: the one its message names; else (a message not
    written here) the next shipment row of the same record. (A row superseded by the run that
    settles rows left beside a newer one names the record's newest, which the next row need not
    be: one of them may have been sent already.)"""
    named = _REPLACED_BY_ID.search(row.last_error_message or "")
    if named and (newer := by_id.get(int(named.group(1)))) is not None and newer.id > row.id:
        return newer
    return next((newer for newer in newer_rows if newer.id > row.id), None)


def superseding_rows(conn: sa.Connection, t: Tables, outbox_rows: Iterable[Any]) -> dict[int, Any]:
    """For each of ``outbox_rows`` that was superseded (``DONE``, ``SUPERSEDED``), by its id: the
    row whose outcome stands for it. That is the row that superseded it, which carries what the
    record should show (its shipment's line among the rest, or a later shipment's fields); when
    that row was superseded in turn, the one that superseded it, and so on. Rows that were not
    superseded, or whose superseding row is gone, are left out (their own state counts)."""
    superseded = [r for r in outbox_rows if _is_superseded(r)]
    if not superseded:
        return {}
    w = t.writeback_outbox
    of_record: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for batch in in_batches(sorted({r.sf_record_id for r in superseded})):
        query = (
            sa.select(w)
            .where(w.c.shipment_key.is_not(None), w.c.action.in_(REPLACEABLE_ACTIONS), one_of(conn, w.c.sf_record_id, batch))
            .order_by(w.c.id)
        )
        for row in conn.execute(query):
            of_record[(row.sf_object, row.sf_record_id)].append(row)
    by_id = {row.id: row for rows in of_record.values() for row in rows}
    standing_for: dict[int, Any] = {}
    for row in superseded:
        current, newer_rows = row, of_record[(row.sf_object, row.sf_record_id)]
        while _is_superseded(current) and (newer := _superseder(current, newer_rows, by_id)) is not None:
            current = newer  # (ids only grow: the chain ends)
        if current is not row:
            standing_for[row.id] = current
    return standing_for


SYNCED, SYNC_FAILED, SYNC_PENDING, NOT_SENT, INVALID_SHIPMENT = "synced", "failed", "pending", "not sent", "invalid"


def sync_status(state: str, errors: Any, outbox_rows: list[Any], superseded_by: Mapping[int, Any] | None = None) -> tuple[str, str | None]:
    """A shipment's sync status and the message that explains it (Salesforce's error, or why invalid).

    ``superseded_by`` (``superseding_rows``): for each of its rows superseded by a newer shipment's
    row, that row, whose outcome counts instead: the shipment is pending until that row is done,
    and failed while it fails. Without it, a superseded row counts as done."""
    if state == SHIPMENT_INVALID:
        reasons = errors if isinstance(errors, list) else json.loads(errors or "[]")
        return INVALID_SHIPMENT, "; ".join(reasons)
    if state != SHIPMENT_QUEUED:
        return NOT_SENT, "valid; sending is off in the config" if state == SHIPMENT_VALID else "not checked yet"
    # A record's newest row decides: a shipment queued again (its earlier write given up when its
    # order was set back to Draft, see load.mark_status_changes) is synced once the new one is done.
    newest = {(r.sf_object, r.sf_record_id, r.external_id_field): r for r in sorted(outbox_rows, key=lambda r: r.id)}
    standing = [(superseded_by or {}).get(r.id, r) for r in newest.values()]
    failed = [r for r in standing if r.state in (OUTBOX_FAILED, OUTBOX_DEAD)]
    if failed:
        r = failed[-1]
        gave_up = " (gave up)" if r.state == OUTBOX_DEAD else " (will retry)"
        message = f"{r.sf_object}: {r.last_error_code}: {r.last_error_message}{gave_up}"
        if all(r.id != own.id for own in outbox_rows):
            message += f"; in shipment {r.shipment_key}'s newer write, which replaced this one's"
        return SYNC_FAILED, message
    if any(r.state != OUTBOX_DONE for r in standing):
        return SYNC_PENDING, None
    return SYNCED, None


# ---- targets ---------------------------------------------------------------------------


class ShipmentConfigRefused(ValueError):
    """The ``shipments`` config names what the org does not have; the message names every key."""


def _field_problems(describe: Mapping[str, Any], names: Mapping[str, str], path: str, *, creating: bool = False) -> list[str]:
    fields = {f["name"].lower(): f for f in describe.get("fields", [])}
    problems = []
    for attribute, name in names.items():
        found = fields.get(name.lower())
        if found is None:
            problems.append(f"{path}.{attribute}: the org's {describe.get('name')} has no field {name!r}")
        elif not found.get("updateable") and not (creating and found.get("createable")):
            problems.append(f"{path}.{attribute}: {describe.get('name')}.{name} cannot be written")
        elif attribute == "shipped_date" and found.get("type") not in ("date", "datetime", "string", "textarea"):
            problems.append(f"{path}.{attribute}: {describe.get('name')}.{name} is a {found.get('type')} field, not a date")
    return problems


def targets_from_config(config: Any, describe: Any) -> ShipmentTargets:
    """The shipments' targets from the config, checked against the org's describe (``describe(name)``).

    Raises ``ShipmentConfigRefused`` naming every config key the org cannot take.
    """
    settings = config.shipments
    problems: list[str] = []
    item_length = 255
    if settings.order_fields:
        problems += _field_problems(describe(config.order_object), settings.order_fields, "shipments.order_fields")
    if settings.order_item_field:
        item_describe = describe(config.order_item_object)
        problems += _field_problems(item_describe, {"": settings.order_item_field}, "shipments.order_item_field")
        found = {f["name"].lower(): f for f in item_describe.get("fields", [])}.get(settings.order_item_field.lower())
        item_length = int((found or {}).get("length") or item_length)
    record = None
    if settings.shipment_object is not None:
        wanted = settings.shipment_object
        try:
            object_describe = describe(wanted.object)
        except Exception as exc:  # the org has no such object
            raise ShipmentConfigRefused(f"shipments.shipment_object.object: the org has no object {wanted.object!r} ({exc})") from None
        problems += _field_problems(object_describe, wanted.fields, "shipments.shipment_object.fields", creating=True)
        fields = {f["name"].lower(): f for f in object_describe.get("fields", [])}
        external = fields.get(wanted.external_id_field.lower())
        if external is None or not external.get("externalId"):
            problems.append(f"shipments.shipment_object.external_id_field: {wanted.object}.{wanted.external_id_field} is not an external id field")
        lookup = fields.get(wanted.order_field.lower())
        if lookup is None or config.order_object not in (lookup.get("referenceTo") or []):
            problems.append(f"shipments.shipment_object.order_field: {wanted.object}.{wanted.order_field} is not a lookup to {config.order_object}")
        record = ShipmentObject(wanted.object, wanted.order_field, wanted.external_id_field, dict(wanted.fields))
    if problems:
        raise ShipmentConfigRefused("; ".join(f"salesforce_orders_config: {p}" for p in problems))
    return ShipmentTargets(
        order_object=config.order_object,
        order_item_object=config.order_item_object,
        order_fields=dict(settings.order_fields),
        order_item_field=settings.order_item_field,
        order_item_field_length=item_length,
        record=record,
    )
