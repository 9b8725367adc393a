"""Staging: each run's extracted and transformed records, keyed by run, between the tasks.

Extract writes staged orders and items (plain dicts, see ``model.py``); validate marks each
order valid or invalid; transform reads the valid ones and stages its
:class:`~salesforce_orders.model.TransformedOrder` records for the load. Readers page through
a run with keyset pagination on ``sf_order_id``, so memory stays bounded by the chunk size
whatever the run's volume, and no connection stays open while a chunk is being processed.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from itertools import chain
from operator import itemgetter
from typing import Any, TypeVar

import msgspec
import sqlalchemy as sa

from .amounts import exact
from .model import StagedItem, StagedOrder, TransformedOrder, init_only_sets_fields, plain
from .partitions import EVERY_ORDER_ID, OrderIdRange
from .warehouse.definitions import INVALID, STAGED, VALID, tables
from .warehouse.engines import (
    BINARY_RESULTS,
    json_bytes,
    json_dumps,
    json_loads,
    json_loads_many,
    uses_warehouse_json,
)
from .warehouse.types import parse_utc, utc_now
from .warehouse.writes import in_batches, insert_rows, one_of, upsert, upsert_one

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_CHUNK_SIZE = 2000


# ---------------------------------------------------------------------------------------
# Extracted records
# ---------------------------------------------------------------------------------------


def _modstamp(order: StagedOrder) -> datetime | None:
    stamp = order.get("SystemModstamp")
    return parse_utc(stamp) if stamp else None


def _required(record: Mapping[str, Any], key: str, what: str) -> str:
    value = record.get(key)
    if not value:
        raise ValueError(f"staged {what} without {key}: {sorted(record)[:10]}")
    return value


def encoded_records(conn: sa.Engine | sa.Connection, records: list[dict[str, Any]]) -> list[bytes] | None:
    """Each record's JSON as the staging column gets it (:func:`stage_orders`,
    :func:`stage_items` take it as it is), or None: the engine's JSON codec is not the warehouse's,
    or a value is not one it writes. Encoded once for the card scan before staging and for the
    staging itself (twice, it was a tenth of the extract's CPU)."""
    if not uses_warehouse_json(conn.dialect):
        return None
    try:
        return list(map(json_bytes, records))
    except (TypeError, msgspec.EncodeError):
        return None


def _as_written(records: list[Any], encoded: list[bytes] | None) -> list[Any]:
    """The records as their staging column takes them: their JSON (:func:`encoded_records`) when given."""
    return records if encoded is None else list(map(msgspec.Raw, encoded))


def stage_orders(
    conn: sa.Connection,
    run_id: str,
    orders: list[StagedOrder],
    *,
    schema: str | None = None,
    now: datetime | None = None,
    new: bool = False,
    encoded: list[bytes] | None = None,
) -> int:
    """Stage orders for the run; returns how many distinct orders were written.

    An order staged twice (it changed while the run was paging) keeps the version with the
    later ``SystemModstamp``; a re-staged order goes back to status ``staged``. ``new``: the
    caller knows none of them is staged for the run yet (see :func:`_write_staged`).
    ``encoded``: the orders' :func:`encoded_records`, written instead of encoding them again.
    """
    t = tables(schema).stg_orders
    written = _as_written(orders, encoded)
    latest: dict[str, tuple[datetime | None, Any]] = {}
    for order, record in zip(orders, written, strict=True):
        order_id = _required(order, "Id", "order")
        stamp = _modstamp(order)
        previous = latest.get(order_id)
        if previous is None or previous[0] is None or (stamp is not None and stamp >= previous[0]):
            latest[order_id] = (stamp, record)
    staged_at = now or utc_now()
    rows = [
        {
            "run_id": run_id,
            "sf_order_id": order_id,
            "system_modstamp": stamp,
            "record": record,
            "status": STAGED,
            "failed_checks": None,
            "staged_at": staged_at,
        }
        for order_id, (stamp, record) in latest.items()
    ]

    def merge(rows: list[dict[str, Any]]) -> None:
        upsert(
            conn,
            t,
            rows,
            ["run_id", "sf_order_id"],
            update_where=lambda incoming: sa.or_(
                t.c.system_modstamp.is_(None), incoming.system_modstamp >= t.c.system_modstamp
            ),
        )

    _write_staged(conn, t, rows, merge, new=new)
    return len(rows)


def _write_staged(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], merge: Callable[[list[dict[str, Any]]], None],
    *, new: bool,
) -> None:
    """Write staged rows with ``merge``, or, ``new``: rows whose keys the run has not staged yet,
    straight into ``table`` (on PostgreSQL one COPY, without the temporary table and conflict
    check of a merge, which cost about as much again on the extract's pages). Should one be
    staged after all, the savepoint rolls back and ``merge`` writes them, so a wrong guess costs
    time, never a row."""
    if not new:
        merge(rows)
        return
    if not rows:
        return
    try:
        with conn.begin_nested():
            insert_rows(conn, table, rows)
    except sa.exc.IntegrityError:
        log.info("%d rows for %s were partly staged already: merged instead", len(rows), table.name)
        merge(rows)


def staged_modstamps(conn: sa.Connection, run_id: str, order_ids: list[str], *, schema: str | None = None) -> dict[str, datetime | None]:
    """Of these orders, those the run has staged already, with the staged version's SystemModstamp."""
    t = tables(schema).stg_orders
    found: dict[str, datetime | None] = {}
    for batch in in_batches(order_ids):
        rows = conn.execute(sa.select(t.c.sf_order_id, t.c.system_modstamp).where(t.c.run_id == run_id, one_of(conn, t.c.sf_order_id, batch)))
        found.update((order_id, stamp) for order_id, stamp in rows)
    return found


def drop_staged_items(conn: sa.Connection, run_id: str, order_ids: list[str], *, schema: str | None = None) -> None:
    """Remove the run's staged items of these orders (a newer version of the order replaces them)."""
    t = tables(schema).stg_order_items
    for batch in in_batches(order_ids):
        conn.execute(sa.delete(t).where(t.c.run_id == run_id, one_of(conn, t.c.sf_order_id, batch)))


def drop_superseded(conn: sa.Connection, run_id: str, *, schema: str | None = None) -> list[str]:
    """Remove the run's staged orders (and items) older than the version the warehouse holds.

    Staging that sat while a newer run loaded the same orders (a cleared or late task) no longer
    reflects Salesforce: validating, quarantining or loading it would bring an old version back.
    Returns the ids removed."""
    t = tables(schema)
    stg, stored = t.stg_orders, t.external_orders
    older = (
        sa.select(stg.c.sf_order_id)
        .join(stored, stored.c.sf_order_id == stg.c.sf_order_id)
        .where(stg.c.run_id == run_id, stg.c.system_modstamp < stored.c.sf_system_modstamp)
    )
    ids = list(conn.execute(older).scalars())
    drop_staged_items(conn, run_id, ids, schema=schema)
    for batch in in_batches(ids):
        conn.execute(sa.delete(stg).where(stg.c.run_id == run_id, one_of(conn, stg.c.sf_order_id, batch)))
    return ids


def stage_items(
    conn: sa.Connection,
    run_id: str,
    items: list[StagedItem],
    *,
    schema: str | None = None,
    now: datetime | None = None,
    new: bool = False,
    encoded: list[bytes] | None = None,
) -> int:
    """Stage order products for the run; returns how many distinct items were written. ``new``:
    the caller knows none of them is staged for the run yet (see :func:`_write_staged`);
    ``encoded``: as for :func:`stage_orders`."""
    staged_at = now or utc_now()
    item_ids, order_ids = [item.get("Id") for item in items], [item.get("OrderId") for item in items]
    if not (all(item_ids) and all(order_ids)):  # checked for all at once; the item at fault named here
        for item in items:
            _required(item, "Id", "order item")
            _required(item, "OrderId", "order item")
    rows = [
        {"run_id": run_id, "sf_order_item_id": item_id, "sf_order_id": order_id, "record": record, "staged_at": staged_at}
        for item_id, order_id, record in zip(item_ids, order_ids, _as_written(items, encoded), strict=True)
    ]
    t = tables(schema).stg_order_items

    def merge(rows: list[dict[str, Any]]) -> None:
        upsert(conn, t, rows, ["run_id", "sf_order_item_id"])

    _write_staged(conn, t, rows, merge, new=new)
    return len(set(item_ids))


def _keyset_chunks(
    engine: sa.Engine,
    query: sa.Select,
    key: sa.Column,
    chunk_size: int,
    load: Callable[[sa.Connection, list[sa.Row]], T],
) -> Iterator[T]:
    """Page through ``query`` ordered by ``key``: ``WHERE key > last ORDER BY key LIMIT n``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    last = None
    while True:
        page = query.order_by(key).limit(chunk_size)
        if last is not None:
            page = page.where(key > last)
        with engine.connect() as conn:
            rows = conn.execute(page).all()
            if not rows:
                return
            chunk = load(conn, rows)
        more, last = len(rows) == chunk_size, rows[-1]._mapping[key]
        del rows  # not kept while the consumer works on the chunk (a page may be a large JSON text)
        yield chunk  # outside the connection: the consumer may write while holding a chunk
        del chunk  # nor while the next page is read
        if not more:
            return


def _as_text(conn: sa.Engine | sa.Connection) -> bool:
    """Whether staged records are read as their JSON text and decoded a page at a time: when the
    engine's JSON codec is the warehouse's own (:func:`json_loads`), which decodes a page's texts
    in one call (:func:`json_loads_many`) for half what psycopg's row-by-row conversion costs.
    Another codec gets the records through the column's type."""
    return uses_warehouse_json(conn.dialect)


def _select_records(conn: sa.Engine | sa.Connection, *columns: sa.ColumnElement[Any], record: sa.Column) -> sa.Select:
    """SELECT ``columns`` and ``record`` (a staged record column, labelled ``record``): as its
    JSON's UTF-8 bytes when :func:`_as_text`, for :func:`_records` to decode."""
    if not _as_text(conn):
        return sa.select(*columns, record)
    return sa.select(*columns, _utf8(conn.engine, record).label("record")).execution_options(**{BINARY_RESULTS: True})


# A row's values by position: by name, each costs a lookup in Python (some 0.4 µs, a tenth of
# decoding a staged item's record).
_FIRST, _LAST = itemgetter(0), itemgetter(-1)


def _records(conn: sa.Connection, rows: list[sa.Row], fields: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """The staged records of rows selected by :func:`_select_records`, in order. ``fields``: the
    only fields the caller reads; the records may then hold only those (:func:`_narrow_records`)."""
    values = list(map(_LAST, rows))  # (the record is selected last)
    if not _as_text(conn):
        return values
    return json_loads_many(values) if fields is None else _narrow_records(values, fields)


@cache
def _narrow_decoder(fields: tuple[str, ...]) -> msgspec.json.Decoder:
    record = typing.TypedDict("StagedFields", dict.fromkeys(fields, Any), total=False)  # type: ignore[misc]
    return msgspec.json.Decoder(list[record], float_hook=Decimal)  # as json_loads reads the values


def _narrow_records(texts: list[bytes], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    """:func:`json_loads_many` of the texts, each record keeping only ``fields`` (by the name as
    written): the others are parsed over, never made into Python values (a third of the
    decoding of staged items, which the checks read seven fields of).

    A record lacking a field may hold it spelled in another case, which a reader matching names
    as Salesforce does would find (model.FieldReader): when a field some records lack appears
    in the texts in another case, they are decoded whole."""
    if not texts:
        return []
    document = b"[" + b",".join(texts) + b"]"
    try:
        records = _narrow_decoder(fields).decode(document)
    except msgspec.DecodeError:
        return json_loads_many(texts)
    # Keys the import writes itself (CARD_DATA_MASKED: "_" and lower case, never spelled otherwise,
    # and absent from most records) do not count: with them, nearly every record would look short.
    own = [name for name in fields if name.startswith("_")]
    named = len(fields) - len(own)
    if not own:
        short = [record for record in records if len(record) < named]
    elif len(own) == 1:
        (key,) = own
        short = [record for record in records if len(record) - (key in record) < named]
    else:
        short = [record for record in records if len(record) - sum(name in record for name in own) < named]
    if short:
        held = Counter(chain.from_iterable(short))
        lowered = document.lower()
        for name in fields:
            if not name.startswith("_") and held[name] < len(short):
                key = b'"' + name.encode() + b'":'
                if lowered.count(key.lower()) != document.count(key):
                    return json_loads_many(texts)
    return records


def _with_items(
    conn: sa.Connection,
    run_id: str,
    rows: list[sa.Row],
    schema: str | None,
    *,
    contiguous: bool = False,
    fields: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> list[tuple[StagedOrder, list[StagedItem]]]:
    """Staged order rows (``sf_order_id``, ``record``, selected by :func:`_select_records`) paired
    with their staged items. ``fields``: as :func:`iter_staged` takes them.

    ``contiguous``: the rows are one page in order id order, so their items are read as one
    range of the (run_id, sf_order_id) index rather than looked up id by id (items of orders in
    the range but not in the page, e.g. other statuses, are passed over)."""
    items = tables(schema).stg_order_items
    order_ids = list(map(_FIRST, rows))
    by_order: dict[str, list[StagedItem]] = {order_id: [] for order_id in order_ids}
    query = _select_records(conn, items.c.sf_order_id, record=items.c.record).order_by(
        items.c.sf_order_id, items.c.sf_order_item_id
    )
    if contiguous:
        lookups = [items.c.sf_order_id.between(rows[0].sf_order_id, rows[-1].sf_order_id)]
    else:
        lookups = [one_of(conn, items.c.sf_order_id, batch) for batch in in_batches(list(by_order))]
    for lookup in lookups:
        found = conn.execute(query.where(items.c.run_id == run_id, lookup)).all()
        item_records = _records(conn, found, None if fields is None else fields[1])
        for order_id, record in zip(map(_FIRST, found), item_records, strict=True):
            order_items = by_order.get(order_id)
            if order_items is not None:
                order_items.append(record)
    orders = _records(conn, rows, None if fields is None else fields[0])
    return list(zip(orders, map(by_order.__getitem__, order_ids), strict=True))


def iter_staged(
    engine: sa.Engine,
    run_id: str,
    status: str | None = VALID,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    *,
    within: OrderIdRange = EVERY_ORDER_ID,
    schema: str | None = None,
    fields: tuple[tuple[str, ...], tuple[str, ...]] | None = None,
) -> Iterator[list[tuple[StagedOrder, list[StagedItem]]]]:
    """The run's staged orders with their items, in chunks of at most ``chunk_size`` orders,
    ordered by order id. ``status``: ``"valid"``, ``"staged"``, ``"invalid"``, or None for all.
    ``within``: only the orders of this range (a chunk never reaches past it). ``fields``: the
    only fields of the orders and of the items the caller reads (as written); the records may
    then hold only those."""
    orders = tables(schema).stg_orders
    query = _select_records(engine, orders.c.sf_order_id, record=orders.c.record).where(
        orders.c.run_id == run_id, *within.where(orders.c.sf_order_id)
    )
    if status is not None:
        query = query.where(orders.c.status == status)
    return _keyset_chunks(
        engine, query, orders.c.sf_order_id, chunk_size, lambda conn, rows: _with_items(conn, run_id, rows, schema, contiguous=True, fields=fields)
    )


def staged_orders(
    engine: sa.Engine, run_id: str, order_ids: Iterable[str], *, schema: str | None = None
) -> dict[str, tuple[StagedOrder, list[StagedItem]]]:
    """These staged orders of the run with their items, by order id (ids not staged are left out)."""
    orders = tables(schema).stg_orders
    found: dict[str, tuple[StagedOrder, list[StagedItem]]] = {}
    with engine.connect() as conn:
        for batch in in_batches(sorted(set(order_ids))):
            query = _select_records(conn, orders.c.sf_order_id, record=orders.c.record).where(
                orders.c.run_id == run_id, one_of(conn, orders.c.sf_order_id, batch)
            )
            rows = conn.execute(query).all()
            found.update(zip((row.sf_order_id for row in rows), _with_items(conn, run_id, rows, schema), strict=True))
    return found


def staged_order_numbers(engine: sa.Engine, run_id: str, *, schema: str | None = None) -> dict[str, Any]:
    """The run's staged orders' OrderNumbers, by order id (a re-sync says which of the orders it
    was asked for it found nowhere)."""
    orders = tables(schema).stg_orders
    with engine.connect() as conn:
        rows = conn.execute(_select_records(conn, orders.c.sf_order_id, record=orders.c.record).where(orders.c.run_id == run_id)).all()
        records = _records(conn, rows, ("OrderNumber",))
    return {row.sf_order_id: record.get("OrderNumber") for row, record in zip(rows, records, strict=True)}


def mark_validation(
    conn: sa.Connection,
    run_id: str,
    invalid_ids: set[str] | Mapping[str, list[str]],
    *,
    checked_ids: Iterable[str] | None = None,
    schema: str | None = None,
) -> None:
    """Record the validation outcome of staged orders.

    ``invalid_ids``: the orders that failed, as a set or as ``{order id: [failed check, ...]}``
    (the check names are kept on the staged row). ``checked_ids``: the orders validated in
    this call (e.g. one chunk); those not invalid become ``valid``. Without it, every order of
    the run still ``staged`` becomes ``valid``.
    """
    t = tables(schema).stg_orders
    failures = dict(invalid_ids) if isinstance(invalid_ids, Mapping) else dict.fromkeys(invalid_ids)
    if failures:
        conn.execute(
            sa.update(t)
            .where(t.c.run_id == run_id, t.c.sf_order_id == sa.bindparam("b_order_id"))
            .values(status=INVALID, failed_checks=sa.bindparam("b_checks", type_=t.c.failed_checks.type)),
            [{"b_order_id": order_id, "b_checks": checks} for order_id, checks in failures.items()],
        )
    mark_valid = sa.update(t).where(t.c.run_id == run_id).values(status=VALID, failed_checks=None)
    if checked_ids is None:
        conn.execute(mark_valid.where(t.c.status == STAGED))
        return
    valid_ids = sorted(set(checked_ids) - set(failures))
    for batch in in_batches(valid_ids):
        conn.execute(mark_valid.where(one_of(conn, t.c.sf_order_id, batch)))


# ---------------------------------------------------------------------------------------
# Transformed records
# ---------------------------------------------------------------------------------------


def _to_payload(record: TransformedOrder) -> dict[str, Any]:
    return plain(record)


def _payload(records: list[TransformedOrder]) -> bytes:
    """The records as a batch's payload holds them: their JSON's UTF-8 bytes, as the warehouse's
    JSON codec (msgspec) writes them. It writes a record as it writes its plain() form, byte for
    byte, and is given the records themselves, which spares building the dicts (as much work as
    the rest of staging)."""
    return json_bytes(records)


def _as_is(value: Any) -> Any:
    return value


_OPTIONAL, _TUPLE, _RECORD, _OTHER = "optional", "tuple", "record", "other"


def _shape(annotation: Any) -> tuple[str, Any]:
    """How the records' codecs read a field's declared type: ``(_OPTIONAL, X)`` for ``X | None``,
    ``(_TUPLE, X)`` for ``tuple[X, ...]``, ``(_RECORD, cls)`` for a record class, else
    ``(_OTHER, annotation)`` (a scalar, or a union of several types: taken as it is)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (_OPTIONAL, options[0]) if len(options) == 1 else (_OTHER, annotation)
    if origin is tuple and typing.get_args(annotation)[1:] == (Ellipsis,):
        return _TUPLE, typing.get_args(annotation)[0]
    if dataclasses.is_dataclass(annotation):
        return _RECORD, annotation
    return _OTHER, annotation


@cache
def _decoder(annotation: Any) -> Callable[[Any], Any]:
    """A function rebuilding a value of the model's declared type from its JSON form.

    Built once per type: resolving annotations is far slower than decoding a record."""
    shape, inner_type = _shape(annotation)
    if shape == _OPTIONAL:
        inner = _decoder(inner_type)
        if inner is _as_is:
            return _as_is
        return lambda value: None if value is None else inner(value)
    if shape == _TUPLE:
        element = _decoder(inner_type)
        if element is _as_is:
            return tuple
        return lambda value: tuple([element(v) for v in value])
    if shape == _RECORD:
        return _record_decoder(annotation)
    if annotation is Decimal:
        return _decimal
    return _as_is


def _decimal(value: Any) -> Decimal | None:
    # JSON has one kind of number: a whole amount (2, not 2.00) comes back as an int
    return value if type(value) is Decimal else exact(value)


def _record_decoder(cls: type) -> Callable[[Mapping[str, Any]], Any]:
    hints = typing.get_type_hints(cls)
    names = tuple(f.name for f in dataclasses.fields(cls))
    # Only fields holding records or tuples need rebuilding; scalars are taken as they are.
    nested = tuple((name, decode) for name in names if (decode := _decoder(hints[name])) is not _as_is)

    def construct(payload: Mapping[str, Any]) -> Any:
        # absent keys take the field's default (payloads staged before a field was added)
        kwargs = {name: payload[name] for name in names if name in payload}
        for name, decode in nested:
            if name in kwargs:
                kwargs[name] = decode(kwargs[name])
        return cls(**kwargs)

    if not init_only_sets_fields(cls):
        return construct
    values_of = (  # (itemgetter of a single name gives the value, not a tuple)
        itemgetter(*names) if len(names) > 1 else lambda payload: tuple([payload[name] for name in names])
    )

    def rebuild(payload: Mapping[str, Any]) -> Any:
        try:
            values = values_of(payload)  # in field order, whatever the payload's key order
        except KeyError:
            return construct(payload)  # a field is absent: the constructor fills in its default
        record = object.__new__(cls)
        state = record.__dict__
        # from pairs, not from a dict: the __dict__ then stays as compact as __init__ leaves it
        state.update(zip(names, values, strict=True))
        for name, decode in nested:
            state[name] = decode(state[name])
        return record

    return rebuild


_init_only_sets_fields = init_only_sets_fields  # (the name the codec tests check)


def _from_payload(payload: Mapping[str, Any]) -> TransformedOrder:
    return _decoder(TransformedOrder)(payload)


# A staged batch decoded straight into its records by msgspec's C code costs what decoding it into
# dicts does, and spares rebuilding every record from its dict (_from_payload): a fifth of the
# load's CPU time. Untyped values (metadata, write-back fields) take the JSON codec's Decimals.
_BATCH_DECODER = msgspec.json.Decoder(list[TransformedOrder], float_hook=Decimal)


def _held_record(annotation: Any) -> tuple[type, bool] | None:
    """The record class a field of this type holds, and whether a tuple of them; None: no record."""
    shape, inner_type = _shape(annotation)
    if shape == _OPTIONAL:
        return _held_record(inner_type)
    if shape == _TUPLE:
        held = _held_record(inner_type)
        return (held[0], True) if held else None
    return (annotation, False) if shape == _RECORD else None


@cache
def _as_constructed(cls: type) -> Callable[[Any], bool]:
    """Whether a record msgspec decoded (and the records in it) holds every field, in field order,
    as its constructor leaves it. msgspec leaves out the fields a payload lacks that have a plain
    default (the class attribute stands in), and keeps the payload's key order."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    nested = []
    for name in names:
        held = _held_record(hints[name])
        if held is not None:
            nested.append((name, held[1], _as_constructed(held[0])))

    def check(record: Any) -> bool:
        state = record.__dict__
        if list(state) != names:
            return False
        for name, many, inner in nested:
            value = state[name]
            if value is not None and not (all(map(inner, value)) if many else inner(value)):
                return False
        return True

    return check


def transformed_batch_from_json(text: str | bytes) -> list[TransformedOrder]:
    """A staged batch's payload (its JSON text) as records, the same as :func:`_from_payload` of each."""
    try:
        records = _BATCH_DECODER.decode(text)
        if all(map(_as_constructed(TransformedOrder), records)):
            return records
    except msgspec.DecodeError:
        # A value not of its field's declared type (msgspec checks them; the generic decoder takes
        # it as it is), a required field missing, or NaN written by an older SQLite warehouse.
        pass
    # decoded generically, as before: it keeps what it keeps and refuses what it refuses
    return [_from_payload(payload) for payload in json_loads(text)]


@cache
def record_view(cls: type) -> type[msgspec.Struct]:
    """The load's view of a record class: a frozen msgspec struct with the class's fields in its
    order, the same defaults, its methods, and records inside it as views too.

    A staged batch decoded into views costs a third of what decoding it into the dataclasses does:
    the structs are built in C with no ``__dict__`` per record, need no check that msgspec filled
    every field (it fills a missing one with its default, as the constructor does), and are not
    tracked by the cyclic garbage collector (records hold no cycles). Read by attribute, a view
    gives what the record gives."""
    hints = typing.get_type_hints(cls)
    view_fields: list[Any] = []
    for item in dataclasses.fields(cls):
        annotation = _viewed(hints[item.name])
        if item.default is not dataclasses.MISSING:
            view_fields.append((item.name, annotation, item.default))
        elif item.default_factory is not dataclasses.MISSING:
            view_fields.append((item.name, annotation, msgspec.field(default_factory=item.default_factory)))
        else:
            view_fields.append((item.name, annotation))
    methods = {name: value for name, value in vars(cls).items() if isinstance(value, types.FunctionType) and not name.startswith("__")}
    return msgspec.defstruct(
        f"{cls.__name__}View", view_fields, namespace=methods, module=__name__, frozen=True, gc=False
    )


def _viewed(annotation: Any) -> Any:
    """``annotation`` with the record classes in it replaced by their views."""
    shape, inner_type = _shape(annotation)
    if shape == _OPTIONAL:
        return _viewed(inner_type) | None
    if shape == _TUPLE:
        return tuple[_viewed(inner_type), ...]
    return record_view(annotation) if shape == _RECORD else annotation


_BATCH_VIEW_DECODER = msgspec.json.Decoder(list[record_view(TransformedOrder)], float_hook=Decimal)


def transformed_views_from_json(text: str | bytes) -> list[Any]:
    """A staged batch's payload as the load reads it: views of its records (:func:`record_view`),
    holding what :func:`transformed_batch_from_json` gives. A batch msgspec would read otherwise
    than the generic decoder (a value not of its declared type, NaN from an older SQLite
    warehouse, a required field missing) is read by that function instead, as it always was."""
    try:
        return _BATCH_VIEW_DECODER.decode(text)
    except msgspec.DecodeError:  # (a ValidationError too)
        return transformed_batch_from_json(text)


def transformed_to_json(record: TransformedOrder) -> str:
    """A transformed order as the staging column holds it (amounts with every digit)."""
    return json_dumps(_to_payload(record))


def transformed_from_json(text: str) -> TransformedOrder:
    return _from_payload(json_loads(text))


def stage_transformed(
    conn: sa.Connection,
    run_id: str,
    records: list[TransformedOrder],
    *,
    schema: str | None = None,
    now: datetime | None = None,
) -> None:
    """Stage one batch of transformed orders (ordered by order id) as one row for the load."""
    by_id = {r.order.sf_order_id: r for r in records}  # an order twice: the last one wins
    if not by_id:
        return
    ordered = [by_id[order_id] for order_id in sorted(by_id)]
    t = tables(schema).stg_transformed_batches
    row = {
        "run_id": run_id,
        "first_order_id": ordered[0].order.sf_order_id,
        "order_count": len(ordered),
        "payload": _payload(ordered),
        "staged_at": now or utc_now(),
    }
    upsert_one(conn, t, row, ["run_id", "first_order_id"])


def _utf8(engine: sa.Engine, column: sa.ColumnElement[Any]) -> sa.ColumnElement[bytes]:
    """A JSON column's text as its UTF-8 bytes, for msgspec to decode (json_loads_many). Not as a
    str: a text with one non-ASCII character is held at two or four bytes a character, plus the
    UTF-8 copy msgspec decodes from."""
    if engine.dialect.name == "postgresql":
        encoded = sa.func.convert_to(sa.cast(column, sa.Text), "UTF8")
    else:
        encoded = sa.cast(column, sa.LargeBinary)  # SQLite: the text's bytes, in the database's UTF-8
    return sa.type_coerce(encoded, sa.LargeBinary)


def iter_transformed(
    engine: sa.Engine, run_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE, *, schema: str | None = None, views: bool = False
) -> Iterator[list[TransformedOrder]]:
    """The run's transformed orders in chunks of at most ``chunk_size``, ordered by order id
    (batches are read one at a time, so memory holds one batch and one chunk). ``views``: as
    views of the records (:func:`transformed_views_from_json`), as the load reads them."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    t = tables(schema).stg_transformed_batches
    # Paged by key alone, each batch's payload then read by its key. Selected with its page, the
    # payload was converted for every batch left before the sort and LIMIT picked one (the
    # planner, seeing a few rows, sorts rather than walks the index): each page read, converted
    # and sorted the rest of the run's batches again, on disk (some 0.3 s a page at 16k orders,
    # growing with the square of the run's size).
    keys = sa.select(t.c.first_order_id).where(t.c.run_id == run_id)
    payload = (
        sa.select(t.c.payload)
        .where(t.c.run_id == run_id, t.c.first_order_id == sa.bindparam("first_order_id"))
        .execution_options(**{BINARY_RESULTS: True})  # the payload's bytes as they are, not as hex
    )

    def read_batch(conn: sa.Connection, rows: list[sa.Row]) -> list[TransformedOrder]:
        text = conn.execute(payload, {"first_order_id": rows[0].first_order_id}).scalar_one()
        return transformed_views_from_json(text) if views else transformed_batch_from_json(text)

    batches = _keyset_chunks(engine, keys, t.c.first_order_id, 1, read_batch)
    chunk: list[TransformedOrder] = []
    for records in batches:
        for record in records:
            chunk.append(record)
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        del records  # those not yielded yet are in chunk
    if chunk:
        yield chunk


def has_staged(engine: sa.Engine, run_id: str, *, schema: str | None = None) -> bool:
    """Whether anything of the run is still staged: an extracted order or a transformed batch."""
    t = tables(schema)
    with engine.connect() as conn:
        return any(
            conn.execute(sa.select(table.c.run_id).where(table.c.run_id == run_id).limit(1)).first() is not None
            for table in (t.stg_orders, t.stg_transformed_batches)
        )


# ---------------------------------------------------------------------------------------
# Clean-up
# ---------------------------------------------------------------------------------------


def clear_transformed(
    conn: sa.Connection, run_id: str, *, within: OrderIdRange = EVERY_ORDER_ID, schema: str | None = None
) -> None:
    """Forget the run's transformed records (a retried transform starts clean). ``within``: only
    the batches of this range (a batch starts and ends in one range: see ``stages.transform``)."""
    t = tables(schema).stg_transformed_batches
    conn.execute(sa.delete(t).where(t.c.run_id == run_id, *within.where(t.c.first_order_id)))


def clear_run(conn: sa.Connection, run_id: str, *, schema: str | None = None) -> None:
    """Forget everything staged for the run (a retried extract starts clean)."""
    for t in tables(schema).staging:
        conn.execute(sa.delete(t).where(t.c.run_id == run_id))


def purge_staging(
    engine: sa.Engine, older_than: timedelta, *, schema: str | None = None, now: datetime | None = None
) -> int:
    """Delete staged rows written more than ``older_than`` ago; returns how many rows went."""
    cutoff = (now or utc_now()) - older_than
    deleted = 0
    with engine.begin() as conn:
        for t in tables(schema).staging:
            deleted += conn.execute(sa.delete(t).where(t.c.staged_at < cutoff)).rowcount
    return deleted


__all__ = [
    "clear_run",
    "clear_transformed",
    "encoded_records",
    "has_staged",
    "iter_staged",
    "iter_transformed",
    "mark_validation",
    "purge_staging",
    "stage_items",
    "stage_orders",
    "stage_transformed",
    "staged_orders",
    "transformed_batch_from_json",
    "transformed_views_from_json",
    "transformed_from_json",
    "transformed_to_json",
]
