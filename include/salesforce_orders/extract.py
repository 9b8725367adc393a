"""Extract: stream the window's Activated orders from Salesforce into the run's staging tables.

Pages are flattened to the staged shape (dotted relationship paths, as Bulk CSV headers name
them), split into orders and their items, and written to staging page by page, so memory does not
grow with the number of orders. Staging is keyed by the run: a retried task first clears what an
earlier try of the same run left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .model import StagedItem, StagedOrder
from .salesforce import SalesforceOrdersHook

log = logging.getLogger(__name__)


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """A REST record as one flat dict: parents as dotted paths, ``attributes`` and child lists dropped."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            if "records" in value:  # a child subquery: handled by split_order
                continue
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def split_order(record: dict, items_relationship: str) -> tuple[StagedOrder, list[StagedItem]]:
    """One REST order record -> the staged order and its staged items."""
    children = record.get(items_relationship) or {}
    items = [flatten(child) for child in children.get("records", [])]
    for item in items:
        item.setdefault("OrderId", record.get("Id"))
    return flatten(record), items


@dataclass
class ExtractSummary:
    orders: int = 0
    items: int = 0
    pages: int = 0
    api_calls: int = 0
    max_system_modstamp: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "extracted": self.orders,
            "items": self.items,
            "pages": self.pages,
            "api_calls": self.api_calls,
            "max_system_modstamp": self.max_system_modstamp,
            "seconds": round(self.seconds, 2),
        }


def stage_pages(
    engine: sa.Engine,
    run_id: str,
    pages: Iterable[list[dict]],
    items_relationship: str,
    *,
    schema: str | None = None,
    progress_every: float = 10.0,
    summary: ExtractSummary | None = None,
) -> ExtractSummary:
    """Write each page of order records (with or without their items) to staging, a transaction a page."""
    from .staging import drop_staged_items, stage_items, stage_orders

    summary = summary or ExtractSummary()
    started = last_progress = time.monotonic()
    # An order changed while the run was paging can come twice: the later SystemModstamp wins,
    # with its own items (an id and a stamp per order: small next to the records themselves).
    staged_stamps: dict[str, str] = {}
    for page in pages:
        latest: dict[str, tuple[StagedOrder, list[StagedItem]]] = {}
        superseded = []  # staged by an earlier page: their items are replaced
        for record in page:
            order, order_items = split_order(record, items_relationship)
            order_id, stamp = order.get("Id"), order.get("SystemModstamp") or ""
            if order_id in staged_stamps:
                if stamp < staged_stamps[order_id]:
                    continue  # an older version than the one already seen
                if order_id not in latest:
                    superseded.append(order_id)
            staged_stamps[order_id] = stamp
            latest[order_id] = (order, order_items)
            if stamp and (summary.max_system_modstamp is None or stamp > summary.max_system_modstamp):
                summary.max_system_modstamp = stamp
        orders = [order for order, _ in latest.values()]
        items = [item for _, order_items in latest.values() for item in order_items]
        with engine.begin() as conn:
            if superseded:
                drop_staged_items(conn, run_id, superseded, schema=schema)
            stage_orders(conn, run_id, orders, schema=schema)
            stage_items(conn, run_id, items, schema=schema)
        summary.orders += len(orders) - len(superseded)
        summary.items += len(items)
        summary.pages += 1
        now = time.monotonic()
        if now - last_progress >= progress_every:
            last_progress = now
            log.info("Extracted %d orders, %d items (%.0f orders/s)", summary.orders, summary.items, summary.orders / (now - started))
    summary.seconds += time.monotonic() - started
    return summary


def stage_item_pages(
    engine: sa.Engine, run_id: str, pages: Iterable[list[dict]], summary: ExtractSummary, *, schema: str | None = None
) -> ExtractSummary:
    """Write pages of order items (Bulk: queried apart from their orders) to staging."""
    from .staging import stage_items

    started = time.monotonic()
    for page in pages:
        with engine.begin() as conn:
            stage_items(conn, run_id, page, schema=schema)
        summary.items += len(page)
        summary.pages += 1
        log.info("Extracted %d items", summary.items)
    summary.seconds += time.monotonic() - started
    return summary


def extract_rest(
    engine: sa.Engine,
    hook: SalesforceOrdersHook,
    run_id: str,
    soql: str,
    *,
    items_relationship: str,
    page_size: int | None = None,
    schema: str | None = None,
) -> ExtractSummary:
    calls_before = hook.usage.calls
    pages = hook.iter_query_pages(soql, page_size=page_size)
    summary = stage_pages(engine, run_id, pages, items_relationship, schema=schema)
    summary.api_calls = hook.usage.calls - calls_before
    return summary


def extract_bulk(
    engine: sa.Engine,
    hook: SalesforceOrdersHook,
    run_id: str,
    orders_soql: str,
    items_soql: str,
    *,
    schema: str | None = None,
) -> ExtractSummary:
    """Bulk API 2.0: one query job for the orders, one for their items (Bulk has no subqueries)."""
    calls_before = hook.usage.calls
    summary = stage_pages(engine, run_id, hook.iter_bulk_query_pages(orders_soql), items_relationship="", schema=schema)
    stage_item_pages(engine, run_id, hook.iter_bulk_query_pages(items_soql), summary, schema=schema)
    summary.api_calls = hook.usage.calls - calls_before
    return summary
