"""A statement the warehouse refused, said in a short message: the connection, the table, what
happened and what to do, instead of SQLAlchemy's long text of the statement.

Bound values never appear (engines hide them, and the message is built from the server's error
code, names and the first line of its message); the statement's shape, placeholders only, is
logged on a line of its own for whoever debugs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlalchemy as sa

from .redaction import mask_card_numbers

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
_COPY_TABLE = re.compile(r"upsert_[0-9a-f]{8}_(\w+)")  # warehouse._temporary_name: rows on their way into a table
_STATEMENT_SHAPE_LENGTH = 300


class WarehouseError(RuntimeError):
    """A warehouse statement failed; the message names the connection and the table and says what to do."""

    def __init__(self, message: str, *, retry: bool, statement: str) -> None:
        super().__init__(message)
        self.retry = retry
        self.statement = statement


def explain(exc: sa.exc.DBAPIError, conn_id: str, *, stage: str | None = None) -> WarehouseError:
    """The short form of a failed warehouse statement of Airflow connection ``conn_id`` (in ``stage``)."""
    orig = exc.orig
    first_line = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
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
    diag = getattr(orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None):
        return diag.constraint_name
    match = re.search(r"constraint failed: ([\w.]+(?:, [\w.]+)*)", str(orig))  # SQLite names the columns
    return match.group(1) if match else None


def _table(exc: sa.exc.DBAPIError) -> str | None:
    """The table the failed statement was about: from the server's diagnostics, its message, or the statement."""
    diag = getattr(exc.orig, "diag", None)
    name = getattr(diag, "table_name", None) if diag is not None else None
    if not name and (match := _MESSAGE_TABLE.search(str(exc.orig))):
        name = match.group(1) or match.group(2)
    if not name and (match := _STATEMENT_TABLE.search(exc.statement or "")):
        name = match.group(1)
    if not name:
        return None
    name = name.split(".")[-1].strip('"')
    copied = _COPY_TABLE.fullmatch(name)
    return copied.group(1) if copied else name


__all__ = ["WarehouseError", "explain", "refuses_every_row", "statement_shape"]
