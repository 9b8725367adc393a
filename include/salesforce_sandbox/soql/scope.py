"""Name resolution: one object of a query, its table alias, and the parent joins that
dotted paths (``Account.Parent.Name``) need.

Paths resolve through ``SObject.relationship(name)`` to a reference field and its first
``reference_to`` object; each distinct path becomes one LEFT JOIN, so an empty lookup
gives nulls instead of dropping the row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import count

from ..ddl import quote_ident
from ..schema import Field, Schema, SObject
from .ast import FieldPath
from .diagnostics import INVALID_FIELD, MALFORMED_QUERY, query_error

MAX_RELATIONSHIP_DEPTH = 5

# Ids are compared exactly (and so use their indexes); other text compares case-insensitively.
_CASE_SENSITIVE_TYPES = frozenset({"id", "reference"})
_NON_TEXT_TYPES = frozenset({"boolean", "int", "double", "currency", "percent", "date", "datetime"})

RelationshipPath = tuple[str, ...]  # canonical relationship names from the scope's object


def is_text(field: Field) -> bool:
    return field.type not in _NON_TEXT_TYPES


@dataclass(frozen=True)
class Column:
    """A resolved field: where it lives in SQL and what it is called in results."""

    relationships: RelationshipPath
    field: Field
    sql: str  # e.g. '"t2"."Name"'

    @property
    def name(self) -> str:
        """The dotted name with canonical spelling, as Bulk CSV headers show it."""
        return ".".join((*self.relationships, self.field.name))

    @property
    def comparable_sql(self) -> str:
        """The column with the collation SOQL compares and sorts it with."""
        if is_text(self.field) and self.field.type not in _CASE_SENSITIVE_TYPES:
            return f"{self.sql} COLLATE NOCASE"
        return self.sql


@dataclass(frozen=True)
class _Join:
    alias: str
    parent_alias: str
    reference: Field
    target: SObject


class AliasSequence:
    """Table aliases unique across a query and its subqueries (t0, t1, ...)."""

    def __init__(self) -> None:
        self._numbers = count()

    def next(self) -> str:
        return f"t{next(self._numbers)}"


class Scope:
    """One object in one query level (the root query, a child subquery, a semi-join)."""

    def __init__(self, schema: Schema, obj: SObject, aliases: AliasSequence, source: str) -> None:
        self.schema = schema
        self.object = obj
        self.alias = aliases.next()
        self._aliases = aliases
        self._source = source
        self._joins: dict[RelationshipPath, _Join] = {}

    @property
    def id_sql(self) -> str:
        return self.column_sql(self.alias, "Id")

    @staticmethod
    def column_sql(alias: str, field_name: str) -> str:
        return f"{quote_ident(alias)}.{quote_ident(field_name)}"

    def resolve(self, path: FieldPath) -> Column:
        """The column behind ``path``; INVALID_FIELD for an unknown field or relationship."""
        *relationship_names, field_name = path.parts
        if len(relationship_names) > MAX_RELATIONSHIP_DEPTH:
            raise query_error(
                MALFORMED_QUERY,
                self._source,
                path.offset,
                f"SOQL statements cannot query relationships that are more than {MAX_RELATIONSHIP_DEPTH} "
                "levels away from the root entity object.",
            )
        current, alias, walked = self.object, self.alias, ()
        for name in relationship_names:
            reference = current.relationship(name)
            target = (
                self.schema.get(reference.reference_to[0]) if reference and reference.reference_to else None
            )
            if reference is None or target is None:
                raise query_error(
                    INVALID_FIELD,
                    self._source,
                    path.offset,
                    f"Didn't understand relationship '{name}' in field path. If you are attempting to use a "
                    "custom relationship, be sure to append the '__r' after the custom relationship name. "
                    "Please reference your WSDL or the describe call for the appropriate names.",
                )
            walked = (*walked, reference.relationship_name)
            join = self._joins.get(walked)
            if join is None:
                join = _Join(self._aliases.next(), alias, reference, target)
                self._joins[walked] = join
            current, alias = target, join.alias
        field = current.field(field_name)
        if field is None:
            raise query_error(
                INVALID_FIELD,
                self._source,
                path.offset,
                f"No such column '{field_name}' on entity '{current.name}'. If you are attempting to use a "
                "custom field, be sure to append the '__c' after the custom field name. Please reference "
                "your WSDL or the describe call for the appropriate names.",
            )
        return Column(walked, field, self.column_sql(alias, field.name))

    def parent_id_sql(self, path: RelationshipPath) -> str:
        """The ``Id`` of the parent record reached by ``path`` (null when the lookup is empty)."""
        return self.column_sql(self._joins[path].alias, "Id")

    def parent_object(self, path: RelationshipPath) -> SObject:
        return self._joins[path].target

    def table_sql(self) -> str:
        return f"{quote_ident(self.object.name)} {quote_ident(self.alias)}"

    def joins_sql(self, paths: Iterable[RelationshipPath]) -> str:
        """LEFT JOINs for ``paths`` and every path on the way to them, parents first."""
        needed = {path[:depth] for path in paths for depth in range(1, len(path) + 1)}
        clauses = []
        for path in sorted(needed, key=len):
            join = self._joins[path]
            clauses.append(
                f" LEFT JOIN {quote_ident(join.target.name)} {quote_ident(join.alias)}"
                f" ON {self.column_sql(join.alias, 'Id')} = {self.column_sql(join.parent_alias, join.reference.name)}"
            )
        return "".join(clauses)
