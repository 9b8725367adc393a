"""The transform's partitions: ranges of order ids, each transformed by one mapped task instance.

The transform is pure work per order, so a run's valid staged orders are split into ranges of
about the same number of orders, and the DAG runs one ``transform`` instance per range side by
side (Airflow's dynamic task mapping): the transform of a large run uses every core. Each range
is half-open over ``sf_order_id`` (``start`` included, ``stop`` excluded, ``None`` open), the
first open at its start and the last at its end, so the ranges cover every order id whatever
was staged. The load still reads the run's transformed batches in order id order, whichever
instance wrote them: the warehouse is the same with one range or several.

A range travels through XCom as two order ids (:meth:`OrderIdRange.as_dict`) and reaches SQL
only as bound values (:meth:`OrderIdRange.where`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa


@dataclass(frozen=True)
class OrderIdRange:
    """Order ids from ``start`` (included) to ``stop`` (excluded); ``None``: no bound on that side."""

    start: str | None = None
    stop: str | None = None

    def where(self, column: sa.ColumnElement[Any]) -> list[sa.ColumnElement[bool]]:
        """The conditions putting ``column`` (an order id) in this range, its bounds bound values."""
        conditions = []
        if self.start is not None:
            conditions.append(column >= self.start)
        if self.stop is not None:
            conditions.append(column < self.stop)
        return conditions

    def as_dict(self) -> dict[str, str | None]:
        return {"start": self.start, "stop": self.stop}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> OrderIdRange:
        """The range an XCom carried; ``None``: every order id (the whole run in one go)."""
        if value is None:
            return EVERY_ORDER_ID
        return cls(start=value.get("start"), stop=value.get("stop"))

    def __str__(self) -> str:
        return f"order ids {self.start or 'first'} to {'before ' + self.stop if self.stop else 'last'}"


EVERY_ORDER_ID = OrderIdRange()


def partition_count(orders: int, *, partitions: int, min_orders: int) -> int:
    """How many ranges ``orders`` valid orders are split into: at most ``partitions``, each of at
    least ``min_orders`` (a small run is one range: another task would cost more to start than
    it saves), and always one, so the transform runs (and clears what a try before left)."""
    return max(1, min(partitions, orders // max(min_orders, 1)))


def plan_partitions(
    conn: sa.Connection, run_id: str, *, partitions: int, min_orders: int, schema: str | None = None
) -> list[OrderIdRange]:
    """The run's valid staged orders as ranges of about the same number of orders, in order id order."""
    from .warehouse.definitions import VALID, tables

    t = tables(schema).stg_orders
    valid = (t.c.run_id == run_id, t.c.status == VALID)
    orders = conn.execute(sa.select(sa.func.count()).select_from(t).where(*valid)).scalar_one()
    count = partition_count(orders, partitions=partitions, min_orders=min_orders)
    # The first order id of each range after the first: the one at its share of the run.
    nth_id = sa.select(t.c.sf_order_id).where(*valid).order_by(t.c.sf_order_id).limit(1)
    starts = [conn.execute(nth_id.offset(orders * i // count)).scalar_one() for i in range(1, count)]
    bounds = [None, *starts, None]
    return [OrderIdRange(start, stop) for start, stop in zip(bounds, bounds[1:], strict=False)]


def combine_results(
    results: Mapping[str, Any] | Iterable[Mapping[str, Any] | None] | None,
) -> dict[str, Any] | None:
    """The transform's result for the whole run from its instances' (one result, or a list of
    them as Airflow hands a mapped task's results on): the counts summed. ``None`` when an
    instance left none (it failed or did not run): the stage has no result."""
    if results is None or isinstance(results, Mapping):
        return dict(results) if results is not None else None
    parts = list(results)
    if not parts or any(part is None for part in parts):
        return None
    reasons: dict[str, int] = {}
    for part in parts:
        for reason, count in (part.get("skipped_reasons") or {}).items():
            reasons[reason] = reasons.get(reason, 0) + count
    return {
        "run_id": parts[0].get("run_id"),
        "transformed": sum(part.get("transformed", 0) for part in parts),
        "skipped": sum(part.get("skipped", 0) for part in parts),
        "skipped_reasons": reasons,
        "partitions": len(parts),
    }


__all__ = ["EVERY_ORDER_ID", "OrderIdRange", "combine_results", "partition_count", "plan_partitions"]
