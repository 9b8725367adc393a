"""Account hierarchies: every ancestor of the run's accounts, read from Salesforce up to the top.

An order tells of its Account and that Account's parent only. A parent with no orders of its own
would otherwise be stored without its own parent, and the roll-ups would stop there. So the extract
reads the ancestor chain of the run's parent accounts (and of the Accounts edited in the window):
an Account and five of its ancestors a query (200 Accounts a query, the queries of a level read
together: five a call), again from the fifth while it has a parent, and stores each ancestor as a
customer. The load then writes the orders' own accounts as always.

An ancestor the warehouse cannot store (a value longer than its column: the extract runs before
the validation) is held back with every Account below it, never written: the validation
quarantines the orders under it, naming the Account and the field, and the rest of the run loads.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from .config import ImportConfig
from .redaction import MASKED_CARD, mask_records
from .salesforce import Query, SalesforceOrdersHook
from .soql import ANCESTOR_LEVELS, account_fields, build_ancestors_query
from .warehouse.definitions import tables
from .warehouse.writes import in_batches, select_in, upsert

log = logging.getLogger(__name__)

ACCOUNTS_PER_QUERY = 200  # a SOQL IN list of Account ids
_ADDRESS_PREFIX = "Billing"


def read_ancestors(hook: SalesforceOrdersHook, config: ImportConfig, account_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """These Accounts and all their ancestors, by Id, each as ``{field: value}`` (account_fields)."""
    fields = account_fields(config)
    accounts: dict[str, dict[str, Any]] = {}
    pending = sorted({i for i in account_ids if i})
    while pending:
        # the queries of a level are independent: read together, five a call (read_together)
        queries = [Query(build_ancestors_query(config, chunk)) for chunk in in_batches(pending, ACCOUNTS_PER_QUERY)]
        for pages in hook.read_together(queries):
            for page in pages:
                for record in page:
                    for account in _chain(record, fields):
                        accounts[account["Id"]] = account
        # a chain longer than one query reaches: carry on from its top; a missing id (deleted, not
        # visible) is not asked for twice
        asked = set(pending)
        pending = sorted({a["ParentId"] for a in accounts.values() if a.get("ParentId")} - accounts.keys() - asked)
        for account_id in asked - accounts.keys():
            accounts.setdefault(account_id, {})
    found = {i: a for i, a in accounts.items() if a}
    mask_records(list(found.values()))  # as the orders' Account fields are masked
    return found


def _chain(record: Mapping[str, Any] | None, fields: list[str]) -> Iterable[dict[str, Any]]:
    """The Account of a query record and its ancestors, as flat records, nearest first."""
    for _ in range(ANCESTOR_LEVELS + 1):
        if not record:
            return
        yield {name: record.get(name) for name in fields}
        record = record.get("Parent")


def as_order_account(account: Mapping[str, Any], parent: Mapping[str, Any] | None) -> dict[str, Any]:
    """An Account (and its parent) in the shape an order's record gives them (``Account.*``), so the
    transform's rules make the same customer of it."""
    record = {"AccountId": account.get("Id"), **{f"Account.{k}": v for k, v in account.items() if k != "attributes"}}
    if parent:
        record.update({f"Account.Parent.{k}": v for k, v in parent.items() if k not in ("attributes", "ParentId")})
    return record


def store_ancestors(
    conn: sa.Connection, config: ImportConfig, accounts: Mapping[str, Mapping[str, Any]], now: datetime
) -> tuple[int, dict[str, str]]:
    """Insert the accounts missing from ``customers``, update those whose name, parent, customer id
    or own billing address differ (an Account without a billing address keeps the stored one).
    Returns the number of customers written, and the accounts held back (see :func:`held_back`)."""
    from .load import customer_row
    from .transform import customer_changes, customer_for

    customers = tables(config.warehouse_schema).customers
    stored = {
        row.sf_account_id: row._mapping
        for row in select_in(conn, customers, list(customers.c), customers.c.sf_account_id, sorted(accounts))
    }
    made = {}
    for account_id, account in sorted(accounts.items()):
        parent = accounts.get(account.get("ParentId") or "")
        customer, _ = customer_for(as_order_account(account, parent), config)
        made[account_id] = (customer, customer_row(customer, now))
    held = held_back(accounts, {account_id: row for account_id, (_, row) in made.items()}, customers, config)
    new, changed = [], []
    for account_id, (customer, row) in made.items():
        if account_id in held:
            continue
        if account_id not in stored:
            new.append(row)
        elif customer_changes(accounts[account_id], stored[account_id], config) or stored[account_id]["parent_customer_id"] != customer.parent_customer_id:
            del row["first_imported_at"]
            if customer.billing.is_empty():
                row = {k: v for k, v in row.items() if not k.startswith("billing_")}
            changed.append(row)
    upsert(conn, customers, new, ["sf_account_id"], update_columns=[])
    for row in changed:
        conn.execute(sa.update(customers).where(customers.c.sf_account_id == row["sf_account_id"]).values(row))
    if held:
        log.warning(
            "Account hierarchy: %d accounts not stored, the warehouse cannot hold them (their orders are quarantined): %s",
            len(held), "; ".join(sorted(set(held.values()))[:20]),
        )
    return len(new) + len(changed), held


def held_back(
    accounts: Mapping[str, Mapping[str, Any]], rows: Mapping[str, Mapping[str, Any]], customers: sa.Table, config: ImportConfig
) -> dict[str, str]:
    """The accounts not to store, by Id, each with why: one whose customer row (``rows``) has a text
    longer than its column (PostgreSQL would refuse it, failing every run; SQLite would keep it),
    and every account below one (its customer would point at a parent that is not there). The
    reason names the nearest such Account and its field, never the value."""
    problems = {
        account_id: _overlong(row, customers, config, parent_known=accounts[account_id].get("ParentId") in accounts)
        for account_id, row in rows.items()
    }
    held = {}
    for account_id in accounts:
        current, seen = account_id, set()
        while current in accounts and current not in seen:  # up the chain (seen: never loop)
            if problems.get(current):
                held[account_id] = "; ".join(f"Account {current} {problem}" for problem in problems[current])
                break
            seen.add(current)
            current = accounts[current].get("ParentId")
    return held


def _overlong(row: Mapping[str, Any], customers: sa.Table, config: ImportConfig, *, parent_known: bool) -> list[str]:
    """The row's texts longer than their ``customers`` column, named by the Account field each is
    read from. The parent's customer id is the parent's own when the parent was read: its problem."""
    id_field = config.customer_id_field
    fields = {"customer_id": id_field, "parent_customer_id": f"Parent.{id_field}", **_ACCOUNT_FIELDS}
    return [
        f"{fields.get(name, f'customers.{name}')} is {len(value)} characters, more than the {length} allowed"
        for name, value in row.items()
        if isinstance(value, str)
        and (length := getattr(customers.c[name].type, "length", None)) is not None
        and len(value) > length
        and not (name == "parent_customer_id" and parent_known)
    ] + [
        # the customers' key: masked, Accounts whose ids end alike would be one customer
        f"{fields[name]} held a card number (masked to its last four digits)"
        for name in ("customer_id", "parent_customer_id")
        if isinstance(row.get(name), str)
        and MASKED_CARD.search(row[name])
        and not (name == "parent_customer_id" and parent_known)
    ]


# The Account field each of the other text columns of a customer is read from (the rest are ids,
# codes and hashes the import makes, always within their columns).
_ACCOUNT_FIELDS = {
    "name": "Name",
    "billing_street": "BillingStreet",
    "billing_city": "BillingCity",
    "billing_state": "BillingState",
    "billing_postal_code": "BillingPostalCode",
    "billing_country": "BillingCountry",
}
