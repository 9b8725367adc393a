"""The query engine: SOQL text in, Id snapshots and REST-shaped records out.

A :class:`PreparedQuery` is what the query endpoints page over: ``ids()`` takes the cursor
snapshot (every matching root Id in result order), and ``fetch(ids)`` shapes one page of
it. Everything runs as SQL over the sandbox tables; nothing is filtered in Python.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections import defaultdict

from ..schema import Schema
from .parser import parse
from .plan import ChildPlan, RootPlan, plan_query
from .records import RecordShape, unchanged


class QueryEngine:
    def __init__(self, conn: sqlite3.Connection, schema: Schema) -> None:
        self.conn = conn
        self.schema = schema

    def prepare(
        self, soql: str, *, include_deleted: bool = False, now: dt.datetime | None = None
    ) -> PreparedQuery:
        """Parse and resolve ``soql``; raises :class:`SalesforceError` for any query error.

        ``include_deleted`` is queryAll (rows with IsDeleted are visible). ``now`` fixes what
        TODAY and the other relative date literals mean (default: the current time).
        """
        if now is None:
            now = dt.datetime.now(dt.UTC)
        elif now.tzinfo is None:
            raise ValueError("now must be a timezone-aware datetime")
        plan = plan_query(parse(soql), self.schema, include_deleted=include_deleted, now=now)
        return PreparedQuery(self.conn, plan)


class PreparedQuery:
    """One resolved query. Each call runs its SQL against the current data."""

    def __init__(self, conn: sqlite3.Connection, plan: RootPlan) -> None:
        self._conn = conn
        self._plan = plan

    @property
    def object_name(self) -> str:
        return self._plan.object.name

    @property
    def is_aggregate(self) -> bool:
        return self._plan.is_aggregate

    @property
    def is_count_only(self) -> bool:
        """``SELECT COUNT() ...``: the answer is only a totalSize, with no records."""
        return self._plan.count_only

    @property
    def has_offset(self) -> bool:
        """The query has an OFFSET clause (which Bulk API 2.0 does not support)."""
        return self._plan.clauses.offset is not None

    @property
    def has_subqueries(self) -> bool:
        return bool(self._plan.selection and self._plan.selection.children)

    def count(self) -> int:
        """The query's totalSize: matching root rows within LIMIT/OFFSET; for COUNT() the count;
        for COUNT(field) queries the number of aggregate records."""
        if self._plan.aggregates:
            return len(self.aggregate_records())
        sql, params = self._plan.count_statement()
        return self._conn.execute(sql, params).fetchone()[0]

    def ids(self) -> list[str]:
        """Root Ids in result order (ORDER BY, OFFSET, LIMIT applied); empty for aggregates."""
        if self.is_aggregate:
            return []
        sql, params = self._plan.ids_statement()
        return [row[0] for row in self._conn.execute(sql, params)]

    def fetch(self, ids: list[str]) -> list[dict]:
        """REST records for ``ids``, in that order. Ids no longer in the table are skipped."""
        rows = self._root_rows(ids)
        selection = self._plan.selection
        assert selection is not None  # _root_rows refuses aggregate queries
        children = _fetch_children(self._conn, selection.children, [row[0] for row in rows])
        return [selection.shape.build(row, children) for row in rows]

    def columns(self) -> list[str]:
        """Flat column names for Bulk CSV, in SELECT order ("Id", "Account.Name", ...)."""
        if self._plan.selection is None:
            return [aggregate.alias for aggregate in self._plan.aggregates]
        return [column.name for column in self._plan.selection.flat]

    def fetch_flat(self, ids: list[str]) -> list[list]:
        """Rows matching :meth:`columns` for ``ids``, values as JSON types."""
        rows = self._root_rows(ids)
        flat = self._plan.selection.flat
        # Bulk pages run to 100,000 rows: convert only the values not stored in their JSON form
        # (numbers, booleans) rather than call a converter for every value.
        positions = [column.index for column in flat]
        converted = [(n, column.convert) for n, column in enumerate(flat) if column.convert is not unchanged]
        flat_rows = [[row[index] for index in positions] for row in rows]
        for values in flat_rows:
            for n, convert in converted:
                values[n] = convert(values[n])
        return flat_rows

    def aggregate_records(self) -> list[dict]:
        """``[{"attributes": {"type": "AggregateResult"}, "expr0": n}]`` for COUNT(field);
        ``[]`` for COUNT() (its result is only a totalSize) and for non-aggregate queries."""
        plan = self._plan
        if not plan.aggregates:
            return []
        sql, params = plan.aggregate_statement()
        values = self._conn.execute(sql, params).fetchone()
        record: dict = {"attributes": {"type": "AggregateResult"}}
        record.update(
            (aggregate.alias, value) for aggregate, value in zip(plan.aggregates, values, strict=True)
        )
        # Without GROUP BY there is one result row; LIMIT and OFFSET still apply to it.
        start = plan.clauses.offset or 0
        end = None if plan.clauses.limit is None else start + plan.clauses.limit
        return [record][start:end]

    def _root_rows(self, ids: list[str]) -> list[tuple]:
        """The root rows of ``ids`` (distinct, as :meth:`ids` gives them), in that order."""
        selection = self._plan.selection
        if selection is None:
            raise TypeError("aggregate queries have no records to fetch; use aggregate_records()")
        if not ids:
            return []
        sql, params = self._plan.fetch_statement(json.dumps(list(ids)))
        rows = self._conn.execute(sql, params).fetchall()
        position = {record_id: n for n, record_id in enumerate(ids)}
        id_index = selection.shape.id_index
        rows.sort(key=lambda row: position[row[id_index]])
        return rows


def _fetch_children(
    conn: sqlite3.Connection, plans: list[ChildPlan], parent_ids: list[str]
) -> dict[str, dict[str, list[dict]]]:
    """For each child subquery: parent Id -> its child records, with one SQL per subquery."""
    found: dict[str, dict[str, list[dict]]] = {}
    if not parent_ids:
        return found
    ids_json = json.dumps(parent_ids)
    for plan in plans:
        sql, params = plan.statement(ids_json)
        rows = conn.execute(sql, params).fetchall()
        shape: RecordShape = plan.selection.shape
        grandchildren = _fetch_children(conn, plan.selection.children, [row[shape.id_index] for row in rows])
        by_parent: dict[str, list[dict]] = defaultdict(list)
        for row in rows:
            by_parent[row[0]].append(shape.build(row, grandchildren))
        found[plan.relationship] = by_parent
    return found
