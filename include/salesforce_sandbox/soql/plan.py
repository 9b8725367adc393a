"""A parsed query resolved against the schema and turned into SQL statements.

One query becomes a handful of set-based statements: the root Ids in result order, one
fetch of the root rows of a page (parents LEFT JOINed), and one fetch per child subquery
for the whole page. Id lists travel as one JSON parameter read with ``json_each``, so a
page of any size stays within SQLite's limit on bound variables.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from ..ddl import quote_ident
from ..schema import Schema, SObject
from .ast import Count, FieldPath, Query, SelectItem, SubQuery
from .clauses import CompiledClauses, Context, compile_clauses, unsupported_object
from .diagnostics import INVALID_TYPE, MALFORMED_QUERY, query_error
from .records import ChildSlot, Converter, FieldSlot, ParentSlot, RecordShape, json_converter
from .scope import AliasSequence, RelationshipPath, Scope
from .sqltext import select_sql

_REQUESTED = quote_ident("requested")  # the json_each table of requested Ids


@dataclass
class SelectList:
    """SQL expressions of a statement's result columns; positions are what shapes refer to."""

    expressions: list[str] = field(default_factory=list)

    def add(self, sql: str) -> int:
        self.expressions.append(sql)
        return len(self.expressions) - 1

    def sql(self) -> str:
        return ", ".join(self.expressions)


@dataclass(frozen=True)
class FlatColumn:
    name: str  # "Account.Name"
    index: int
    convert: Converter


@dataclass
class Selection:
    """What one query level selects: the SELECT list, the record shape, and child plans."""

    columns: SelectList
    shape: RecordShape
    paths: set[RelationshipPath]
    flat: list[FlatColumn]
    children: list[ChildPlan]


@dataclass
class ChildPlan:
    """A parent-to-child subquery, fetched for a whole page of parents at once."""

    relationship: str  # canonical child relationship name, e.g. "OrderItems"
    foreign_key_sql: str  # the child's lookup to the parent, e.g. '"t3"."OrderId"'
    clauses: CompiledClauses
    selection: Selection  # column 0 is the foreign key

    def statement(self, parent_ids_json: str) -> tuple[str, list]:
        """Children of the given parents, grouped by parent, each group in the subquery's order
        and cut at its LIMIT."""
        scope = self.clauses.scope
        inner_columns = ", ".join(
            f"{sql} AS c{i}" for i, sql in enumerate(self.selection.columns.expressions)
        )
        outer_columns = ", ".join(f"c{i}" for i in range(len(self.selection.columns.expressions)))
        joins = scope.joins_sql(self.clauses.paths | self.selection.paths)
        position = (
            f"ROW_NUMBER() OVER (PARTITION BY {self.foreign_key_sql} ORDER BY {self.clauses.order_sql})"
        )
        inner = select_sql(
            f"{inner_columns}, {position} AS position",
            scope.table_sql() + joins,
            where=f"{self.foreign_key_sql} IN ({select_sql('value', 'json_each(?)')}) AND {self.clauses.where_sql}",
        )
        params: list = [parent_ids_json, *self.clauses.params]
        limited = self.clauses.limit is not None
        if limited:
            params.append(self.clauses.limit)
        sql = select_sql(
            outer_columns, f"({inner})", where="position <= ?" if limited else None, order_by="c0, position"
        )
        return sql, params


@dataclass(frozen=True)
class Aggregate:
    alias: str  # "expr0" unless the query names it
    sql: str  # "COUNT(...)"


@dataclass
class RootPlan:
    object: SObject
    clauses: CompiledClauses
    selection: Selection | None  # None for aggregate queries
    aggregates: list[Aggregate]
    aggregate_paths: set[RelationshipPath]
    count_only: bool  # SELECT COUNT() FROM ...

    @property
    def is_aggregate(self) -> bool:
        return self.count_only or bool(self.aggregates)

    def ids_statement(self) -> tuple[str, list]:
        return self.clauses.select(self.clauses.scope.id_sql)

    def count_statement(self) -> tuple[str, list]:
        inner, params = self.clauses.select(self.clauses.scope.id_sql, ordered=False)
        return select_sql("COUNT(*)", f"({inner})"), params

    def aggregate_statement(self) -> tuple[str, list]:
        """One row of aggregates over all matching rows (LIMIT/OFFSET apply to result rows)."""
        scope = self.clauses.scope
        columns = ", ".join(aggregate.sql for aggregate in self.aggregates)
        joins = scope.joins_sql(self.clauses.paths | self.aggregate_paths)
        return select_sql(columns, scope.table_sql() + joins, where=self.clauses.where_sql), list(
            self.clauses.params
        )

    def fetch_statement(self, ids_json: str) -> tuple[str, list]:
        """The selected columns of the given root rows, in no set order: the engine puts them in
        the order of the Id list (cheaper than SQLite sorting whole rows of a 50,000-row page)."""
        assert self.selection is not None
        scope = self.clauses.scope
        source = (
            f"json_each(?) AS {_REQUESTED} JOIN {scope.table_sql()} ON {scope.id_sql} = {_REQUESTED}.value"
            + scope.joins_sql(self.selection.paths)
        )
        return select_sql(self.selection.columns.sql(), source), [ids_json]


def plan_query(query: Query, schema: Schema, *, include_deleted: bool, now: dt.datetime) -> RootPlan:
    obj = schema.get(query.object_name)
    if obj is None:
        raise unsupported_object(query.source, query.object_offset, query.object_name)
    context = Context(schema, query.source, AliasSequence(), include_deleted, now)
    scope = Scope(schema, obj, context.aliases, query.source)
    clauses = compile_clauses(query, scope, context)
    counts = [item for item in query.select if isinstance(item, Count)]
    if not counts:
        selection = _select(query.select, scope, context, SelectList())
        return RootPlan(obj, clauses, selection, [], set(), count_only=False)
    if counts[0].field is None:
        return RootPlan(obj, clauses, None, [], set(), count_only=True)
    aggregates, paths, unnamed = [], set(), 0
    for item in counts:
        column = scope.resolve(item.field)
        paths.add(column.relationships)
        alias = item.alias
        if alias is None:
            alias, unnamed = f"expr{unnamed}", unnamed + 1
        aggregates.append(Aggregate(alias, f"COUNT({column.sql})"))
    return RootPlan(obj, clauses, None, aggregates, paths, count_only=False)


def _select(items: tuple[SelectItem, ...], scope: Scope, context: Context, columns: SelectList) -> Selection:
    shape = RecordShape(scope.object.name, columns.add(scope.id_sql))
    selection = Selection(columns, shape, set(), [], [])
    shapes: dict[RelationshipPath, RecordShape] = {(): shape}
    for item in items:
        if isinstance(item, SubQuery):
            child = _plan_child(item, scope, context)
            _reject_duplicate(shape, child.relationship, item.offset, context.source)
            shape.slots.append(ChildSlot(child.relationship))
            selection.children.append(child)
            continue
        assert isinstance(item, FieldPath)  # COUNT items never reach here (parser rule)
        column = scope.resolve(item)
        for depth in range(1, len(column.relationships) + 1):
            path = column.relationships[:depth]
            if path not in shapes:
                parent = RecordShape(scope.parent_object(path).name, columns.add(scope.parent_id_sql(path)))
                shapes[path[:-1]].slots.append(ParentSlot(path[-1], parent))
                shapes[path] = parent
        owner = shapes[column.relationships]
        _reject_duplicate(owner, column.field.name, item.offset, context.source, shown=column.name)
        index = columns.add(column.sql)
        convert = json_converter(column.field)
        owner.slots.append(FieldSlot(column.field.name, index, convert))
        selection.flat.append(FlatColumn(column.name, index, convert))
        selection.paths.add(column.relationships)
    return selection


def _plan_child(item: SubQuery, parent: Scope, context: Context) -> ChildPlan:
    query = item.query
    relationship = parent.object.child_relationship(query.object_name)
    obj = context.schema.get(relationship.child_object) if relationship else None
    if relationship is None or obj is None:
        raise query_error(
            INVALID_TYPE,
            context.source,
            query.object_offset,
            f"Didn't understand relationship '{query.object_name}' in FROM part of query call. If you are "
            "attempting to use a custom relationship, be sure to append the '__r' after the custom "
            "relationship name. Please reference your WSDL or the describe call for the appropriate names.",
        )
    scope = Scope(context.schema, obj, context.aliases, context.source)
    clauses = compile_clauses(query, scope, context)
    columns = SelectList()
    foreign_key_sql = Scope.column_sql(scope.alias, relationship.field)
    columns.add(foreign_key_sql)
    selection = _select(query.select, scope, context, columns)
    return ChildPlan(relationship.relationship_name, foreign_key_sql, clauses, selection)


def _reject_duplicate(
    shape: RecordShape, name: str, offset: int, source: str, shown: str | None = None
) -> None:
    if shape.has(name):
        raise query_error(MALFORMED_QUERY, source, offset, f"duplicate field selected: {shown or name}")
