"""Failed warehouse statements, told without the row values they failed on.

The text of a failed statement, as the driver words it, can carry the row being written:
PostgreSQL's DETAIL ("Failing row contains (...)"), the CONTEXT of a COPY or a bound parameter
(the value itself), a value quoted in the message ('invalid input syntax for type numeric:
"..."'); SQLAlchemy adds the bound parameters. Names, addresses and card numbers would reach the
task log that way. So every warehouse engine hides its parameters (``hide_parameters``) and passes
its errors through :func:`tell_without_row_values`: the driver's message is cut to its first line, a
quoted text in it is kept only when the database names it as a table, column, constraint or type,
and the order of the failing row is named when it can be told. The statement's shape (its SQL with
placeholders) stays, so the message still says what was being written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

_QUOTED = re.compile(r'"([^"]*)"')
# Parameters holding the id of the order a row belongs to; "__<n>" suffixes number the rows of a
# multi-row VALUES statement.
_ORDER_PARAMETER = re.compile(r"(?:key_)?(?:sf_order_id|first_order_id)(?:__\d+)?")
_COPY_LINE = re.compile(r"\bCOPY \S+, line (\d+)")


def _names_the_database_gives(error: BaseException) -> set[str]:
    """The table, column, constraint, type and schema a PostgreSQL error names (never values)."""
    diag = getattr(error, "diag", None)
    if diag is None:
        return set()
    names = (diag.table_name, diag.column_name, diag.constraint_name, diag.datatype_name, diag.schema_name)
    return {name for name in names if name}


def _database_text(error: BaseException) -> str:
    """What the database said beyond its first line (detail, context): where row values are."""
    diag = getattr(error, "diag", None)
    if diag is None:
        return ""
    return "\n".join(text for text in (diag.message_detail, diag.context) if text)


def scrubbed_message(error: BaseException) -> str:
    """The driver's message for ``error``: its first line, quoted values replaced by ``"…"``."""
    text = str(error.args[0]) if len(error.args) == 1 else str(error)
    first_line = text.strip().split("\n", 1)[0].strip()
    names = _names_the_database_gives(error)
    return _QUOTED.sub(lambda quoted: quoted.group(0) if quoted.group(1) in names else '"…"', first_line)


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


__all__ = [
    "naming_the_failing_order",
    "tell_without_row_values","failing_order", "hide_row_values", "order_ids", "scrub", "scrubbed_message"]
