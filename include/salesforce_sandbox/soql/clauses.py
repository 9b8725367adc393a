"""WHERE, ORDER BY, LIMIT and OFFSET of one query level, translated to SQLite.

SOQL's null semantics are two-valued: ``Name != 'x'`` and ``Name NOT IN (...)`` also match
records whose Name is null, and ``NOT`` negates a condition that is false on nulls. The SQL
below spells that out, so SQLite's three-valued logic never leaks through.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..ids import queried_id
from ..schema import Field, Schema
from .ast import (
    And,
    Comparison,
    Condition,
    Literal,
    LiteralKind,
    Membership,
    Not,
    Or,
    OrderKey,
    Query,
    SemiJoin,
)
from .dates import format_date, format_datetime, range_bounds
from .diagnostics import (
    INVALID_FIELD,
    INVALID_QUERY_FILTER_OPERATOR,
    INVALID_TYPE,
    MALFORMED_QUERY,
    query_error,
)
from .scope import AliasSequence, Column, RelationshipPath, Scope, is_text
from .sqltext import select_sql

_LIKE_ESCAPE = "\\"
# What the literal must be for each field type, and its name in Salesforce's message.
_EXPECTED_LITERAL = {
    "boolean": ((LiteralKind.BOOLEAN,), "boolean"),
    "int": ((LiteralKind.NUMBER,), "integer"),
    "double": ((LiteralKind.NUMBER,), "double"),
    "currency": ((LiteralKind.NUMBER,), "double"),
    "percent": ((LiteralKind.NUMBER,), "double"),
    "date": ((LiteralKind.DATE, LiteralKind.DATE_RANGE), "date"),
    "datetime": ((LiteralKind.DATETIME, LiteralKind.DATE_RANGE), "dateTime"),
}
_TEXT_LITERAL = ((LiteralKind.STRING,), "string")
# Fields holding record Ids: a 15-character id in =, !=, IN, NOT IN finds the record of its
# 18-character form (``ids.queried_id``), turned into it once per query, not per row.
_ID_TYPES = frozenset({"id", "reference"})


@dataclass(frozen=True)
class Context:
    """What every level of one query is compiled with."""

    schema: Schema
    source: str
    aliases: AliasSequence
    include_deleted: bool
    now: dt.datetime


@dataclass
class CompiledClauses:
    """The filtering and ordering of one query level, ready to be put in a statement."""

    scope: Scope
    where_sql: str  # never empty; includes the IsDeleted filter
    params: list[object]
    order_sql: str  # never empty; ends with the Id as a tie-breaker so paging is stable
    paths: set[RelationshipPath] = field(default_factory=set)  # parent joins WHERE/ORDER BY need
    limit: int | None = None
    offset: int | None = None

    def select(self, columns_sql: str, *, ordered: bool = True) -> tuple[str, list]:
        """``SELECT columns FROM ... WHERE ... [ORDER BY ...] LIMIT ? OFFSET ?`` and its params."""
        sql = select_sql(
            columns_sql,
            self.scope.table_sql() + self.scope.joins_sql(self.paths),
            where=self.where_sql,
            order_by=self.order_sql if ordered else None,
            limit_offset=True,
        )
        return sql, [*self.params, -1 if self.limit is None else self.limit, self.offset or 0]


def compile_clauses(query: Query, scope: Scope, context: Context) -> CompiledClauses:
    compiler = _ClauseCompiler(scope, context)
    conditions, params = [], []
    if not context.include_deleted:
        # Unary + keeps SQLite off the IsDeleted index: nearly every row has 0, so using it
        # would hide the selective indexes (a child's lookup, SystemModstamp).
        conditions.append(f"+{Scope.column_sql(scope.alias, 'IsDeleted')} = 0")
    if query.where is not None:
        where_sql, where_params = compiler.condition(query.where)
        conditions.append(where_sql)
        params += where_params
    order_sql = compiler.order_by(query.order_by)
    return CompiledClauses(
        scope=scope,
        where_sql=" AND ".join(conditions) or "1",
        params=params,
        order_sql=order_sql,
        paths=compiler.paths,
        limit=query.limit.value if query.limit else None,
        offset=query.offset.value if query.offset else None,
    )


class _ClauseCompiler:
    def __init__(self, scope: Scope, context: Context) -> None:
        self.scope = scope
        self.context = context
        self.paths: set[RelationshipPath] = set()

    def _error(self, code: str, offset: int, reason: str) -> Exception:
        return query_error(code, self.context.source, offset, reason)

    def _column(self, node: Comparison | Membership | SemiJoin | OrderKey) -> Column:
        column = self.scope.resolve(node.field)
        self.paths.add(column.relationships)
        return column

    # -- ORDER BY -----------------------------------------------------------------------

    def order_by(self, keys: tuple[OrderKey, ...]) -> str:
        terms, ordered_by_id = [], False
        for key in keys:
            column = self._column(key)
            ordered_by_id = ordered_by_id or (not column.relationships and column.field.name == "Id")
            if not column.field.describe()["sortable"]:
                raise self._error(
                    INVALID_FIELD,
                    key.field.offset,
                    f"field '{column.field.name}' can not be sorted in a query call",
                )
            direction = "DESC" if key.descending else "ASC"
            nulls = "LAST" if key.nulls_last else "FIRST"
            terms.append(f"{column.comparable_sql} {direction} NULLS {nulls}")
        if not ordered_by_id:
            terms.append(f"{self.scope.id_sql} ASC")  # a total order, so pages never overlap
        return ", ".join(terms)

    # -- WHERE --------------------------------------------------------------------------

    def condition(self, node: Condition) -> tuple[str, list]:
        if isinstance(node, And | Or):
            parts = [self.condition(operand) for operand in node.operands]
            joiner = " AND " if isinstance(node, And) else " OR "
            return "(" + joiner.join(sql for sql, _ in parts) + ")", [
                p for _, params in parts for p in params
            ]
        if isinstance(node, Not):
            sql, params = self.condition(node.operand)
            return f"NOT COALESCE({sql}, 0)", params
        if isinstance(node, Comparison):
            return self._comparison(node)
        if isinstance(node, Membership):
            return self._membership(node)
        return self._semi_join(node)

    def _filterable_column(self, node: Comparison | Membership | SemiJoin) -> Column:
        column = self._column(node)
        if not column.field.describe()["filterable"]:
            raise self._error(
                INVALID_FIELD,
                node.field.offset,
                f"field '{column.field.name}' can not be filtered in a query call",
            )
        return column

    def _comparison(self, node: Comparison) -> tuple[str, list]:
        column = self._filterable_column(node)
        target, literal, op = column.comparable_sql, node.value, node.operator
        if op == "LIKE":
            if not is_text(column.field):
                raise self._error(
                    INVALID_QUERY_FILTER_OPERATOR,
                    node.field.offset,
                    f"invalid operator on {column.field.type} field: LIKE can only be used on text fields",
                )
            return f"{column.sql} LIKE ? ESCAPE '{_LIKE_ESCAPE}'", [_like_pattern(literal)]
        self._check_literal(column.field, literal)
        if literal.kind is LiteralKind.NULL:
            if op not in ("=", "!="):
                raise self._error(
                    INVALID_QUERY_FILTER_OPERATOR,
                    literal.offset,
                    f"null can only be compared with = or !=, not {op}",
                )
            return (f"{column.sql} IS NULL" if op == "=" else f"{column.sql} IS NOT NULL"), []
        if literal.kind is LiteralKind.DATE_RANGE:
            return self._date_range(column, op, literal)
        value = self._sql_value(literal)
        if column.field.type in _ID_TYPES and op in ("=", "!="):
            value = queried_id(value)
        if op == "!=":
            return f"({column.sql} IS NULL OR {target} != ?)", [value]
        return f"{target} {op} ?", [value]

    def _date_range(self, column: Column, op: str, literal: Literal) -> tuple[str, list]:
        start, end = range_bounds(
            literal.value, self.context.now, as_datetime=column.field.type == "datetime"
        )
        target = column.sql
        # The range is [start, end): "<" and ">=" compare with its start, ">" and "<=" with its end.
        forms = {
            "=": (f"({target} >= ? AND {target} < ?)", [start, end]),
            "!=": (f"({target} IS NULL OR {target} < ? OR {target} >= ?)", [start, end]),
            "<": (f"{target} < ?", [start]),
            "<=": (f"{target} < ?", [end]),
            ">": (f"{target} >= ?", [end]),
            ">=": (f"{target} >= ?", [start]),
        }
        return forms[op]

    def _membership(self, node: Membership) -> tuple[str, list]:
        column = self._filterable_column(node)
        if node.operator in ("INCLUDES", "EXCLUDES"):
            return self._multipicklist(node, column)
        for literal in node.values:
            self._check_literal(column.field, literal)
            if literal.kind is LiteralKind.DATE_RANGE:
                raise self._error(
                    INVALID_QUERY_FILTER_OPERATOR,
                    literal.offset,
                    f"date literal {literal.value.name} is not valid in IN",
                )
        values = [self._sql_value(v) for v in node.values if v.kind is not LiteralKind.NULL]
        if column.field.type in _ID_TYPES:
            values = [queried_id(value) for value in values]
        has_null = len(values) < len(node.values)
        placeholders = ", ".join("?" * len(values))
        if node.operator == "IN":
            parts = [f"{column.comparable_sql} IN ({placeholders})"] if values else []
            if has_null:
                parts.append(f"{column.sql} IS NULL")
            return "(" + " OR ".join(parts) + ")", values
        if not has_null:
            return f"({column.sql} IS NULL OR {column.comparable_sql} NOT IN ({placeholders}))", values
        not_in = f" AND {column.comparable_sql} NOT IN ({placeholders})" if values else ""
        return f"({column.sql} IS NOT NULL{not_in})", values

    def _multipicklist(self, node: Membership, column: Column) -> tuple[str, list]:
        """``INCLUDES ('a;b', 'c')``: has both a and b, or has c. Stored values are ``a;b;c``."""
        if column.field.type != "multipicklist":
            raise self._error(
                INVALID_QUERY_FILTER_OPERATOR,
                node.field.offset,
                "includes or excludes operator only valid on multipicklist field",
            )
        alternatives, params = [], []
        padded = f"(';' || lower({column.sql}) || ';')"
        for literal in node.values:
            self._check_literal(column.field, literal)
            if literal.kind is not LiteralKind.STRING:
                raise self._error(
                    INVALID_FIELD, literal.offset, "INCLUDES and EXCLUDES take quoted values only"
                )
            terms = [term.strip().lower() for term in literal.value.split(";") if term.strip()]
            if not terms:
                continue
            alternatives.append("(" + " AND ".join(f"instr({padded}, ?) > 0" for _ in terms) + ")")
            params += [f";{term};" for term in terms]
        matches = "(" + " OR ".join(alternatives) + ")" if alternatives else "0"
        if node.operator == "INCLUDES":
            return matches, params
        return f"NOT COALESCE({matches}, 0)", params

    def _semi_join(self, node: SemiJoin) -> tuple[str, list]:
        column = self._filterable_column(node)
        if column.field.type not in ("id", "reference"):
            raise self._error(
                INVALID_FIELD,
                node.field.offset,
                f"Field '{column.field.name}' must be an Id or reference field to be used in a semi-join",
            )
        sub = node.query
        obj = self.context.schema.get(sub.object_name)
        if obj is None:
            raise unsupported_object(self.context.source, sub.object_offset, sub.object_name)
        sub_scope = Scope(self.context.schema, obj, self.context.aliases, self.context.source)
        selected = sub_scope.resolve(sub.select[0])
        if selected.field.type not in ("id", "reference"):
            raise self._error(
                MALFORMED_QUERY,
                sub.select[0].offset,
                "A semi-join subquery must select exactly one Id or reference field",
            )
        clauses = compile_clauses(sub, sub_scope, self.context)
        if node.negated:
            # NOT IN over a set holding a null is never true in SQL: keep nulls out of the set.
            clauses.where_sql += f" AND {selected.sql} IS NOT NULL"
        sub_sql, sub_params = clauses.select(selected.sql, ordered=bool(sub.order_by))
        if node.negated:
            return f"({column.sql} IS NULL OR {column.sql} NOT IN ({sub_sql}))", sub_params
        return f"{column.sql} IN ({sub_sql})", sub_params

    # -- literals -----------------------------------------------------------------------

    def _check_literal(self, field: Field, literal: Literal) -> None:
        if literal.kind is LiteralKind.NULL:
            return
        kinds, type_name = _EXPECTED_LITERAL.get(field.type, _TEXT_LITERAL)
        if literal.kind not in kinds:
            quoting = "be enclosed in quotes" if type_name == "string" else "not be enclosed in quotes"
            raise self._error(
                INVALID_FIELD,
                literal.offset,
                f"value of filter criterion for field '{field.name}' must be of type {type_name} and should {quoting}",
            )

    @staticmethod
    def _sql_value(literal: Literal) -> object:
        if literal.kind is LiteralKind.BOOLEAN:
            return 1 if literal.value else 0
        if literal.kind is LiteralKind.DATETIME:
            return format_datetime(literal.value)
        if literal.kind is LiteralKind.DATE:
            return format_date(literal.value)
        return literal.value


def _like_pattern(literal: Literal) -> str:
    """The SOQL pattern as an SQLite LIKE pattern with ``\\`` as its escape character."""
    out = []
    for index, char in enumerate(literal.value):
        if index in literal.escaped_wildcards or char == _LIKE_ESCAPE:
            out.append(_LIKE_ESCAPE)
        out.append(char)
    return "".join(out)


def unsupported_object(source: str, offset: int, name: str) -> Exception:
    return query_error(
        INVALID_TYPE,
        source,
        offset,
        f"sObject type '{name}' is not supported. If you are attempting to use a custom object, be sure to "
        "append the '__c' after the entity name. Please reference your WSDL or the describe call for the "
        "appropriate names.",
    )
