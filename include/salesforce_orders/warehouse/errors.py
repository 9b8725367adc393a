"""Failed warehouse statements: told without the row values they failed on, and explained in short.

**Without row values.** The text of a failed statement, as the driver words it, can carry the row
being written: PostgreSQL's DETAIL ("Failing row contains (...)"), the CONTEXT of a COPY or a bound
parameter (the value itself), a value quoted in the message ('invalid input syntax for type
numeric: "..."'); SQLAlchemy adds the bound parameters. Names, addresses and card numbers would
reach the task log that way. So every warehouse engine hides its parameters (``hide_parameters``)
and passes its errors through :func:`tell_without_row_values`: the driver's message is cut to its
first line, a quoted text in it is kept only when the database names it as a table, column,
constraint or type, and the order of the failing row is named when it can be told. The statement's
shape (its SQL with placeholders) stays, so the message still says what was being written.

**In short.** A statement the warehouse refused is said by :func:`explain` in a short message: the
connection, the table, what happened and what to do, instead of SQLAlchemy's long text of the
statement. Bound values never appear (engines hide them, and the message is built from the
server's error code, names and the first line of its message); the statement's shape,
placeholders only, is logged on a line of its own for whoever debugs it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..redaction import mask_card_numbers


class WarehouseConnectionError(RuntimeError):
    """The warehouse Airflow connection is missing or cannot be used; the message names it."""


class WarehouseError(RuntimeError):
    """A warehouse statement failed; the message names the connection and the table and says what to do."""

    def __init__(self, message: str, *, retry: bool, statement: str) -> None:
        super().__init__(message)
        self.retry = retry
        self.statement = statement


# ---------------------------------------------------------------------------------------
# What the driver said
# ---------------------------------------------------------------------------------------


def _diagnostic(error: BaseException, field: str) -> str | None:
    """A field of a PostgreSQL error's diagnostics (``table_name``, ``message_detail``, ...), or None."""
    diag = getattr(error, "diag", None)
    return getattr(diag, field, None) if diag is not None else None


def _first_line(error: BaseException) -> str:
    """The first line of the driver's message for ``error`` ("" when it has none)."""
    text = str(error.args[0]) if len(error.args) == 1 else str(error)
    return text.strip().split("\n", 1)[0].strip()


# ---------------------------------------------------------------------------------------
# Without row values
# ---------------------------------------------------------------------------------------

_QUOTED = re.compile(r'"([^"]*)"')
# Parameters holding the id of the order a row belongs to; "__<n>" suffixes number the rows of a
# multi-row VALUES statement.
_ORDER_PARAMETER = re.compile(r"(?:key_)?(?:sf_order_id|first_order_id)(?:__\d+)?")
_COPY_LINE = re.compile(r"\bCOPY \S+, line (\d+)")


def _names_the_database_gives(error: BaseException) -> set[str]:
    """The table, column, constraint, type and schema a PostgreSQL error names (never values)."""
    fields = ("table_name", "column_name", "constraint_name", "datatype_name", "schema_name")
    return {name for name in (_diagnostic(error, field) for field in fields) if name}


def _database_text(error: BaseException) -> str:
    """What the database said beyond its first line (detail, context): where row values are."""
    return "\n".join(text for text in (_diagnostic(error, "message_detail"), _diagnostic(error, "context")) if text)


def scrubbed_message(error: BaseException) -> str:
    """The driver's message for ``error``: its first line, quoted values replaced by ``"…"``."""
    names = _names_the_database_gives(error)
    line = _QUOTED.sub(lambda quoted: quoted.group(0) if quoted.group(1) in names else '"…"', _first_line(error))
    if line.count('"') % 2:
        # a quoted value with a line break in it: the first line holds its opening quote only
        line = line[: line.rindex('"')] + '"…'
    return line


def order_ids(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The distinct order ids the rows of a statement belong to, in order."""
    found: dict[str, None] = {}
    for row in rows:
        for name, value in row.items():
            if isinstance(value, str) and _ORDER_PARAMETER.fullmatch(name):
                found[value] = None
    return list(found)


def failing_order(error: BaseException, rows: Sequence[Mapping[str, Any]]) -> str | None:
    """The id of the order whose row failed: when the statement wrote one order's rows, when a
    COPY names the line it stopped at, or when the database's detail names exactly one of the
    statement's orders (the detail is read here, never passed on)."""
    detail = _database_text(error)
    line = _COPY_LINE.search(detail)
    if line and 1 <= int(line.group(1)) <= len(rows):
        rows = [rows[int(line.group(1)) - 1]]
    ids = order_ids(rows)
    if len(ids) == 1:
        return ids[0]
    named = [order_id for order_id in ids if order_id in detail]
    return named[0] if len(named) == 1 else None


def scrub(error: BaseException, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace ``error``'s message, in place, by one without row values (a chained traceback
    prints the driver's exception too). Again with other rows, it names the order among those."""
    base = getattr(error, "_without_row_values", None)
    if base is None:
        base = error._without_row_values = scrubbed_message(error)  # type: ignore[attr-defined]
    error.args = (_naming_order(base, error, rows),)


def _naming_order(message: str, error: BaseException, rows: Sequence[Mapping[str, Any]]) -> str:
    order_id = failing_order(error, rows)
    if order_id:
        return f"{message} (order {order_id})"
    if ids := order_ids(rows):
        return f"{message} (one of {len(ids)} orders, {ids[0]} to {ids[-1]})"
    return message


def tell_without_row_values(statement_error: sa.exc.StatementError, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite a SQLAlchemy statement error (and the driver's error in it), in place, so that it
    names the failing order among ``rows`` and no value of any row."""
    original = statement_error.orig
    if original is None:
        return
    scrub(original, rows)
    statement_error.args = (f"({type(original).__module__}.{type(original).__name__}) {original.args[0]}",)
    statement_error.params = None  # not even kept on the exception


@contextmanager
def naming_the_failing_order(rows: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    """For a statement that writes ``rows`` without binding them (INSERT ... SELECT from rows
    copied into a temporary table): its error names the failing order among them."""
    try:
        yield
    except sa.exc.StatementError as exc:
        tell_without_row_values(exc, rows)
        raise


def _named_rows(context: Any) -> list[Mapping[str, Any]]:
    """The failed statement's parameter sets as dicts (the positional ones named after the
    compiled statement's parameters), to find order ids in."""
    parameters = context.parameters
    if parameters is None:
        return []
    sets = parameters if isinstance(parameters, list) else [parameters]
    execution = context.execution_context
    positions = getattr(getattr(execution, "compiled", None), "positiontup", None) or ()
    rows = []
    for values in sets:
        if isinstance(values, Mapping):
            rows.append(values)
        elif isinstance(values, Sequence) and len(values) == len(positions):
            rows.append(dict(zip(positions, values, strict=True)))
    return rows


def _tell_without_row_values(context: Any) -> None:
    statement_error = context.sqlalchemy_exception
    if statement_error is None or context.statement is None or context.is_disconnect:
        return  # a failed connect or a lost connection: nothing of a row to hide
    tell_without_row_values(statement_error, _named_rows(context))


def hide_row_values(engine: sa.Engine) -> sa.Engine:
    """Make ``engine``'s statement errors tell no row value (see the module's doc); returns it.

    The engine must have been created with ``hide_parameters=True``."""
    if not engine.hide_parameters:
        raise ValueError("create the warehouse engine with hide_parameters=True")
    sa.event.listen(engine, "handle_error", _tell_without_row_values)
    return engine


# ---------------------------------------------------------------------------------------
# In short: the connection, the table, what happened and what to do
# ---------------------------------------------------------------------------------------

GRANTS_HINT = "docs/warehouse.md, 'A least-privilege role for the import'; `salesforce-orders-warehouse grants <role>` prints them"


@dataclass(frozen=True)
class _Kind:
    what: str
    do: str
    retry: bool  # whether retrying the task can help without anyone doing anything


_READ_ONLY = _Kind(
    "the database is read-only for this connection",
    "Point the connection at the primary (writable) server, or turn default_transaction_read_only off for its role. "
    "Airflow retries the task (a fail-over may be under way).",
    retry=True,
)
_READ_ONLY_FILE = _Kind(
    "the database file is read-only for the Airflow worker",
    "Make the file and its directory (which holds its -wal and -shm files) writable for the workers. Airflow retries the task.",
    retry=True,
)
_PERMISSION = _Kind(
    "this connection's role lacks a privilege",
    f"Grant the role what the import needs ({GRANTS_HINT}), then clear the task. Not retried: it fails the same way until then.",
    retry=False,
)
_UNIQUE = _Kind(
    "a row with the same key is there already",
    "Rows written by hand or by another program collide with the import's keys: find the row with the failing "
    "order's key, correct or remove it, then clear the task. Airflow retries the task meanwhile.",
    retry=True,
)
_BUSY = _Kind(
    "another transaction held the rows or the database too long (lock time-out, deadlock or cancelled statement)",
    "Usually nothing: Airflow retries the task. If it keeps happening, find the blocking session (pg_stat_activity).",
    retry=True,
)
_OTHER = _Kind("", "The failed statement's shape is in the log above. Airflow retries the task.", retry=True)

_BY_SQLSTATE = {
    "25006": _READ_ONLY,  # read_only_sql_transaction
    "42501": _PERMISSION,  # insufficient_privilege
    "23505": _UNIQUE,  # unique_violation
    "40P01": _BUSY,  # deadlock_detected
    "55P03": _BUSY,  # lock_not_available
    "57014": _BUSY,  # query_canceled (statement_timeout)
}
_BY_SQLITE_MESSAGE = (
    ("readonly database", _READ_ONLY_FILE),
    ("UNIQUE constraint failed", _UNIQUE),
    ("database is locked", _BUSY),
)

_NAME = r'(?:"[^"]+"|[\w$]+)'
_STATEMENT_TABLE = re.compile(
    rf"^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|COPY|ANALYZE|ALTER\s+TABLE|CREATE\s+(?:TEMPORARY\s+)?(?:TABLE|VIEW|INDEX\s+\S+\s+ON)"
    rf"|DROP\s+(?:TABLE|VIEW)(?:\s+IF\s+EXISTS)?|SELECT\b.*?\bFROM)\s+({_NAME}(?:\.{_NAME})?)",
    re.IGNORECASE | re.DOTALL,
)
_MESSAGE_TABLE = re.compile(r'(?:table|relation|view) "?([\w.$]+)"?|constraint failed: (\w+)\.')
_COPY_TABLE = re.compile(r"upsert_[0-9a-f]{8}_(\w+)")  # writes._temporary_name: rows on their way into a table
_STATEMENT_SHAPE_LENGTH = 300


def explain(exc: sa.exc.DBAPIError, conn_id: str, *, stage: str | None = None) -> WarehouseError:
    """The short form of a failed warehouse statement of Airflow connection ``conn_id`` (in ``stage``)."""
    orig = exc.orig
    first_line = _first_line(orig) or type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None)
    kind = _kind(exc)
    what = kind.what or (mask_card_numbers(first_line) or "")[:200] + (f" (SQLSTATE {sqlstate})" if sqlstate else "")
    if kind is _UNIQUE and (constraint := _constraint(orig)):
        what += f" (constraint {constraint})"
    if kind is _PERMISSION:
        what += f" ({first_line[:200]})"
    table = _table(exc)
    on = f" on table {table}" if table else ""
    return WarehouseError(
        f"{stage + ': ' if stage else ''}The warehouse (Airflow connection {conn_id!r}) refused a statement{on}: {what}. {kind.do}",
        retry=kind.retry,
        statement=statement_shape(exc.statement),
    )


def refuses_every_row(exc: sa.exc.DBAPIError) -> bool:
    """Whether the refusal has nothing to do with the row written: a lost connection, a read-only
    database, a missing privilege, a lock. Writing the rows one by one cannot get round it."""
    return exc.connection_invalidated or _kind(exc) in (_READ_ONLY, _READ_ONLY_FILE, _PERMISSION, _BUSY)


def _kind(exc: sa.exc.DBAPIError) -> _Kind:
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate is not None:
        return _BY_SQLSTATE.get(sqlstate, _OTHER)
    message = str(exc.orig)
    return next((kind for text, kind in _BY_SQLITE_MESSAGE if text in message), _OTHER)


def statement_shape(statement: str | None) -> str:
    """The statement's text with its whitespace folded, shortened: placeholders, never values."""
    text = " ".join((statement or "").split())
    return text if len(text) <= _STATEMENT_SHAPE_LENGTH else text[: _STATEMENT_SHAPE_LENGTH - 3] + "..."


def _constraint(orig: BaseException) -> str | None:
    if constraint := _diagnostic(orig, "constraint_name"):
        return constraint
    match = re.search(r"constraint failed: ([\w.]+(?:, [\w.]+)*)", str(orig))  # SQLite names the columns
    return match.group(1) if match else None


def _table(exc: sa.exc.DBAPIError) -> str | None:
    """The table the failed statement was about: from the server's diagnostics, its message, or the statement."""
    name = _diagnostic(exc.orig, "table_name")
    if not name and (match := _MESSAGE_TABLE.search(str(exc.orig))):
        name = match.group(1) or match.group(2)
    if not name and (match := _STATEMENT_TABLE.search(exc.statement or "")):
        name = match.group(1)
    if not name:
        return None
    name = name.split(".")[-1].strip('"')
    copied = _COPY_TABLE.fullmatch(name)
    return copied.group(1) if copied else name


__all__ = [
    "GRANTS_HINT",
    "WarehouseConnectionError",
    "WarehouseError",
    "explain",
    "failing_order",
    "hide_row_values",
    "naming_the_failing_order",
    "order_ids",
    "refuses_every_row",
    "scrub",
    "scrubbed_message",
    "statement_shape",
    "tell_without_row_values",
]
