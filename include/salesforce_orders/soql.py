"""SOQL for the import: select lists, windows and safely quoted literals.

Every value reaches a query through :func:`literal` (quoted and escaped) and every
name through :func:`field_name` (validated), so no configured or user-supplied text
is ever pasted into SOQL as it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from salesforce_orders.api_names import is_api_name

if TYPE_CHECKING:
    from salesforce_orders.config import ImportConfig

# Standard names the queries rely on, whatever objects the configuration names.
ACTIVATED = "Activated"
ITEM_ORDER_FIELD = "OrderId"
ITEM_ORDER_RELATIONSHIP = "Order"

# Backslash first, so the escapes added for the other characters are not doubled.
_ESCAPES = str.maketrans(
    {
        "\\": "\\\\",
        "'": "\\'",
        '"': '\\"',
        "\n": "\\n",
        "\r": "\\r",
        "\t": "\\t",
        "\b": "\\b",
        "\f": "\\f",
    }
)

CURRENCY_FIELD = "CurrencyIsoCode"  # only in an org with multi-currency
_ORDER_BASE_FIELDS = (
    "Id",
    "OrderNumber",
    "Status",
    "StatusCode",
    "Type",
    "EffectiveDate",
    "ActivatedDate",
    "TotalAmount",
    CURRENCY_FIELD,
    *(f"Billing{part}" for part in ("Street", "City", "State", "PostalCode", "Country")),
    *(f"Shipping{part}" for part in ("Street", "City", "State", "PostalCode", "Country")),
    "Description",
    "PoNumber",
    "CreatedDate",
    "LastModifiedDate",
    "SystemModstamp",
    "AccountId",
    "Account.Name",
    "Account.ParentId",
    "Account.Parent.Name",
    "EndDate",
    "ContractId",
    "OpportunityId",
    "OwnerId",
    "Owner.Name",
)
_ACCOUNT_BILLING_FIELDS = tuple(
    f"Account.Billing{part}" for part in ("Street", "City", "State", "PostalCode", "Country")
)
_ITEM_BASE_FIELDS = (
    "Id",
    ITEM_ORDER_FIELD,
    "Product2Id",
    "Product2.ProductCode",
    "Product2.Name",
    "Quantity",
    "UnitPrice",
    "TotalPrice",
    "ListPrice",
    "ServiceDate",
    "EndDate",
    "PricebookEntryId",
    "Product2.Family",
    "Product2.IsActive",
    "PricebookEntry.UnitPrice",
)
_STATUS_CHANGE_FIELDS = ("Id", "OrderNumber", "StatusCode", "IsDeleted", "SystemModstamp")


def field_name(name: str) -> str:
    """``name`` itself when it is an API name or a dotted relationship path; ValueError otherwise."""
    if not is_api_name(name, allow_path=True):
        raise ValueError(f"not a valid Salesforce API name or relationship path: {name!r}")
    return name


def object_name(name: str) -> str:
    """``name`` itself when it is a plain API name (an sObject or child relationship name)."""
    if not is_api_name(name):
        raise ValueError(f"not a valid Salesforce object name: {name!r}")
    return name


def quote_string(value: str) -> str:
    """A SOQL string literal: single-quoted, with every SOQL escape applied."""
    return "'" + value.translate(_ESCAPES) + "'"


def literal(value: Any) -> str:
    """The SOQL literal for a Python value; a list or tuple becomes an ``IN`` list."""
    # bool before int: True is an int in Python but ``true`` in SOQL.
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        return _number_literal(value)
    # datetime before date: a datetime is a date too.
    if isinstance(value, datetime):
        return datetime_literal(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        if not value:
            raise ValueError("an IN list needs at least one value")
        return "(" + ", ".join(literal(member) for member in value) + ")"
    raise ValueError(f"no SOQL literal for a value of type {type(value).__name__}")


def datetime_literal(value: datetime) -> str:
    """``2026-01-02T03:04:05Z``: an aware datetime in UTC, whole seconds."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"a SOQL dateTime needs a time zone; got the naive datetime {value.isoformat()}")
    return value.astimezone(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"  # (strftime's %Y does not pad years before 1000)


def stamp_literal(value: datetime) -> str:
    """An exact ``SystemModstamp`` bound: as :func:`datetime_literal`, with the milliseconds when
    the stamp has them (``...05.123Z``; an org keeping whole seconds gets whole seconds)."""
    text = datetime_literal(value)
    millis = value.microsecond // 1000
    return f"{text[:-1]}.{millis:03d}Z" if millis else text


def _number_literal(value: float | Decimal) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"no SOQL literal for {value!r}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ValueError(f"no SOQL literal for {value!r}")
    # Fixed-point: SOQL has no exponent notation (str(1e20) would be '1e+20').
    return format(Decimal(str(value)) if isinstance(value, float) else value, "f")


@dataclass(frozen=True)
class ExtractWindow:
    """Which Activated orders one extraction reads.

    ``activated_since`` (the lookback) always applies; on top of it either the
    ``SystemModstamp`` range, or just ``order_numbers``, or the manual ``since``.
    """

    changed_from: datetime | None  # SystemModstamp >= (inclusive)
    changed_to: datetime | None  # SystemModstamp < (exclusive)
    activated_since: datetime  # ActivatedDate >= (the lookback)
    order_numbers: tuple[str, ...] = ()  # re-sync just these (no changed_* bounds then)
    since: datetime | None = None  # (ActivatedDate >= since OR SystemModstamp >= since)
    account_ids: tuple[str, ...] = ()  # just the orders of these Accounts (no changed_* bounds then)
    order_ids: tuple[str, ...] = ()  # just these Order Ids (an event run; no changed_* bounds then)
    # The import's own earlier writes (``own_writes.OwnWrites``) that a window with changed_from
    # leaves out: orders whose only change since they were read is our write-back.
    own_writes: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        # Accept any sequence of numbers but keep the frozen window hashable.
        object.__setattr__(self, "order_numbers", tuple(self.order_numbers))
        object.__setattr__(self, "account_ids", tuple(self.account_ids))
        object.__setattr__(self, "order_ids", tuple(self.order_ids))
        object.__setattr__(self, "own_writes", tuple(self.own_writes))
        for name in ("changed_from", "changed_to", "activated_since", "since"):
            value = getattr(self, name)
            if value is not None and (value.tzinfo is None or value.utcoffset() is None):
                raise ValueError(f"ExtractWindow.{name} must be timezone-aware, got {value.isoformat()}")
        if (self.order_numbers or self.order_ids) and (self.changed_from or self.changed_to):
            raise ValueError(
                "ExtractWindow: order_numbers re-syncs exactly those orders; drop changed_from/changed_to"
            )
        if any(not isinstance(n, str) or not n.strip() for n in self.order_numbers):
            raise ValueError(
                f"ExtractWindow.order_numbers must be non-empty strings, got {self.order_numbers!r}"
            )
        if self.changed_from and self.changed_to and self.changed_from >= self.changed_to:
            raise ValueError(
                f"ExtractWindow: changed_from ({self.changed_from.isoformat()}) must be before "
                f"changed_to ({self.changed_to.isoformat()})"
            )


def _dedupe(names: Iterable[str], *, exclude: Iterable[str] = ()) -> list[str]:
    """Names in first-seen order without repeats (SOQL rejects a field selected twice)."""
    seen = {name.lower() for name in exclude}
    out = []
    for name in names:
        key = field_name(name).lower()
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def _without_card_fields(names: Iterable[str], config: ImportConfig) -> list[str]:
    # A path ending in a card field (``Order.Credit_Card_Number__c`` from an item) reads it too.
    card = config.never_selected_fields()
    return [name for name in names if name.rsplit(".", 1)[-1].lower() not in card]


def order_fields(config: ImportConfig, *, multi_currency: bool = True) -> list[str]:
    """The order select list: flat dotted names, deduplicated, never a card field.
    ``multi_currency=False``: the org has no ``CurrencyIsoCode`` to select (see extract)."""
    customer_id = field_name(config.customer_id_field)
    names = [
        *(name for name in _ORDER_BASE_FIELDS if multi_currency or name != CURRENCY_FIELD),
        f"Account.{customer_id}",
        f"Account.Parent.{customer_id}",
        *_ACCOUNT_BILLING_FIELDS,
        *(rule.field for rule in config.routing.rules),
        *config.order_field_mappings,
    ]
    return _without_card_fields(_dedupe(names), config)


def item_fields(config: ImportConfig) -> list[str]:
    """The order item select list: flat dotted names, deduplicated, never a card field."""
    names = [*_ITEM_BASE_FIELDS, config.service_number_field, *config.item_field_mappings]
    return _without_card_fields(_dedupe(names), config)


def _order_conditions(config: ImportConfig, window: ExtractWindow, *, path: str = "") -> list[str]:
    """The WHERE conditions selecting the window's orders, each on fields under ``path``."""

    def f(name: str) -> str:
        return field_name(path + name)

    conditions = [
        f"{f('StatusCode')} = {literal(ACTIVATED)}",
        f"{f('ActivatedDate')} >= {literal(window.activated_since)}",
    ]
    if window.order_numbers:
        conditions.append(f"{f('OrderNumber')} IN {literal(tuple(window.order_numbers))}")
    elif window.order_ids:
        conditions.append(f"{f('Id')} IN {literal(tuple(window.order_ids))}")
    elif window.account_ids:
        conditions.append(f"{f('AccountId')} IN {literal(tuple(window.account_ids))}")
    else:
        if window.since is not None:
            since = literal(window.since)
            conditions.append(f"({f('ActivatedDate')} >= {since} OR {f('SystemModstamp')} >= {since})")
        if window.changed_from is not None:
            conditions.append(f"{f('SystemModstamp')} >= {literal(window.changed_from)}")
        if window.changed_to is not None:
            conditions.append(f"{f('SystemModstamp')} < {literal(window.changed_to)}")
        if window.changed_from is not None and window.own_writes:
            conditions.append(_not_own_writes(window.own_writes, f))
    if config.filter_field is not None:
        conditions.append(f"{f(config.filter_field)} = {literal(config.filter_value)}")
    return conditions


def _not_own_writes(own_writes: Sequence[Any], f: Any) -> str:
    """Leave out orders whose last change is one of our own write-backs: last modified by the
    integration user inside a write-back's span. The orders a write-back found changed by someone
    else (``reread``) are read whatever their stamp says."""
    spans = [
        f"({f('LastModifiedById')} != {literal(w.user_id)} OR {f('SystemModstamp')} < {stamp_literal(w.start)} "
        f"OR {f('SystemModstamp')} >= {stamp_literal(w.end)})"
        for w in own_writes
    ]
    outside = spans[0] if len(spans) == 1 else "(" + " AND ".join(spans) + ")"
    reread = sorted({record_id for w in own_writes for record_id in w.reread})
    return f"({f('Id')} IN {literal(tuple(reread))} OR {outside})" if reread else outside


def build_own_writes_query(order_object: str, user_id: str, since: datetime) -> str:
    """Orders last modified by the integration user since ``since``: what a write-back just wrote."""
    conditions = [f"LastModifiedById = {literal(user_id)}", f"SystemModstamp >= {stamp_literal(since)}"]
    return _select(["Id", "SystemModstamp"], object_name(order_object), conditions)


def _select(fields: Sequence[str], sobject: str, conditions: Sequence[str], order_by: str = "") -> str:
    # Not SQL: SOQL from validated names (field_name) and quoted values (literal) only.
    query = f"SELECT {', '.join(fields)} FROM {object_name(sobject)}"  # noqa: S608
    if conditions:
        query += " WHERE " + " AND ".join(conditions)
    if order_by:
        query += f" ORDER BY {order_by}"
    return query


def build_orders_query(config: ImportConfig, window: ExtractWindow, *, multi_currency: bool = True) -> str:
    """REST query: the window's orders, oldest change first, each with its items as a subquery."""
    items = _select(item_fields(config), object_name(config.order_items_relationship), ())
    return _select(
        [*order_fields(config, multi_currency=multi_currency), f"({items})"],
        config.order_object,
        _order_conditions(config, window),
        order_by="SystemModstamp, Id",
    )


def build_orders_bulk_query(config: ImportConfig, window: ExtractWindow, *, multi_currency: bool = True) -> str:
    """Bulk API 2.0 query: the window's orders alone (Bulk 2.0 has no child subqueries).

    No ORDER BY: Bulk results are staged whole before anything reads them, and ordering
    would only slow the job down.
    """
    return _select(order_fields(config, multi_currency=multi_currency), config.order_object, _order_conditions(config, window))


def build_items_query(config: ImportConfig, window: ExtractWindow) -> str:
    """Bulk API 2.0 query: the items of the window's orders, selected through ``Order.*`` paths."""
    conditions = _order_conditions(config, window, path=f"{ITEM_ORDER_RELATIONSHIP}.")
    return _select(item_fields(config), config.order_item_object, conditions)


def build_count_query(config: ImportConfig, window: ExtractWindow) -> str:
    """``SELECT COUNT()`` of the window's orders (decides between REST and Bulk extraction)."""
    return _select(["COUNT()"], config.order_object, _order_conditions(config, window))


def build_status_changes_query(
    order_object: str, since: datetime, *, or_changed_by_others: tuple[str, datetime] | None = None, own_writes: Sequence[Any] = ()
) -> str:
    """For queryAll: orders changed since ``since`` that are no longer Activated or are deleted.

    ``or_changed_by_others`` (the integration user's id, when a write-back started): also the
    orders changed by anyone else, or by that user before then, in the same call (the write-back's
    check before sending, see own_writes.py); ``LastModifiedById`` tells them apart. Of that user's
    changes before then, those inside ``own_writes`` (the spans of our earlier write-backs, as the
    extract leaves them out) are ours, not looked for."""
    changed = f"StatusCode != {literal(ACTIVATED)} OR IsDeleted = {literal(True)}"
    fields = _STATUS_CHANGE_FIELDS
    if or_changed_by_others is not None:
        user_id, writes_from = or_changed_by_others
        before = f"SystemModstamp < {stamp_literal(writes_from)}"
        if own_writes:
            before = f"({before} AND {_not_own_writes(own_writes, field_name)})"
        changed += f" OR LastModifiedById != {literal(user_id)} OR {before}"
        fields = (*fields, "LastModifiedById")
    conditions = [f"SystemModstamp >= {literal(since)}", f"({changed})"]
    return _select(fields, order_object, conditions, order_by="SystemModstamp, Id")


def account_fields(config: ImportConfig) -> list[str]:
    """What the import keeps of an Account (its customer): as the order query reads it under ``Account.``."""
    return _dedupe(["Id", "Name", "ParentId", field_name(config.customer_id_field), *(f[len("Account."):] for f in _ACCOUNT_BILLING_FIELDS)])


def build_changed_accounts_query(config: ImportConfig, window: ExtractWindow) -> str:
    """Accounts changed in the window (their own SystemModstamp, the orders' bounds): a rename, a new
    parent, address or customer id reaches the warehouse without any of their orders changing."""
    start = window.changed_from or window.since
    if start is None:
        raise ValueError("changed accounts need a window with a start (changed_from or since)")
    conditions = [f"SystemModstamp >= {literal(start)}"]
    if window.changed_to is not None:
        conditions.append(f"SystemModstamp < {literal(window.changed_to)}")
    # (its stamp too: a change after the run that quarantined an order of it may be that order's fix)
    return _select(_dedupe([*account_fields(config), "SystemModstamp"]), "Account", conditions, order_by="Id")


# SOQL reaches five ``Parent.`` levels from the object queried: an Account and five of its ancestors a query.
ANCESTOR_LEVELS = 5


def build_ancestors_query(config: ImportConfig, account_ids: Sequence[str]) -> str:
    """These Accounts with their ancestors, five levels up (``Parent.Parent.…``), each with the
    fields a customer is made of; an ancestor still having a parent at the fifth level is read by
    the next query."""
    fields = account_fields(config)
    names = ["Parent." * level + name for level in range(ANCESTOR_LEVELS + 1) for name in fields]
    return _select(names, "Account", [f"Id IN {literal(tuple(account_ids))}"], order_by="Id")


def build_order_statuses_query() -> str:
    """The Order Status values with their category (StatusCode: Draft or Activated)."""
    return _select(["ApiName", "StatusCode"], "OrderStatus", [], order_by="SortOrder")


def build_currency_types_query() -> str:
    """The org's active currencies with their rate to the corporate currency."""
    return _select(["IsoCode", "ConversionRate", "IsCorporate"], "CurrencyType", ["IsActive = true"], order_by="IsoCode")


def build_organization_currency_query() -> str:
    """The org's own currency: that of every amount in an org without multi-currency."""
    return _select(["DefaultCurrencyIsoCode"], "Organization", [])


def build_order_currency_field_query() -> str:
    """Whether the org's Orders carry ``CurrencyIsoCode`` (multi-currency): refused with
    INVALID_FIELD in an org without it. One row at most."""
    return _select([CURRENCY_FIELD], "Order", []) + " LIMIT 1"


def build_dated_conversion_rates_query() -> str:
    """The rates by period (advanced currency management): a handful of rows per currency and quarter."""
    return _select(["IsoCode", "ConversionRate", "StartDate", "NextStartDate"], "DatedConversionRate", [], order_by="IsoCode, StartDate")


def build_accounts_with_field_query(field: str, since: datetime, *, not_written_by: tuple[str, datetime] | None = None) -> str:
    """Accounts changed since ``since`` whose ``field`` (the customer-id field) has a value.

    ``not_written_by`` (the integration user's id, when a write-back started): leave out the
    Accounts that user last changed since then, the write-back's own writes: a later batch's check
    would otherwise read back every customer id the earlier batches wrote."""
    name = field_name(field)
    conditions = [f"SystemModstamp >= {literal(since)}", f"{name} != null"]
    if not_written_by is not None:
        user_id, writes_from = not_written_by
        conditions.append(f"(LastModifiedById != {literal(user_id)} OR SystemModstamp < {stamp_literal(writes_from)})")
    return _select(["Id", name], "Account", conditions, order_by="Id")


# Salesforce's answers to a query that names something the org does not have (a field, an
# object, a relationship) or a reserved word where a name belongs.
QUERY_NAME_ERRORS = frozenset({"INVALID_FIELD", "INVALID_TYPE", "MALFORMED_QUERY"})
_CARET_LINE = re.compile(r"^ *\^$")
_PATH_AT_CARET = re.compile(r"[A-Za-z][A-Za-z0-9_.]*")
_QUOTED_NAME = re.compile(r"'([A-Za-z][A-Za-z0-9_.]*)'")


@dataclass(frozen=True)
class RefusedName:
    """What a query error points at, and which configuration keys put that name into the query."""

    reason: str  # Salesforce's reason, first sentence
    name: str | None
    keys: tuple[str, ...]


def refused_name(message: str, config: ImportConfig) -> RefusedName:
    """Read a query error's message (the query line, a caret under the culprit, then the reason:
    ``No such column 'X' on entity 'Order'``, ``unexpected token: 'Limit'``) for the culprit.

    The caret gives the whole path (``Account.Parent.X``); the reason's first quoted name is the
    fallback when a message has no caret line.
    """
    lines = message.split("\n")
    reason = next((line.strip() for line in reversed(lines) if line.strip()), message)
    pointed = None
    for above, line in zip(lines, lines[1:], strict=False):
        if _CARET_LINE.match(line) and (match := _PATH_AT_CARET.match(above, line.index("^"))):
            pointed = match.group().rstrip(".")
    quoted = match.group(1) if (match := _QUOTED_NAME.search(reason)) else None
    first_sentence = reason.split(". ")[0].rstrip(".") + "."
    return RefusedName(first_sentence, pointed or quoted, _keys_naming(config.query_names(), pointed, quoted))


def _keys_naming(names: list[tuple[str, str]], pointed: str | None, quoted: str | None) -> tuple[str, ...]:
    """The keys whose name is the pointed path; else whose name it ends with (a field the query
    reaches through a relationship, ``Account.<customer_id_field>``); else that have the quoted
    name as a segment."""
    tiers = []
    if pointed:
        path = pointed.lower()
        tiers += [lambda name: name == path, lambda name: path.endswith("." + name)]
    if quoted:
        tiers.append(lambda name: quoted.lower() in name.split("."))
    for matches in tiers:
        keys = tuple(key for key, name in names if matches(name.lower()))
        if keys:
            return keys
    return ()


__all__ = [
    "QUERY_NAME_ERRORS",
    "ExtractWindow",
    "RefusedName",
    "build_count_query",
    "build_items_query",
    "build_orders_bulk_query",
    "build_orders_query",
    "account_fields",
    "build_accounts_with_field_query",
    "build_changed_accounts_query",
    "build_own_writes_query",
    "build_order_statuses_query",
    "build_status_changes_query",
    "datetime_literal",
    "field_name",
    "item_fields",
    "literal",
    "object_name",
    "order_fields",
    "quote_string",
    "refused_name",
    "stamp_literal",
]
