"""Query errors laid out as Salesforce lays them out: the query line, a caret, the row and
column, then the reason::

    \\nSELECT Id FROM Bogus\\n               ^\\nERROR at Row:1:Column:16\\nsObject type 'Bogus' is not supported.
"""

from __future__ import annotations

from ..errors import SalesforceError

MALFORMED_QUERY = "MALFORMED_QUERY"
INVALID_TYPE = "INVALID_TYPE"
INVALID_FIELD = "INVALID_FIELD"
INVALID_QUERY_FILTER_OPERATOR = "INVALID_QUERY_FILTER_OPERATOR"
NUMBER_OUTSIDE_VALID_RANGE = "NUMBER_OUTSIDE_VALID_RANGE"


def row_and_column(source: str, offset: int) -> tuple[int, int]:
    """1-based row and column of a character offset in the query text."""
    before = source[:offset]
    row = before.count("\n") + 1
    column = offset - (before.rfind("\n") + 1) + 1
    return row, column


def query_error(code: str, source: str, offset: int, reason: str) -> SalesforceError:
    """A :class:`SalesforceError` (HTTP 400) pointing at ``offset`` in ``source``."""
    row, column = row_and_column(source, offset)
    line = source.split("\n")[row - 1] if source else ""
    message = f"\n{line}\n{' ' * (column - 1)}^\nERROR at Row:{row}:Column:{column}\n{reason}"
    return SalesforceError(code, message, status=400)


def unexpected_token(source: str, offset: int, token_text: str | None) -> SalesforceError:
    """The syntax error: ``token_text`` is None at the end of the query."""
    shown = "<EOF>" if token_text is None else f"'{token_text}'"
    return query_error(MALFORMED_QUERY, source, offset, f"unexpected token: {shown}")
