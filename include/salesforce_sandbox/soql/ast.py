"""The parsed form of a SOQL query. Every node keeps the offset of its first character in
the query text, so later stages (name resolution, type checks) can point at it in errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class FieldPath:
    """``Name`` or ``Account.Parent.Name``: relationship names, then a field name."""

    parts: tuple[str, ...]
    offset: int

    @property
    def text(self) -> str:
        return ".".join(self.parts)


class LiteralKind(Enum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    NULL = "null"
    DATE = "date"
    DATETIME = "dateTime"
    DATE_RANGE = "date literal"  # TODAY, LAST_N_DAYS:n, ...


@dataclass(frozen=True)
class DateRange:
    """A relative day range such as ``LAST_N_DAYS:7``: days ``first``..``last`` relative to today."""

    name: str  # as written, e.g. "LAST_N_DAYS:7"
    first: int  # first day, relative to today (0 = today, -1 = yesterday)
    last: int  # last day, inclusive


@dataclass(frozen=True)
class Literal:
    kind: LiteralKind
    # str | int | float | bool | None | datetime.date | datetime.datetime (UTC) | DateRange
    value: object
    offset: int
    # For strings: offsets of ``%``/``_`` written escaped (``\%``, ``\_``), literal in LIKE.
    escaped_wildcards: frozenset[int] = field(default_factory=frozenset)


@dataclass(frozen=True)
class Comparison:
    """``field <op> value`` with op one of ``= != < <= > >= LIKE`` (``<>`` is read as ``!=``)."""

    field: FieldPath
    operator: str
    value: Literal
    offset: int


@dataclass(frozen=True)
class Membership:
    """``field IN (...)``, ``NOT IN``, ``INCLUDES`` or ``EXCLUDES`` with a list of literals."""

    field: FieldPath
    operator: str  # "IN", "NOT IN", "INCLUDES", "EXCLUDES"
    values: tuple[Literal, ...]
    offset: int


@dataclass(frozen=True)
class SemiJoin:
    """``Id IN (SELECT OrderId FROM OrderItem WHERE ...)`` and its ``NOT IN`` form."""

    field: FieldPath
    negated: bool
    query: Query
    offset: int


@dataclass(frozen=True)
class And:
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    operand: Condition
    offset: int


Condition = Comparison | Membership | SemiJoin | And | Or | Not


@dataclass(frozen=True)
class Count:
    """``COUNT()`` (field is None) or ``COUNT(field) [alias]``."""

    field: FieldPath | None
    alias: str | None
    offset: int


@dataclass(frozen=True)
class SubQuery:
    """A parent-to-child subquery in the select list: ``(SELECT ... FROM OrderItems ...)``."""

    query: Query
    offset: int


SelectItem = FieldPath | Count | SubQuery


@dataclass(frozen=True)
class OrderKey:
    field: FieldPath
    descending: bool = False
    nulls_last: bool = False  # Salesforce sorts nulls first unless told otherwise


@dataclass(frozen=True)
class Clause:
    """A number-valued clause (LIMIT, OFFSET) with where it was written."""

    value: int
    offset: int


@dataclass(frozen=True)
class Query:
    select: tuple[SelectItem, ...]
    object_name: str  # as written after FROM: an object, or a child relationship in a subquery
    object_offset: int
    where: Condition | None = None
    order_by: tuple[OrderKey, ...] = ()
    order_by_offset: int | None = None
    limit: Clause | None = None
    offset: Clause | None = None
    source: str = ""  # the whole query text (also on subqueries), for error positions


__all__ = [
    "And",
    "Clause",
    "Comparison",
    "Condition",
    "Count",
    "DateRange",
    "FieldPath",
    "Literal",
    "LiteralKind",
    "Membership",
    "Not",
    "Or",
    "OrderKey",
    "Query",
    "SelectItem",
    "SemiJoin",
    "SubQuery",
]
