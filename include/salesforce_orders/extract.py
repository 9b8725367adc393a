"""Extract: stream the window's Activated orders from Salesforce into the run's staging tables.

Pages are flattened to the staged shape (dotted relationship paths, as Bulk CSV headers name
them), split into orders and their items, and written to staging page by page, so memory does not
grow with the number of orders. Staging is keyed by the run: a retried task first clears what an
earlier try of the same run left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from . import faultpoints
from .model import CARD_DATA_MASKED, SF_ACTIVE, StagedItem, StagedOrder
from .progress import Progress
from .readahead import ReadAhead, after_the_first, read_ahead
from .redaction import mask_records
from .salesforce import SalesforceOrdersHook
from .soql import CURRENCY_FIELD
from .warehouse.engines import json_bytes
from .warehouse.types import parse_utc

log = logging.getLogger(__name__)


def flatten(record: dict, prefix: str = "") -> dict[str, Any]:
    """A REST record as one flat dict: parents as dotted paths, ``attributes`` and child lists dropped."""
    flat: dict[str, Any] = {}
    _flatten_into(flat, record, prefix)
    return flat


def _flatten_into(flat: dict[str, Any], record: dict, prefix: str) -> None:
    # Parents are written into the one dict (no dict per parent merged back), and the record's
    # own fields, most of them, keep their key as it is: this runs for every record of a REST run.
    for key, value in record.items():
        if key == "attributes":
            continue
        if isinstance(value, dict):
            if "records" not in value:  # else a child subquery: handled by split_order
                _flatten_into(flat, value, f"{prefix}{key}.")
        elif prefix:
            flat[prefix + key] = value
        else:
            flat[key] = value


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
    accounts_changed: int = 0  # Accounts whose edits brought their orders into the run
    ancestors: int = 0  # ancestor Accounts read and stored as customers (see hierarchy)
    parent_account_ids: set[str] = field(default_factory=set)  # the staged orders' Account.ParentId
    # Accounts of the hierarchy the warehouse cannot store, with why (hierarchy.held_back): the
    # validate quarantines the orders under them
    held_accounts: dict[str, str] = field(default_factory=dict)
    card_data_masked: set[str] = field(default_factory=set)  # ids of the orders with card numbers masked

    def as_dict(self) -> dict[str, Any]:
        return {
            "extracted": self.orders,
            "accounts_changed": self.accounts_changed,
            "ancestors": self.ancestors,
            "items": self.items,
            "pages": self.pages,
            "api_calls": self.api_calls,
            "max_system_modstamp": self.max_system_modstamp,
            "seconds": round(self.seconds, 2),
            "card_data_masked": len(self.card_data_masked),
            "held_accounts": self.held_accounts,
        }

    def log_masked(self) -> None:
        """Name the orders whose records held card numbers (ids only: never a value)."""
        if self.card_data_masked:
            shown = sorted(self.card_data_masked)[:20]
            log.warning(
                "Card numbers masked in %d orders before staging; clean them up in Salesforce (flag card_data_masked): %s%s",
                len(self.card_data_masked), ", ".join(shown), " ..." if len(self.card_data_masked) > len(shown) else "",
            )


def mask_card_data(records: list[dict], order_id_key: str, summary: ExtractSummary, encoded: list[bytes] | None = None) -> None:
    """Mask the card numbers in a page's records before they are staged; flag the records that had
    any. ``encoded``: the records' JSON for the staging (``staging.encoded_records``), searched
    for card numbers and written anew for the records masked."""
    for position, fields in mask_records(records, encoded).items():
        record = records[position]
        record[CARD_DATA_MASKED] = fields
        summary.card_data_masked.add(record.get(order_id_key))
        if encoded is not None:
            encoded[position] = json_bytes(record)


def _calls_of(hook: SalesforceOrdersHook | None) -> Callable[[], int] | None:
    return None if hook is None else (lambda: hook.usage.calls)


def _rest_split(items_relationship: str) -> Callable[[dict], tuple[StagedOrder, list[StagedItem]]]:
    return lambda record: split_order(record, items_relationship)


def _already_flat(record: dict) -> tuple[StagedOrder, list[StagedItem]]:
    return record, []  # a Bulk CSV row: flat already, its items come from their own query


def _against_staged(
    engine: sa.Engine, run_id: str, latest: dict[str, tuple[StagedOrder, list[StagedItem]]], superseded: list[str], schema: str | None
) -> None:
    """Of a page's orders met for the first time by this query (``latest`` but not ``superseded``),
    those the run staged already: an older version than the staged one is left out, with its
    items; a later (or the same) one is ``superseded``, its staged items replaced by its own."""
    from .staging import staged_modstamps

    again = set(superseded)
    first_met = [order_id for order_id in latest if order_id not in again]
    with engine.connect() as conn:
        staged = staged_modstamps(conn, run_id, first_met, schema=schema)
    for order_id, staged_stamp in staged.items():
        stamp = latest[order_id][0].get("SystemModstamp")
        if staged_stamp is not None and (not stamp or parse_utc(stamp) < staged_stamp):
            del latest[order_id]
        else:
            superseded.append(order_id)


def stage_pages(
    engine: sa.Engine,
    run_id: str,
    pages: Iterable[list[dict]],
    items_relationship: str,
    *,
    schema: str | None = None,
    progress_every: float = 10.0,
    summary: ExtractSummary | None = None,
    hook: SalesforceOrdersHook | None = None,
    split: Callable[[dict], tuple[StagedOrder, list[StagedItem]]] | None = None,
    fresh: bool = False,
) -> ExtractSummary:
    """Write each page of order records (with or without their items) to staging, a transaction a page.

    ``fresh``: the run had nothing staged when the pages began (the extract clears the run's
    staging first), so an order met for the first time here, and its items, are inserted rather
    than merged."""
    from .staging import drop_staged_items, encoded_records, stage_items, stage_orders

    summary = summary or ExtractSummary()
    split = split or _rest_split(items_relationship)
    progress = Progress("extract", "orders", every=progress_every, api_calls=_calls_of(hook))
    # An order changed while the run was paging can come twice: the later SystemModstamp wins,
    # with its own items (an id and a stamp per order: small next to the records themselves).
    staged_stamps: dict[str, str] = {}
    for page in read_ahead(pages):  # the next page is fetched while this one is written
        latest: dict[str, tuple[StagedOrder, list[StagedItem]]] = {}
        superseded = []  # staged by an earlier page: their items are replaced
        for record in page:
            order, order_items = split(record)
            order_id, stamp = order.get("Id"), order.get("SystemModstamp") or ""
            if order_id in staged_stamps:
                if stamp < staged_stamps[order_id]:
                    continue  # an older version than the one already seen
                if order_id not in latest:
                    superseded.append(order_id)
            staged_stamps[order_id] = stamp
            latest[order_id] = (order, order_items)
            if parent_id := order.get("Account.ParentId"):
                summary.parent_account_ids.add(parent_id)
            if stamp and (summary.max_system_modstamp is None or stamp > summary.max_system_modstamp):
                summary.max_system_modstamp = stamp
        if not fresh:
            # Staged by an earlier query of the run (the window's, before the changed Accounts'
            # orders are read): the later version wins with its own items here too, else the
            # items a newer version no longer has stay staged beside it (its total then differs).
            _against_staged(engine, run_id, latest, superseded, schema)
        orders = [order for order, _ in latest.values()]
        items = [item for _, order_items in latest.values() for item in order_items]
        order_texts, item_texts = encoded_records(engine, orders), encoded_records(engine, items)
        mask_card_data(orders, "Id", summary, order_texts)
        mask_card_data(items, "OrderId", summary, item_texts)
        with engine.begin() as conn:
            if superseded:
                drop_staged_items(conn, run_id, superseded, schema=schema)
            restaged = set(superseded)
            for again in (False, True):
                chosen = [position for position, order in enumerate(orders) if (order["Id"] in restaged) is again]
                stage_orders(
                    conn, run_id, [orders[p] for p in chosen], schema=schema, new=fresh and not again,
                    encoded=None if order_texts is None else [order_texts[p] for p in chosen],
                )
            stage_items(conn, run_id, items, schema=schema, new=fresh, encoded=item_texts)  # a re-staged order's were dropped above
        summary.orders += len(orders) - len(superseded)
        summary.items += len(items)
        summary.pages += 1
        progress.add(len(orders) - len(superseded), f"{summary.items} items")
        faultpoints.reach("extract.page_staged")
    summary.seconds += progress.finish(f"{summary.items} items")
    return summary


def stage_item_pages(
    engine: sa.Engine,
    run_id: str,
    pages: Iterable[list[dict]],
    summary: ExtractSummary,
    *,
    schema: str | None = None,
    hook: SalesforceOrdersHook | None = None,
    fresh: bool = False,
) -> ExtractSummary:
    """Write pages of order items (Bulk: queried apart from their orders) to staging; ``fresh`` as
    in :func:`stage_pages` (a Bulk job's result holds each item once)."""
    from .staging import encoded_records, stage_items

    progress = Progress("extract", "order items", api_calls=_calls_of(hook))
    for page in read_ahead(pages):
        texts = encoded_records(engine, page)
        mask_card_data(page, "OrderId", summary, texts)
        with engine.begin() as conn:
            stage_items(conn, run_id, page, schema=schema, new=fresh, encoded=texts)
        summary.items += len(page)
        summary.pages += 1
        progress.add(len(page))
    summary.seconds += progress.finish()
    return summary


def with_currency(pages: Iterable[list[dict]], currency: str | None) -> Iterable[list[dict]]:
    """The order records of ``pages``, each given ``currency`` as its ``CurrencyIsoCode``: in an org
    without multi-currency the records have none, and every amount is in the org's currency.
    (None: the records' own, as read.)"""
    if currency is None:
        return pages
    return (_with_currency(page, currency) for page in pages)


def _with_currency(page: list[dict], currency: str) -> list[dict]:
    for record in page:
        record[CURRENCY_FIELD] = currency
    return page


def extract_rest(
    engine: sa.Engine,
    hook: SalesforceOrdersHook,
    run_id: str,
    soql: str,
    *,
    items_relationship: str,
    page_size: int | None = None,
    schema: str | None = None,
    fresh: bool = False,
    order_currency: str | None = None,
) -> ExtractSummary:
    """The orders ``soql`` reads, with their items, staged page by page (``fresh``: see :func:`stage_pages`;
    ``order_currency``: see :func:`with_currency`)."""
    calls_before, pages_before = hook.usage.calls, hook.usage.result_pages
    pages = with_currency(hook.iter_query_pages(soql, page_size=page_size), order_currency)
    summary = stage_pages(engine, run_id, pages, items_relationship, schema=schema, hook=hook, fresh=fresh)
    summary.api_calls = hook.usage.calls - calls_before
    summary.pages = hook.usage.result_pages - pages_before
    return summary


def extract_bulk(
    engine: sa.Engine,
    hook: SalesforceOrdersHook,
    run_id: str,
    orders_soql: str,
    items_soql: str,
    *,
    schema: str | None = None,
    fresh: bool = False,
    order_currency: str | None = None,
) -> ExtractSummary:
    """Bulk API 2.0: one query job for the orders, one for their items (Bulk has no subqueries);
    ``fresh``: see :func:`stage_pages`; ``order_currency``: see :func:`with_currency`.

    Both jobs are started before the orders are read: Salesforce works on the items' job while
    the orders' results are staged, and the two read the org at nearly the same moment. Once the
    orders' first page is in (their job done), the items' job is asked about and its first result
    pages downloaded, while the orders are staged."""
    calls_before, pages_before = hook.usage.calls, hook.usage.result_pages
    orders_job, items_job = hook.start_bulk_query(orders_soql), hook.start_bulk_query(items_soql)
    items = ReadAhead(hook.iter_bulk_query_pages(items_soql, job_id=items_job), name="bulk-items")
    try:
        orders = after_the_first(hook.iter_bulk_query_pages(orders_soql, job_id=orders_job), items.start)
        summary = stage_pages(
            engine, run_id, with_currency(orders, order_currency),
            items_relationship="", schema=schema,
            hook=hook, split=_already_flat, fresh=fresh,
        )
        stage_item_pages(engine, run_id, items, summary, schema=schema, hook=hook, fresh=fresh)
    finally:
        items.close()
    summary.api_calls = hook.usage.calls - calls_before
    summary.pages = hook.usage.result_pages - pages_before  # API result pages, not the chunks staged
    return summary


def changed_accounts(
    engine: sa.Engine, hook: SalesforceOrdersHook, soql: str, config: Any, *, schema: str | None = None
) -> dict[str, list[str]]:
    """Of the Accounts ``soql`` reads (changed in the window), those whose customer in the warehouse
    differs from them now, or whose active orders differ from their customer, or, with no customer,
    that have orders in quarantine (the change may be the fix: a name shortened, a card number
    taken out of the customer id), with what differs. Other Accounts are not the import's business
    (no order of theirs was imported or refused)."""
    from .transform import customer_changes
    from .warehouse.definitions import tables
    from .warehouse.writes import select_in

    t = tables(schema)
    with engine.connect() as conn:
        behind = _accounts_with_orders_behind(conn, t)
    changed: dict[str, list[str]] = {}
    for page in hook.iter_query_pages(soql):
        mask_records(page)  # as its orders were: a name holding a card number matches its stored, masked self
        ids = [r["Id"] for r in page]
        with engine.connect() as conn:
            rows = select_in(conn, t.customers, list(t.customers.c), t.customers.c.sf_account_id, ids)
            quarantined = _quarantined_since(conn, t, ids)
        stored = {row.sf_account_id: row._mapping for row in rows}
        for account in page:
            if account["Id"] in stored:
                what = customer_changes(account, stored[account["Id"]], config) or (
                    [_ORDERS_BEHIND] if account["Id"] in behind else []
                )
            else:
                # No customer: none of its orders was imported, so our write-back never wrote it
                # either (no echo), and a change since its orders were quarantined may be their fix.
                quarantined_at = quarantined.get(account["Id"])
                fixed = quarantined_at is not None and parse_utc(account["SystemModstamp"]) >= quarantined_at
                what = [_ORDERS_QUARANTINED] if fixed else []
            if what:
                changed[account["Id"]] = what
    return changed


_ORDERS_BEHIND = "its orders' Account name or customer id (a run that read the change did not load)"
_ORDERS_QUARANTINED = "orders of it in quarantine (the change may be their fix)"


def _quarantined_since(conn: sa.Connection, t: Any, account_ids: list[str]) -> dict[str, datetime]:
    """Of these Accounts, those with orders in quarantine, each with when the latest run that
    quarantined one started: an Account changed since may have been fixed after that run read it
    (one changed before was read by it, and its orders would only be quarantined again: a run
    re-reading them each time would count them against ``max_invalid_share`` too)."""
    from .warehouse.writes import select_in

    q, r = t.quarantined_orders, t.import_runs
    started = sa.func.coalesce(
        sa.select(r.c.started_at).where(r.c.run_id == q.c.run_id).scalar_subquery(), q.c.quarantined_at, type_=q.c.quarantined_at.type
    )
    since: dict[str, datetime] = {}
    for account_id, at in select_in(conn, q, [q.c.sf_account_id, started], q.c.sf_account_id, account_ids, q.c.released_at.is_(None)):
        since[account_id] = max(since.get(account_id, at), at)
    return since


def _accounts_with_orders_behind(conn: sa.Connection, t: Any) -> set[str]:
    """Accounts whose active orders carry another name or customer id than their customer row.

    The extract stores the Account hierarchy (changed Accounts, ancestors) as customers before the
    load: a run that read a change and never loaded leaves the customer current and its orders
    not, and the customer alone would no longer tell the next run. One pass over the orders,
    however many Accounts the window changed (our own write-back of customer ids changes many)."""
    o, c = t.external_orders, t.customers
    query = (
        sa.select(o.c.sf_account_id)
        .distinct()
        .join_from(o, c, c.c.sf_account_id == o.c.sf_account_id)
        .where(
            o.c.sf_state == SF_ACTIVE,
            sa.or_(o.c.account_name.is_distinct_from(c.c.name), o.c.customer_id.is_distinct_from(c.c.customer_id)),
        )
    )
    return set(conn.execute(query).scalars())


def count_staged(engine: sa.Engine, run_id: str, *, schema: str | None = None) -> tuple[int, int]:
    """The run's staged orders and items."""
    from .warehouse.definitions import tables

    t = tables(schema)
    with engine.connect() as conn:
        orders = conn.execute(sa.select(sa.func.count()).where(t.stg_orders.c.run_id == run_id)).scalar_one()
        items = conn.execute(sa.select(sa.func.count()).where(t.stg_order_items.c.run_id == run_id)).scalar_one()
    return orders, items
