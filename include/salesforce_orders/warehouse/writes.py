"""Bulk writes and key lookups on the warehouse, dialect-aware: upserts (INSERT ... ON CONFLICT),
updates and inserts of many rows, COPY on PostgreSQL for large sets, index probes by key
(:func:`select_in`, and for the rows :func:`update_rows` changes), and fresh statistics after a
bulk fill (:func:`analyze`).

Both dialects store the same values whichever way the rows go; a failed write names the failing
order, never a row's values (:mod:`.errors`).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.ddl import CreateTableAs, ExecutableDDLElement

from .engines import json_bytes, uses_warehouse_json
from .errors import naming_the_failing_order, scrub
from .types import Money, UtcDateTime

UPSERT_BATCH_SIZE = 2000
# From this many rows on, PostgreSQL writes go through COPY into a temporary table and ONE
# set-based statement: psycopg sends an executemany as one statement per row, which dominated
# large loads. Below it the executemany costs less than the temporary table's round trips.
COPY_MIN_ROWS = 200

_Row = dict[str, Any]
_Rows = Sequence[Mapping[str, Any]]
_Convert = Callable[[Any], Any]
_ConvertColumn = Callable[[Sequence[Any], set[type] | None], Sequence[Any]]


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT construct, which knows ON CONFLICT."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"the warehouse supports SQLite and PostgreSQL, not {conn.dialect.name}")


def _on_conflict(
    stmt: Any,
    key_columns: list[str],
    update_columns: list[str],
    update_where: Callable[[Any], sa.ColumnElement[bool]] | None,
) -> Any:
    """``stmt`` (a dialect INSERT) with its ON CONFLICT clause, the same for every way rows arrive."""
    if not update_columns:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=key_columns,
        set_={c: stmt.excluded[c] for c in update_columns},
        where=update_where(stmt.excluded) if update_where else None,
    )


class Columns(Sequence[_Row]):
    """Rows held column by column: ``names`` and, for each, the rows' values in row order.

    A large write builds its COPY input straight from its records this way, with no dict per
    row and no turning rows into columns again (:func:`_copy_rows` converts column by column):
    at 100k orders a load writes some 700k rows. Read as a sequence, it gives each row as a
    dict, built when asked for (SQLite, a small write, the messages and checks of a refusal)."""

    __slots__ = ("names", "values", "copy_input")

    def __init__(self, names: Sequence[str], values: Sequence[Sequence[Any]]):
        self.names, self.values = list(names), list(values)
        self.copy_input: _CopyInput | None = None  # worked out ahead: see convert_for_copy

    def __len__(self) -> int:
        return len(self.values[0]) if self.values else 0

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return Columns(self.names, [column[index] for column in self.values])
        return dict(zip(self.names, (column[index] for column in self.values), strict=True))

    def __iter__(self) -> Iterator[_Row]:
        return (dict(zip(self.names, values, strict=True)) for values in zip(*self.values, strict=True))

    def column(self, name: str) -> Sequence[Any]:
        return self.values[self.names.index(name)]

    def where(self, keep: Sequence[bool]) -> Columns:
        """The rows for which ``keep`` is true (all of them: this very object)."""
        if all(keep):
            return self
        return Columns(self.names, [list(itertools.compress(column, keep)) for column in self.values])


def _column_values(names: list[str], rows: _Rows) -> list[Sequence[Any]]:
    """The values of ``names``, column by column (each row's values in one C call, then zip)."""
    if isinstance(rows, Columns) and rows.names == names:
        return rows.values
    return list(zip(*map(_values_of(names), rows), strict=True))


def _uses_copy(conn: sa.Connection, rows: _Rows) -> bool:
    """Whether ``rows`` go through COPY: on PostgreSQL with psycopg 3, for large enough sets."""
    return conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg" and len(rows) >= COPY_MIN_ROWS


def upsert(
    conn: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    key_columns: list[str],
    update_columns: list[str] | None = None,
    *,
    update_where: Callable[[Any], sa.ColumnElement[bool]] | None = None,
) -> None:
    """INSERT ... ON CONFLICT (key_columns) DO UPDATE: batched executemany, or on PostgreSQL for
    ``COPY_MIN_ROWS`` rows and more, COPY into a temporary table and one INSERT ... SELECT.

    ``update_columns``: None updates every non-key column the rows carry; ``[]`` only inserts
    rows that are absent (DO NOTHING). ``update_where(excluded)`` returns a condition that must
    hold for an existing row to be updated (``excluded`` holds the incoming values). Rows with
    the same key are collapsed first, the last one winning: one statement may not touch a row twice.
    Every row carries the columns of the first. Both ways store the same values.
    """
    if not rows:
        return
    # The last row of each key wins; the keys are read in C (itemgetter): a staging write has 100k rows.
    unique = list(dict(zip(map(_values_of(key_columns), rows), rows, strict=True)).values())
    if update_columns is None:
        update_columns = [c for c in unique[0] if c not in key_columns]
    if _uses_copy(conn, unique):
        with _copied(conn, table, unique) as incoming:
            insert = postgresql.insert(table).from_select(list(incoming.c.keys()), sa.select(*incoming.c))
            conn.execute(_on_conflict(insert, key_columns, update_columns, update_where))
        return
    stmt = _on_conflict(dialect_insert(conn, table), key_columns, update_columns, update_where)
    for batch in in_batches(unique, UPSERT_BATCH_SIZE):  # read at call time: tests shrink it
        conn.execute(stmt, batch)


def upsert_one(conn: sa.Connection, table: sa.Table, row: dict[str, Any], key_columns: list[str]) -> None:
    """upsert of one row whose values may be SQL expressions, worked out by the database (every
    non-key column it carries is updated)."""
    insert = dialect_insert(conn, table).values(row)
    conn.execute(_on_conflict(insert, key_columns, [c for c in row if c not in key_columns], None))


def update_rows(
    conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], key_columns: list[str], *, only_changed: bool = False
) -> None:
    """UPDATE each row of ``table`` matching a row's ``key_columns`` with the other columns it carries.

    Batched executemany, or on PostgreSQL for ``COPY_MIN_ROWS`` rows and more, COPY into a
    temporary table and one UPDATE ... FROM that finds the rows by the index of the first key
    column (:func:`_by_key_index`). Every row carries the columns of the first.

    ``only_changed``: a row that already holds every value is left alone (``IS DISTINCT FROM``):
    no new row version with its index entries and WAL, and columns the UPDATE would move by
    themselves (``updated_at``) keep saying when the row last changed.
    """
    if not rows:
        return
    update_columns = [c for c in rows[0] if c not in key_columns]
    if _uses_copy(conn, rows):
        with _copied(conn, table, rows) as incoming:
            stmt = sa.update(table).where(
                *(table.c[k] == incoming.c[k] for k in key_columns), _by_key_index(table, incoming, key_columns)
            )
            if only_changed:
                stmt = stmt.where(_differs(table, {c: incoming.c[c] for c in update_columns}))
            conn.execute(stmt.values({c: incoming.c[c] for c in update_columns}))
        return
    # bindparam names may not be column names in an UPDATE: the keys are bound as "key_<column>"
    new_values = {c: sa.bindparam(c) for c in update_columns}
    stmt = sa.update(table).where(*(table.c[k] == sa.bindparam(f"key_{k}") for k in key_columns))
    if only_changed:
        stmt = stmt.where(_differs(table, new_values))
    stmt = stmt.values(new_values)
    params = [{**{f"key_{k}": row[k] for k in key_columns}, **{c: row[c] for c in update_columns}} for row in rows]
    for batch in in_batches(params, UPSERT_BATCH_SIZE):
        conn.execute(stmt, batch)


def _differs(table: sa.Table, new_values: dict[str, sa.ColumnElement[Any]]) -> sa.ColumnElement[bool]:
    """Some column of the row would get another value (NULL-safe)."""
    return sa.or_(*(table.c[c].is_distinct_from(value) for c, value in new_values.items()))


def _by_key_index(table: sa.Table, incoming: sa.Table, key_columns: list[str]) -> sa.ColumnElement[bool]:
    """``table``'s first key column is one of the incoming rows' values, as ``= ANY`` of an array
    the statement builds from ``incoming`` once: the target's rows are then index lookups.

    Joined on the keys alone, PostgreSQL weighs an index probe per incoming row against one hash
    join over the whole target, from its guess of how many rows come in (the temporary table's
    pages, or its statistics once analyzed): from about one percent of the target on, it reads
    every row of the target, old ones included, and the write-back's outcomes read the whole
    outbox per batch. An array computed at run time counts as ten values for the planner, so it
    always probes the index, once per value. (A LATERAL probe as in :func:`select_in` would only
    find the rows: the UPDATE's target cannot sit inside it, and the planner joins the target to
    it as it likes.) A composite key restricts its first column, which should lead an index;
    the join on every key column matches the rows.
    """
    first = key_columns[0]
    values = sa.select(incoming.c[first]).correlate(None).scalar_subquery()
    return table.c[first] == sa.any_(sa.func.array(values))


def insert_rows(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]] | Columns) -> None:
    """INSERT the rows: batched executemany, or on PostgreSQL for ``COPY_MIN_ROWS`` rows and
    more, COPY straight into ``table``. Every row carries the columns of the first."""
    if not rows:
        return
    if _uses_copy(conn, rows):
        names = rows.names if isinstance(rows, Columns) else list(rows[0])
        _copy_rows(conn, table, [table.c[name] for name in names], rows)
        return
    for batch in in_batches(list(rows), UPSERT_BATCH_SIZE):
        conn.execute(sa.insert(table), batch)


@contextmanager
def _copied(conn: sa.Connection, table: sa.Table, rows: Sequence[_Row]) -> Iterator[sa.Table]:
    """``rows`` in a temporary table with the types of ``table``'s columns the rows carry, for the block.

    It lives in the connection's transaction, so it commits or rolls back with everything else,
    and is dropped at its end (``ON COMMIT DROP``). Within the transaction the next write to the
    same table and columns reuses it, emptied after each block: a load writes customers,
    locations, products and outbox rows through such tables for every batch, and creating and
    dropping one (catalog rows for every column) cost the server more than the rows it held.
    A savepoint rolled back takes its rows (and the table, if made there) with it.
    """
    columns = [table.c[name] for name in rows[0]]
    create = _CreateIncoming(
        sa.select(*columns).where(sa.false()), _temporary_name(table, rows[0]), schema="pg_temp", temporary=True,
        if_not_exists=True,
    )
    conn.execute(create)
    _copy_rows(conn, create.table, columns, rows)
    with naming_the_failing_order(rows):  # the statement using them binds none of the rows
        yield create.table
    conn.execute(sa.delete(create.table))


class _CreateIncoming(CreateTableAs):
    """CREATE TEMPORARY TABLE IF NOT EXISTS ... ON COMMIT DROP AS SELECT (SQLAlchemy's CREATE
    TABLE AS has no ON COMMIT clause)."""


@compiles(_CreateIncoming)
def _compile_create_incoming(element: _CreateIncoming, compiler: Any, **kw: Any) -> str:
    name = compiler.preparer.format_table(element.table)
    return compiler.visit_create_table_as(element, **kw).replace(f"{name} AS ", f"{name} ON COMMIT DROP AS ", 1)


def _temporary_name(table: sa.Table, columns: Iterable[str] = ()) -> str:
    """A temporary table name per target table (schema included) and set of columns, within
    PostgreSQL's 63 characters."""
    digest = hashlib.sha256("\0".join((table.fullname, *columns)).encode()).hexdigest()[:8]
    return f"upsert_{digest}_{table.name}"[:63]


@dataclass(frozen=True)
class _CopyInput:
    """What a COPY of some rows into ``target`` sends: its values, converted column by column, and
    the columns' binary types (None: the rows go as text)."""

    target: sa.Table
    names: list[str]
    values: list[Sequence[Any]]
    binary_types: list[str] | None


def _copy_input(conn: sa.Connection, target: sa.Table, columns: list[sa.Column], rows: _Rows) -> _CopyInput:
    """Convert ``rows`` for a COPY into ``target``: each value as SQLAlchemy binds it for its column,
    column by column (map runs the loop in C): a Python loop over every value of every row cost a
    quarter of a large load."""
    names = [column.name for column in columns]
    values, kinds, plain_json = [], [], []
    by_column = zip(columns, _column_values(names, rows), strict=True)
    for index, (column, column_values) in enumerate(by_column):
        column_kinds = set(map(type, column_values))
        if _plain_json(column.type, column_kinds, conn.dialect):
            plain_json.append(index)  # converted below, once the format is known
            converted = column_values
        else:
            convert = _copy_converter(column.type, conn.dialect)
            converted = convert(column_values, column_kinds) if convert else column_values
        if converted is not column_values:
            column_kinds = set(map(type, converted))
        values.append(converted)
        kinds.append(column_kinds)
    binary_types = _binary_copy_types(columns, values, kinds, conn.dialect)
    for index in plain_json:
        column_type = columns[index].type
        if binary_types is not None:
            values[index] = _json_field_bytes(column_type, values[index], conn.dialect)
            binary_types[index] = "bytea"  # the field's bytes as they are (see _json_field_bytes)
        else:
            values[index] = _copy_converter(column_type, conn.dialect)(values[index], kinds[index])
    if binary_types is not None and "numeric" in binary_types:
        dump = _numeric_dumper(conn.connection.driver_connection)
        for index, name in enumerate(binary_types):
            if name == "numeric" and kinds[index] <= _DECIMALS:
                values[index] = _numeric_field_bytes(values[index], dump)
                binary_types[index] = "bytea"  # the field's bytes as they are, as for JSON
    return _CopyInput(target, names, values, binary_types)


def convert_for_copy(conn: sa.Connection, table: sa.Table, rows: Columns) -> None:
    """Work out, ahead of the write, what :func:`insert_rows` of ``rows`` into ``table`` will send
    by COPY, and keep it with the rows. The load converts a batch's rows in its read-ahead thread,
    while the thread writing the previous batch waits for the warehouse, instead of converting
    them between its statements (a third of the writing thread's Python at 100k orders).
    ``conn``: any connection of the warehouse's engine. A value that cannot be converted is left
    for the write itself, which raises it as it always did."""
    if not _uses_copy(conn, rows):
        return
    try:
        rows.copy_input = _copy_input(conn, table, [table.c[name] for name in rows.names], rows)
    except Exception:  # noqa: BLE001 - raised, with its scrubbed message, by the write
        rows.copy_input = None


def _copy_rows(conn: sa.Connection, target: sa.Table, columns: list[sa.Column], rows: _Rows) -> None:
    """Stream ``rows`` into ``target`` with COPY on the connection's own psycopg connection (same
    transaction), each value converted as SQLAlchemy binds it for its column in ``columns``.
    (:class:`Columns` are taken as they are, without being turned into rows and back; converted
    already when :func:`convert_for_copy` did it for the same table and columns.)"""
    preparer = conn.dialect.identifier_preparer
    names = [column.name for column in columns]
    sql = f"COPY {preparer.format_table(target)} ({', '.join(preparer.quote(n) for n in names)}) FROM STDIN"
    if not conn.in_transaction():
        conn.begin()  # as conn.execute() would: the caller's commit() must cover the COPY
    try:
        ready = rows.copy_input if isinstance(rows, Columns) else None
        if ready is None or ready.target is not target or ready.names != names:
            ready = _copy_input(conn, target, columns, rows)
        binary_types = ready.binary_types
        if binary_types is not None:
            sql += " (FORMAT BINARY)"
        with conn.connection.driver_connection.cursor() as cursor, cursor.copy(sql) as copy:
            if binary_types is not None:
                if "bytea" in binary_types:
                    _pass_bytes_through(cursor)
                copy.set_types(binary_types)
            for record in zip(*ready.values, strict=True):
                copy.write_row(record)
    except Exception as exc:
        # raised as conn.execute() would: a DBAPIError subclass, or a StatementError for a
        # value refused on the way (e.g. a naive datetime); told without row values, as the
        # engine's own errors are (warehouse.errors)
        scrub(exc, rows)
        raise sa.exc.DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error, hide_parameters=True) from exc


def _pass_bytes_through(cursor: Any) -> None:
    """Dump this cursor's ``bytea`` fields with psycopg's own bytes dumper (C with psycopg's binary
    build). By the type's name psycopg picks the last one registered for it, DB-API's ``Binary``
    wrapper's, a Python call per value: the JSON fields of a large load, some 2 % of its CPU."""
    from psycopg.adapt import PyFormat

    cursor.adapters.register_dumper(bytes, cursor.adapters.get_dumper(bytes, PyFormat.BINARY))


@functools.lru_cache(maxsize=1024)  # made once per column type, not per COPY
def _copy_converter(column_type: sa.types.TypeEngine, dialect: sa.Dialect) -> _ConvertColumn | None:
    """How a column's values (a list) go into COPY, or None: as they are.

    Each value through the type's bind processor for the dialect, as in a statement parameter
    (UtcDateTime, psycopg's JSON wrappers with ``none_as_null``, ...). Floats for NUMERIC columns
    also take PostgreSQL's own float-to-numeric rounding: a bound float is a float8 that the server
    casts through 15 significant digits, while COPY would read every digit of its text. A column
    whose values the processor would all leave as they are (:func:`_left_as_is`) is taken whole.
    """
    bind = column_type.dialect_impl(dialect).bind_processor(dialect)
    if isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float):
        bind = _float_as_numeric if bind is None else _then(bind, _float_as_numeric)
    if bind is None:
        return None
    as_is = _left_as_is(column_type, dialect)

    def convert(values: Sequence[Any], kinds: set[type] | None = None) -> Sequence[Any]:
        """``kinds``: the values' types, when known."""
        if as_is is not None and as_is(values, set(map(type, values)) if kinds is None else kinds):
            return values
        return list(map(bind, values))

    return convert


def _then(first: _Convert, second: _Convert) -> _Convert:
    return lambda value: second(first(value))


def _float_as_numeric(value: Any) -> Any:
    return format(value, ".15g") if isinstance(value, float) else value


_NONE = type(None)


def _left_as_is(
    column_type: sa.types.TypeEngine, dialect: sa.Dialect
) -> Callable[[Sequence[Any], set[type]], bool] | None:
    """A check that the bind processor of ``column_type`` (and the float rounding of a NUMERIC
    column) returns every value of a column as it is, or None: no such check. Told from the
    values' types (found in C), not by calling the processor on each value (some 5 % of a large load).

    UtcDateTime leaves a UTC datetime as it is; Money and NUMERIC convert only floats; Boolean
    only values that are not booleans."""
    if isinstance(column_type, UtcDateTime):
        return _all_utc if dialect.name == "postgresql" else None
    if isinstance(column_type, Money) or (isinstance(column_type, sa.Numeric) and not isinstance(column_type, sa.Float)):
        return _no_floats if dialect.name == "postgresql" else None
    if isinstance(column_type, sa.Boolean):
        return _only_booleans if dialect.supports_native_boolean else None
    return None


def _no_floats(_values: Sequence[Any], kinds: set[type]) -> bool:
    return float not in kinds


def _only_booleans(_values: Sequence[Any], kinds: set[type]) -> bool:
    return kinds <= {bool, _NONE}


def _all_utc(values: Sequence[Any], kinds: set[type]) -> bool:
    """None or datetimes in UTC (``datetime.UTC``), which the processor would only copy."""
    if not kinds <= {datetime, _NONE}:
        return False
    return all(value is None or value.tzinfo is UTC for value in set(values))


def _values_of(names: list[str]) -> Callable[[_Row], tuple[Any, ...]]:
    """A row's values of ``names``, as a tuple in that order."""
    if len(names) == 1:  # (itemgetter of a single name gives the value, not a tuple)
        return lambda row: (row[names[0]],)
    return operator.itemgetter(*names)


_DATE_ONLY = frozenset({date, _NONE})
_INTEGERS = frozenset({int, _NONE})
# What psycopg's binary COPY dumper of each PostgreSQL type takes (it picks the dumper by the
# column's type, not by the value's, as the text format does): a column's values, converted.
_BINARY_COPY_VALUES: dict[str, frozenset[type]] = {
    "varchar": frozenset({str, _NONE}),
    "text": frozenset({str, _NONE}),
    "numeric": frozenset({Decimal, int, _NONE}),
    "timestamp with time zone": frozenset({datetime, _NONE}),
    "date": _DATE_ONLY,
    "boolean": frozenset({bool, _NONE}),
    "smallint": _INTEGERS,
    "integer": _INTEGERS,
    "bigint": _INTEGERS,
}


def _binary_copy_types(
    columns: Sequence[sa.Column], values: list[Sequence[Any]], kinds: list[set[type]], dialect: sa.Dialect
) -> list[str] | None:
    """The columns' PostgreSQL types for a binary COPY of ``values`` (converted, column by column;
    ``kinds``: their types), or None: the rows go as text.

    Binary, the values need no text formatting or escaping by the driver nor parsing by the
    server (timestamps, dates, booleans; JSON as its text): half the driver's time for an order's
    row. It is taken only when every value is of a kind its column's binary dumper writes as the
    text format would be read (an aware datetime, a Decimal, a bool, ...); anything else (a float
    amount, a text in a date column, an unknown type) goes as text, as it always did."""
    from psycopg.types.json import Json, Jsonb

    # psycopg's wrappers, or plain documents not converted yet (_plain_json)
    json_values = {"json": _PLAIN_JSON | {Json}, "jsonb": _PLAIN_JSON | {Jsonb}}
    types = []
    for column, column_values, column_kinds in zip(columns, values, kinds, strict=True):
        name = _postgresql_type_name(column.type, dialect)
        accepted = _BINARY_COPY_VALUES.get(name) or json_values.get(name)
        if accepted is None or not column_kinds <= accepted:
            return None
        # (UtcDateTime's processor refuses a naive datetime: only other columns are looked at)
        if name == "timestamp with time zone" and not isinstance(column.type, UtcDateTime):
            if _any_naive(column_values):
                return None  # the text format lets the server's time zone place a naive datetime
        if name in _INTEGER_BITS and not _fits(column_values, _INTEGER_BITS[name]):
            return None  # the server refuses it, naming the column, as for any value
        types.append(name)
    return types


_INTEGER_BITS = {"smallint": 16, "integer": 32, "bigint": 64}


def _fits(values: Sequence[int | None], bits: int) -> bool:
    """Whether every integer fits a signed integer of ``bits`` (the binary dumper cannot write it)."""
    present = [value for value in values if value is not None]
    limit = 1 << (bits - 1)
    return not present or (min(present) >= -limit and max(present) < limit)


def _plain_json(column_type: sa.types.TypeEngine, kinds: set[type], dialect: sa.Dialect) -> bool:
    """Whether a JSON column's values are plain documents (dicts, lists, None) that the warehouse's
    own JSON codec writes: then a binary COPY takes their encoded bytes (:func:`_json_field_bytes`)."""
    return (
        _postgresql_type_name(column_type, dialect) in ("json", "jsonb")
        and kinds <= _PLAIN_JSON
        and uses_warehouse_json(dialect)
    )


# (msgspec.Raw: a document already encoded by the codec, which writes it as it is)
_PLAIN_JSON = frozenset({dict, list, msgspec.Raw, _NONE})
_JSONB_VERSION = b"\x01"  # the first byte of a jsonb value in binary: its format's version


def _json_field_bytes(
    column_type: sa.types.TypeEngine, values: Sequence[Any], dialect: sa.Dialect
) -> list[Any]:
    """A plain JSON column's values as the fields of a binary COPY: the codec's JSON text as UTF-8
    (after jsonb's version byte), written here in one step instead of through SQLAlchemy's bind
    processor, psycopg's JSON wrapper and its dumper (three Python calls a value, some 5 % of a
    load). None is SQL NULL where the column says ``none_as_null``, else the JSON ``null``, as
    the bind processor has it. Sent with the bytea dumper, which passes bytes through: in binary
    COPY a field is only its bytes, read by the column's own type (the server checks the JSON)."""
    prefix = _JSONB_VERSION if _postgresql_type_name(column_type, dialect) == "jsonb" else b""
    none = None if column_type.dialect_impl(dialect).none_as_null else prefix + json_bytes(None)
    return [none if value is None else prefix + json_bytes(value) for value in values]


_DECIMALS = frozenset({Decimal, _NONE})


def _numeric_dumper(driver_connection: Any) -> Callable[[Any], Any]:
    """The dump of psycopg's binary dumper of ``numeric``, the one a binary COPY of the column uses."""
    from psycopg.pq import Format

    adapters = driver_connection.adapters
    return adapters.get_dumper_by_oid(adapters.types["numeric"].oid, Format.BINARY)(Decimal, driver_connection).dump


def _numeric_field_bytes(values: Sequence[Decimal | None], dump: Callable[[Any], Any]) -> list[bytes | None]:
    """A NUMERIC column's Decimals as the fields of a binary COPY, each distinct value dumped once.

    psycopg's dumper takes some 1 µs a Decimal (an order's amounts and its items' prices and
    quantities: 7 % of a large load), and amounts repeat, within a COPY and across a load's. A
    Decimal's text tells its sign, digits and exponent, all the binary form holds (``1.0`` and
    ``1.00`` are equal, not the same field), so values of one text share their bytes."""
    texts = list(map(str, values))
    known = _NUMERIC_FIELDS
    if len(known) > _NUMERIC_FIELDS_KEPT:
        known.clear()
    fields = {}
    for text, value in dict(zip(texts, values, strict=True)).items():
        field = known.get(text, _UNKNOWN)
        if field is _UNKNOWN:
            field = known[text] = None if value is None else bytes(dump(value))  # None: 'None', no Decimal's text
        fields[text] = field
    return list(map(fields.__getitem__, texts))


# Each NUMERIC field's bytes by its Decimal's text, for the process's COPYs.
_UNKNOWN = object()
_NUMERIC_FIELDS: dict[str, bytes | None] = {}
_NUMERIC_FIELDS_KEPT = 20_000  # some 2.5 MB; a 100k-order load has 100k distinct


def _any_naive(values: Sequence[datetime | None]) -> bool:
    return any(value is not None and value.tzinfo is None for value in set(values))


@functools.lru_cache(maxsize=1024)  # compiled once per column type, not per COPY
def _postgresql_type_name(column_type: sa.types.TypeEngine, dialect: sa.Dialect) -> str:
    """``VARCHAR(18)`` -> ``varchar``: the name psycopg knows the type by."""
    return column_type.compile(dialect=dialect).split("(")[0].strip().lower()


def select_in(
    conn: sa.Connection,
    table: sa.Table,
    columns: Sequence[sa.Column],
    column: sa.Column,
    values: Sequence[Any],
    *where: sa.ColumnElement[bool],
) -> list[sa.Row]:
    """``columns`` of the rows of ``table`` whose ``column`` is one of ``values`` and that meet
    ``where``: an index probe per value on PostgreSQL, whatever its statistics say.

    For ``column IN (...)`` PostgreSQL plans from statistics that miss the rows the current
    transaction wrote (a new table has none at all), so mid-load it may read the whole table, or
    every row of one ``where`` value, once per batch. Each value joined to a LATERAL subquery
    fenced with OFFSET 0 stays a lookup of its own. SQLite probes the index for an IN list itself.
    """
    found: list[sa.Row] = []
    for batch in in_batches(values):
        if conn.dialect.name == "postgresql":
            wanted = sa.func.unnest(_bound_array(column, batch)).table_valued("value").render_derived()
            fenced = sa.select(*columns).where(column == wanted.c.value, *where).offset(sa.literal_column("0"))
            probe = fenced.lateral()
            query = sa.select(probe).select_from(wanted).join(probe, sa.true())
        else:
            query = sa.select(*columns).where(one_of(conn, column, batch), *where)
        found.extend(conn.execute(query).all())  # one fetchall, not a fetchone per row
    return found


def one_of(conn: sa.Connection, column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``column IN (values)``; on PostgreSQL ``column = ANY(:array)``, one bound array.

    An IN list binds a parameter per value, so its statement text changes with every count and
    psycopg parses it afresh each time (some 15 ms for 2,000 values); the array keeps one text.
    """
    if conn.dialect.name == "postgresql":
        return column == sa.any_(_bound_array(column, values))
    return column.in_(list(values))


def _bound_array(column: sa.ColumnElement[Any], values: Sequence[Any]) -> sa.ColumnElement[Any]:
    """``values`` as one bound PostgreSQL array of the column's type.

    Keys that are all integers, or all texts without a comma, are bound as ONE text, their
    comma-joined list, that the server splits (``string_to_array``): psycopg dumps a list
    element by element in Python, a regular-expression search each for its quoting (some 1 µs
    a key; the write-back binds some 500k keys for 100k orders). Other values go as a list."""
    # VARCHAR without a length: a cast to VARCHAR(n) would cut longer values to a match
    element = sa.String() if isinstance(column.type, sa.String) else column.type
    joined = _joined_keys(values)
    if joined is None:
        return sa.bindparam(None, list(values), type_=postgresql.ARRAY(element))
    split = sa.func.string_to_array(sa.bindparam(None, joined, type_=sa.Text()), sa.literal(",", sa.Text()))
    return sa.cast(split, postgresql.ARRAY(element))


def _joined_keys(values: Sequence[Any]) -> str | None:
    """``values`` joined by commas when splitting that text gives them back exactly, else None."""
    kinds = set(map(type, values))
    if kinds == {int}:
        return ",".join(map(str, values))
    if kinds == {str}:
        joined = ",".join(values)
        # (no value holds a comma; one empty text would split into no value)
        return joined if joined and joined.count(",") == len(values) - 1 else None
    return None


class _Analyze(ExecutableDDLElement):
    def __init__(self, table: sa.Table, columns: Sequence[str] = ()):
        self.table, self.columns = table, columns


@compiles(_Analyze)
def _compile_analyze(element: _Analyze, compiler: Any, **_kw: Any) -> str:
    columns = f" ({', '.join(compiler.preparer.quote(name) for name in element.columns)})" if element.columns else ""
    return f"ANALYZE {compiler.preparer.format_table(element.table)}{columns}"


def analyze(conn: sa.Connection, *tables: sa.Table, columns: Mapping[str, Sequence[str]] | None = None) -> None:
    """Refresh PostgreSQL's statistics of tables a stage has just filled in bulk.

    Autovacuum analyzes them only later: until then the planner takes a table that was empty
    for tiny, and pages through it by reading and sorting all remaining rows for each page
    (measured: 30 s instead of 13 s to read a 100k-order run). SQLite plans by its indexes.

    ``columns``: by table name, the only columns to sample (the table's size is counted all the
    same). The others keep their statistics, and autovacuum still analyzes the whole table: a
    column list leaves its count of rows changed since the last full ANALYZE as it was.
    """
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        conn.execute(_Analyze(table, (columns or {}).get(table.name, ())))


def in_batches(values: Sequence[Any], size: int = UPSERT_BATCH_SIZE) -> list[Sequence[Any]]:
    """``values`` in slices of at most ``size`` (bounds the parameters of an IN list)."""
    return [values[i : i + size] for i in range(0, len(values), size)]


__all__ = [
    "COPY_MIN_ROWS",
    "UPSERT_BATCH_SIZE",
    "analyze",
    "dialect_insert",
    "in_batches",
    "insert_rows",
    "one_of",
    "select_in",
    "update_rows",
    "upsert",
    "upsert_one",
]
