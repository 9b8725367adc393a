"""Staged Salesforce rows -> the records the load writes. Pure functions, no I/O.

Rows reaching this module have passed validation, but a value may still be missing
or blank: every rule treats None, "" and whitespace alike and never raises on them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, NamedTuple

import msgspec

from salesforce_orders import amounts
from salesforce_orders.api_names import id_suffix
from salesforce_orders.config import ImportConfig, RoutingRule
from salesforce_orders.countries import resolve_country_code
from salesforce_orders.currencies import CurrencyRates
from salesforce_orders.model import (
    CARD_DATA_MASKED,
    Address,
    CustomerRecord,
    FieldReader,
    ItemRecord,
    LocationRecord,
    OrderRecord,
    ServiceRecord,
    SkippedOrder,
    StagedItem,
    StagedOrder,
    TransformedOrder,
    WriteBack,
    as_written,
    matched,
    plain,
    record_maker,
    storable,
)

SHIPPING = "shipping"
BILLING = "billing"
FROM_SALESFORCE = "salesforce"
ASSIGNED = "assigned"
ZERO_TOTAL = "zero total"
# The write-back layer resizes the mask to each card field's length in the org.
CARD_MASK = "X" * 16
# Assigned customer ids use the case-sensitive 15-character form of the Account id,
# so the 15- and 18-character forms of one Account give the same id.
_ACCOUNT_ID_LENGTH = 15
_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country")
# What our own write-back changes, and the link that depends on the connection's host: not content.
# Left out of the content hash so our write-back's echo is a no-op. (The card-data flag follows
# from the masked text, which the hash covers.)
_ORDER_NOT_HASHED = frozenset({"status", "sf_system_modstamp", "salesforce_url", "card_data_masked"})
_CUSTOMER_ECHO_FIELDS = frozenset({"customer_id_source"})
_SINGLE_CURRENCY = CurrencyRates()
# How many of a run's Accounts the transform remembers what it made of (customers, their addresses
# and locations, and the hash's text of them): an Account's orders are spread over the run (ordered
# by order id), so the orders of some 16k Accounts (a run of 100k orders has 25k in the benchmark's
# org) find theirs made. Some 2 KB an Account: 32 MB at most.
_ACCOUNTS_REMEMBERED = 16384


def transform_order(
    order: StagedOrder,
    items: list[StagedItem],
    config: ImportConfig,
    *,
    instance_url: str,
    rates: CurrencyRates | None = None,
) -> TransformedOrder | SkippedOrder:
    """One staged order and its items -> what the load writes, or why it is skipped.

    ``rates``: the org's currency rates (None: a single-currency org, amounts already corporate)."""
    plan = _plan(config)
    values = plan.order(order)
    (
        order_id, order_number, modstamp, _, currency, account_id, _, created_at, status, status_code, order_type,
        effective_date, description, po_number, end_date, contract_id, opportunity_id, owner_id,
        account_name, owner_name,
        billing_street, billing_city, billing_state, billing_postal_code, billing_country,
        shipping_street, shipping_city, shipping_state, shipping_postal_code, shipping_country,
        account_street, account_city, account_state, account_postal_code, account_country,
        account_customer_id, parent_account_id, parent_customer_id, parent_name,
    ) = _texts(values[:_RULE_VALUES])
    order_id = order_id or ""
    item_values = plan.item.many(items)
    total = amounts.exact(values[_TOTAL])
    zero_total = _is_zero_total(total, [values[_ITEM_TOTAL] for values in item_values])
    if zero_total and config.zero_total_policy == "skip":
        return SkippedOrder(
            sf_order_id=order_id,
            order_number=order_number,
            reason=ZERO_TOTAL,
            sf_system_modstamp=modstamp,
            account_name=account_name,
            total_amount=total,
            currency=currency,
        )

    warnings: list[str] = []
    billing = _address(billing_street, billing_city, billing_state, billing_postal_code, billing_country)
    shipping = _address(shipping_street, shipping_city, shipping_state, shipping_postal_code, shipping_country)
    service, service_source = (shipping, SHIPPING) if not shipping.is_empty() else (billing, BILLING)
    checked = (
        (("billing", billing), ("service", service))
        if service_source == SHIPPING
        else (("billing", billing),)
    )
    for label, address in checked:
        if address.country and not address.country_code:
            warnings.append(f"{label} country {address.country!r} is not a recognised country")
    customer, parent_customer = plan.customer(
        (
            account_id or "",
            account_name,
            account_customer_id,
            parent_account_id,
            parent_customer_id,
            parent_name,
            account_street,
            account_city,
            account_state,
            account_postal_code,
            account_country,
            billing_street,
            billing_city,
            billing_state,
            billing_postal_code,
            billing_country,
        ),
        billing,
    )
    if not customer.sf_account_id:
        warnings.append("order has no AccountId")
    location = plan.location(customer, service)
    location_key = location.location_id if location else None
    item_records, services = plan.service_groups(order_id, items, item_values, location_key)
    activated_at, activated_ok = _iso_utc(values[_ACTIVATED])
    created_at, _ = _iso_utc_text(created_at)
    modstamp, _ = _iso_utc_text(modstamp)
    if not activated_ok:
        warnings.append(f"ActivatedDate {values[_ACTIVATED]!r} is not a date and time")
    converted = (rates or _SINGLE_CURRENCY).convert(total, currency, effective_date)
    if converted is None and currency is not None:
        warnings.append(f"CurrencyIsoCode {currency!r} has no conversion rate in the org: corporate_amount left empty")
    rules_end = _RULE_VALUES + len(plan.rules)
    record = _make_order(
        order_id,
        order_number or "",
        _external_name(config.order_prefix, order_number, account_name),
        salesforce_url(instance_url, order_id),
        customer.customer_id,
        customer.sf_account_id,
        customer.name,
        status,
        status_code,
        order_type,
        effective_date,
        activated_at,
        total,
        currency,
        billing,
        service,
        service_source,
        location_key,
        _route(plan.rules, values[_RULE_VALUES:rules_end], config.routing.default_destination),
        description if config.import_notes else None,
        po_number,
        _metadata(plan.order_metadata_keys, values[rules_end:]),
        zero_total,
        created_at,
        modstamp,
        _card_data_masked(order.get(CARD_DATA_MASKED), items, config.order_item_object),
        converted.corporate_currency if converted else None,
        converted.rate if converted else None,
        converted.amount if converted else None,
        end_date,
        contract_id,
        opportunity_id,
        owner_id,
        owner_name,
    )
    return _make_transformed(
        record,
        item_records,
        services,
        customer,
        parent_customer,
        location,
        _write_backs(plan, order_id, status, values[_ACCOUNT_CUSTOMER_ID], customer),
        content_hash(record, item_records, services, customer, parent_customer, location),
        tuple(warnings),
    )


# What transform_order reads of a staged order, in this order (plan.order): fields looked up as
# written, then fields matched as Salesforce matches names (the config's after these).
_ORDER_FIELDS = (
    "Id", "OrderNumber", "SystemModstamp", "TotalAmount", "CurrencyIsoCode", "AccountId", "ActivatedDate",
    "CreatedDate", "Status", "StatusCode", "Type", "EffectiveDate", "Description", "PoNumber", "EndDate",
    "ContractId", "OpportunityId", "OwnerId",
)
_ORDER_MATCHED = (
    "Account.Name",
    "Owner.Name",
    *("Billing" + part for part in _ADDRESS_PARTS),
    *("Shipping" + part for part in _ADDRESS_PARTS),
    *("Account.Billing" + part for part in _ADDRESS_PARTS),
)
# then Account.<customer id field>, Account.ParentId, Account.Parent.<customer id field> and
# Account.Parent.Name; then the routing rules' fields and the order mappings' fields. Positions:
_TOTAL, _ACTIVATED = 3, 6
_ACCOUNT_CUSTOMER_ID = len(_ORDER_FIELDS) + len(_ORDER_MATCHED)
_RULE_VALUES = _ACCOUNT_CUSTOMER_ID + 4
# ... and of each item (plan.item)
# (the text fields first, then the service number, then the rest: positions below)
_ITEM_FIELDS = ("Id", "OrderId", "ServiceDate", "EndDate", "Product2Id", "PricebookEntryId")
_ITEM_MATCHED_TEXTS = ("Product2.ProductCode", "Product2.Name", "Product2.Family")
_ITEM_AMOUNTS = ("Quantity", "UnitPrice", "TotalPrice", "ListPrice")
_ITEM_MATCHED = ("Product2.IsActive", "PricebookEntry.UnitPrice")
_ITEM_TEXTS = len(_ITEM_FIELDS) + len(_ITEM_MATCHED_TEXTS) + 1  # with the service number
_ITEM_QUANTITY, _ITEM_UNIT_PRICE, _ITEM_TOTAL, _ITEM_LIST_PRICE = range(_ITEM_TEXTS, _ITEM_TEXTS + 4)
_ITEM_ACTIVE, _ITEM_PRICEBOOK_PRICE = _ITEM_TEXTS + 4, _ITEM_TEXTS + 5
_ITEM_MAPPED = _ITEM_TEXTS + 6


class _Plan:
    """How transform_order reads staged records under one config, and the customers it has made
    (a run's orders repeat their Accounts: one customer record serves all of an Account's orders)."""

    # remembered at most (as the caches here); then forgotten and made again
    _CUSTOMERS = _ACCOUNTS_REMEMBERED

    def __init__(self, config: ImportConfig):
        self.config = config
        id_field = config.customer_id_field
        self.rules = config.routing.rules
        self.order_metadata_keys = tuple(config.order_field_mappings.values())
        self.order = FieldReader(
            [
                *as_written(*_ORDER_FIELDS),
                *matched(
                    *_ORDER_MATCHED,
                    f"Account.{id_field}",
                    "Account.ParentId",
                    f"Account.Parent.{id_field}",
                    "Account.Parent.Name",
                    *(rule.field for rule in self.rules),
                    *config.order_field_mappings,
                ),
            ]
        )
        self.item_metadata_keys = tuple(config.item_field_mappings.values())
        self.item = FieldReader(
            [
                *as_written(*_ITEM_FIELDS),
                *matched(*_ITEM_MATCHED_TEXTS, config.service_number_field),
                *as_written(*_ITEM_AMOUNTS),
                *matched(*_ITEM_MATCHED, *config.item_field_mappings),
            ]
        )
        self.imported_status = _fold(config.imported_status)
        # by whether the order's Status is the imported status already
        self.order_updates = {
            marked: _order_updates(config, marked_imported=marked) for marked in (False, True)
        }
        self._customers: dict[tuple[Any, ...], tuple[CustomerRecord, CustomerRecord | None]] = {}
        self._locations: dict[tuple[int, int], tuple[CustomerRecord, Address, LocationRecord | None]] = {}

    def customer(self, texts: tuple[str | None, ...], billing: Address) -> tuple[CustomerRecord, CustomerRecord | None]:
        """_customer of these texts (the Account's, then the order's billing address, which is
        ``billing``), made once."""
        made = self._customers.get(texts)
        if made is None:
            if len(self._customers) >= self._CUSTOMERS:
                self._customers.clear()
            made = self._customers[texts] = _customer(self.config, *texts[:11], billing)
        return made

    def location(self, customer: CustomerRecord, service: Address) -> LocationRecord | None:
        """location_for, made once for a customer and address (both made once: known by identity;
        the records are kept, so no other record takes their ids)."""
        key = (id(customer), id(service))
        made = self._locations.get(key)
        if made is None:
            if len(self._locations) >= self._CUSTOMERS:
                self._locations.clear()
            made = self._locations[key] = (customer, service, location_for(customer, service))
        return made[2]

    def service_groups(
        self, order_id: str, items: Sequence[StagedItem], item_values: list[tuple[Any, ...]], location_id: str | None
    ) -> tuple[tuple[ItemRecord, ...], tuple[ServiceRecord, ...]]:
        """Items (ordered by Id) and their services: one per service number, or per lone item."""
        exact, metadata_keys, texts_end = amounts.exact, self.item_metadata_keys, _ITEM_TEXTS
        records = []
        members: dict[str, list[ItemRecord]] = {}
        by_id = sorted([(_text(values[0]) or "", values) for values in item_values], key=itemgetter(0))
        for item_id, values in by_id:
            (
                item_order_id, service_date, end_date, product_id, pricebook_entry_id, code, name, family, service_number,
            ) = _texts(values[1:texts_end])
            key = f"{order_id}:{service_number}" if service_number else f"{order_id}:item:{item_id}"
            record = _make_item(
                item_id,
                item_order_id or order_id,
                code,
                name,
                exact(values[_ITEM_QUANTITY]),
                exact(values[_ITEM_UNIT_PRICE]),
                exact(values[_ITEM_TOTAL]),
                service_number,
                key,
                _metadata(metadata_keys, values[_ITEM_MAPPED:]) if metadata_keys else {},
                exact(values[_ITEM_LIST_PRICE]),
                service_date,
                end_date,
                product_id,
                pricebook_entry_id,
                family,
                _flag(values[_ITEM_ACTIVE]),
                exact(values[_ITEM_PRICEBOOK_PRICE]),
            )
            records.append(record)
            group = members.get(key)
            if group is None:
                members[key] = [record]
            else:
                group.append(record)
        services = tuple(
            [
                _make_service(
                    key,
                    order_id,
                    group[0].service_number,
                    len(group),
                    amounts.total([item.total_price for item in group]),
                    location_id,
                )
                for key, group in sorted(members.items())
            ]
        )
        return tuple(records), services


_PLANS: dict[int, tuple[ImportConfig, _Plan]] = {}


def _plan(config: ImportConfig) -> _Plan:
    """The plan of this config (configs are immutable), made once."""
    known = _PLANS.get(id(config))
    if known is not None and known[0] is config:
        return known[1]
    if len(_PLANS) >= 8:
        _PLANS.clear()
    plan = _Plan(config)
    _PLANS[id(config)] = (config, plan)
    return plan


_make_order = record_maker(OrderRecord)
_make_item = record_maker(ItemRecord)
_make_service = record_maker(ServiceRecord)
_make_customer = record_maker(CustomerRecord)
_make_location = record_maker(LocationRecord)
_make_transformed = record_maker(TransformedOrder)
_make_write_back = record_maker(WriteBack)


# --- naming -------------------------------------------------------------------------


def external_name(order: StagedOrder, config: ImportConfig) -> str:
    """``"<prefix><OrderNumber> <Account.Name>"``; just the number when the Account has no name."""
    return _external_name(config.order_prefix, order.get("OrderNumber"), _text(_get(order, "Account.Name")))


def _external_name(prefix: str, order_number: Any, account_name: str | None) -> str:
    number = f"{prefix}{_text(order_number) or ''}"
    return f"{number} {account_name}".strip() if account_name else number.strip()


def salesforce_url(instance_url: str, order_id: str) -> str:
    """The order's Lightning page."""
    return f"{instance_url.rstrip('/')}/lightning/r/Order/{order_id}/view"


# --- addresses ----------------------------------------------------------------------


def address_from(record: Mapping[str, Any], prefix: str) -> Address:
    """The address in ``<prefix>Street`` ... ``<prefix>Country``, trimmed, blanks as None."""
    return _address(*[_text(_get(record, prefix + part)) for part in _ADDRESS_PARTS])


def service_address_of(values: Sequence[Any]) -> tuple[Address, str]:
    """service_address from the values of ShippingStreet ... ShippingCountry, then BillingStreet ...
    BillingCountry, as read (model.SERVICE_ADDRESS_FIELDS)."""
    texts = _texts(values)
    shipping = _address(*texts[:5])
    if not shipping.is_empty():
        return shipping, SHIPPING
    return _address(*texts[5:]), BILLING



# Addresses repeat: an order's billing address is usually its Account's, and a customer's orders
# share theirs. Records are immutable, so orders can share one Address.
@lru_cache(maxsize=_ACCOUNTS_REMEMBERED)
def _address(
    street: str | None, city: str | None, state: str | None, postal_code: str | None, country: str | None
) -> Address:
    return Address(
        street=street,
        city=city,
        state=state,
        postal_code=postal_code,
        country=country,
        country_code=resolve_country_code(country),
    )


def billing_address(order: StagedOrder) -> Address:
    return address_from(order, "Billing")


def service_address(order: StagedOrder, billing: Address | None = None) -> tuple[Address, str]:
    """The shipping address, or the billing address when no shipping field is set; and which.

    ``billing``: the order's billing address, when the caller has it already.
    """
    shipping = address_from(order, "Shipping")
    if not shipping.is_empty():
        return shipping, SHIPPING
    return billing or billing_address(order), BILLING


# --- customers and locations ---------------------------------------------------------


@lru_cache(maxsize=_ACCOUNTS_REMEMBERED)  # a run's orders repeat their Accounts
def case_safe_id(record_id: str) -> str:
    """The 18-character form of a Salesforce id (its suffix encodes the case of the first 15).

    15-character ids differ only by case, and text fields (such as a unique customer-id field)
    compare case-insensitively in Salesforce: only the 18-character form is safe there.
    """
    base = record_id[:_ACCOUNT_ID_LENGTH]
    if len(base) < _ACCOUNT_ID_LENGTH:
        return record_id
    return base + id_suffix(base)


def assigned_customer_id(account_id: str, config: ImportConfig) -> str:
    """The id we give an Account that has none: deterministic, so a retry never makes a second.

    Built from the case-safe 18-character Account id: two Accounts whose 15-character ids differ
    only by case must not get ids that Salesforce's case-insensitive unique field sees as equal.
    """
    return f"{config.assigned_customer_id_prefix}{case_safe_id(account_id)}"


def _customer_id(value: str | None, account_id: str, config: ImportConfig) -> tuple[str, str]:
    if value:
        return value, FROM_SALESFORCE
    return assigned_customer_id(account_id, config), ASSIGNED


def customer_for(
    order: StagedOrder, config: ImportConfig, billing: Address | None = None
) -> tuple[CustomerRecord, CustomerRecord | None]:
    """The order's Account as a customer, and its parent Account (with what the order tells of it).

    ``billing``: the order's billing address, when the caller has it already.
    """
    id_field = config.customer_id_field
    return _customer(
        config,
        _text(order.get("AccountId")) or "",
        _text(_get(order, "Account.Name")),
        *[_text(_get(order, name)) for name in (f"Account.{id_field}", "Account.ParentId", f"Account.Parent.{id_field}", "Account.Parent.Name")],
        *[_text(_get(order, "Account.Billing" + part)) for part in _ADDRESS_PARTS],
        billing or billing_address(order),
    )


def _customer(
    config: ImportConfig,
    account_id: str,
    name: str | None,
    customer_id: str | None,
    parent_account_id: str | None,
    parent_customer_id: str | None,
    parent_name: str | None,
    street: str | None,
    city: str | None,
    state: str | None,
    postal_code: str | None,
    country: str | None,
    billing: Address,
) -> tuple[CustomerRecord, CustomerRecord | None]:
    """customer_for from the order's values, as text: the Account's, its parent's, the Account's
    own billing address (street ... country); and the order's billing address."""
    customer_id, source = _customer_id(customer_id, account_id, config)
    parent = None
    if parent_account_id:
        parent_id, parent_source = _customer_id(parent_customer_id, parent_account_id, config)
        parent = _make_customer(
            parent_id,
            parent_account_id,
            parent_name,
            None,  # the parent's parent is not selected: unknown here, not "no parent"
            None,
            parent_source,
            _NO_ADDRESS,
        )
    account_billing = _address(street, city, state, postal_code, country)
    customer = _make_customer(
        customer_id,
        account_id,
        name,
        parent_account_id,
        parent.customer_id if parent else None,
        source,
        billing if account_billing.is_empty() else account_billing,
    )
    return customer, parent


_NO_ADDRESS = Address()


def customer_changes(account: Mapping[str, Any], stored: Mapping[str, Any], config: ImportConfig) -> list[str]:
    """What differs between an Account as Salesforce has it now and its stored customer row: the
    fields a customer is made of (name, parent, customer id, the Account's own billing address).
    Our own write-back of the customer id is no change: the effective id stays the same."""
    as_order = {"AccountId": account.get("Id"), **{f"Account.{k}": v for k, v in account.items() if k != "attributes"}}
    customer, _ = customer_for(as_order, config)
    changes = []
    if customer.name != stored.get("name"):
        changes.append("Name")
    if customer.parent_sf_account_id != stored.get("parent_sf_account_id"):
        changes.append("ParentId")
    if customer.customer_id != stored.get("customer_id"):
        changes.append(config.customer_id_field)
    billing = address_from(as_order, "Account.Billing")
    if not billing.is_empty() and any(value != stored.get(f"billing_{part}") for part, value in vars(billing).items()):
        changes.append("Billing address")
    return changes


def _normalised_address(address: Address) -> str:
    # The country code when known, so "USA" and "United States" are one location.
    parts = (
        address.street,
        address.city,
        address.state,
        address.postal_code,
        address.country_code or address.country,
    )
    return "|".join(" ".join((part or "").casefold().split()) for part in parts)


@lru_cache(maxsize=_ACCOUNTS_REMEMBERED)  # a customer's orders repeat their locations
def location_id(customer_id: str, address: Address) -> str:
    """A stable id for one customer's address, insensitive to case and spacing."""
    digest = hashlib.sha1(f"{customer_id}|{_normalised_address(address)}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:16]


def location_for(customer: CustomerRecord, service: Address) -> LocationRecord | None:
    """The service address as the customer's location; None when there is no address."""
    if service.is_empty():
        return None
    return _make_location(location_id(customer.customer_id, service), customer.customer_id, customer.sf_account_id, service)


# --- items and services --------------------------------------------------------------


def service_groups(
    order_id: str, items: Sequence[StagedItem], config: ImportConfig, *, location_id: str | None = None
) -> tuple[tuple[ItemRecord, ...], tuple[ServiceRecord, ...]]:
    """Items (ordered by Id) and their services: one per service number, or per lone item."""
    plan = _plan(config)
    return plan.service_groups(order_id, items, plan.item.many(items), location_id)


def is_zero_total(order: StagedOrder, items: Sequence[StagedItem]) -> bool:
    """TotalAmount is 0, or the order's items add up to 0."""
    return _is_zero_total(amounts.exact(order.get("TotalAmount")), [item.get("TotalPrice") for item in items])


def _is_zero_total(total: Decimal | None, item_totals: list[Any]) -> bool:
    if total == 0:
        return True
    return bool(item_totals) and amounts.total([amounts.exact(value) for value in item_totals]) == 0


# --- routing, metadata, notes --------------------------------------------------------


def route(order: StagedOrder, config: ImportConfig) -> str:
    """The first matching rule's destination, else the default destination."""
    rules = config.routing.rules
    return _route(rules, [_get(order, rule.field) for rule in rules], config.routing.default_destination)


def _route(rules: Sequence[RoutingRule], values: Sequence[Any], default: str) -> str:
    if not rules:  # (no rules, the default config: spares the zip)
        return default
    for rule, value in zip(rules, values, strict=True):
        if rule_matches(rule, value):
            return rule.destination
    return default


def rule_matches(rule: RoutingRule, actual: Any) -> bool:
    """Whether a field's value satisfies a rule; text compares case-insensitively, like SOQL."""
    if rule.operator == "is_null":
        return _text(actual) is None
    if rule.operator == "not_null":
        return _text(actual) is not None
    if _text(actual) is None:
        return False
    if rule.operator == "equals":
        return _same(actual, rule.value)
    if rule.operator == "in":
        return any(_same(actual, expected) for expected in rule.value)
    text, needle = _fold(actual), _fold(rule.value)
    if rule.operator == "contains":
        return needle in text
    return text.startswith(needle)  # starts_with


def _metadata(keys: tuple[str, ...], values: Sequence[Any]) -> dict[str, Any]:
    """The mapped fields' values (as read, but :func:`storable`) by their metadata keys; none
    mapped, the usual case, at once."""
    return dict(zip(keys, map(storable, values), strict=True)) if keys else {}


def map_fields(record: Mapping[str, Any], mappings: Mapping[str, str]) -> dict[str, Any]:
    """``{metadata key: value}`` for each configured ``Salesforce field -> metadata key``."""
    return {key: _get(record, sf_field) for sf_field, key in mappings.items()}


def order_notes(order: StagedOrder, config: ImportConfig) -> str | None:
    """The order's Description as notes, when notes are imported."""
    return _text(order.get("Description")) if config.import_notes else None


def card_data_masked_fields(order: StagedOrder, items: Sequence[StagedItem], item_object: str = "OrderItem") -> tuple[str, ...]:
    """The fields of the order and its items whose card numbers were masked when extracted."""
    return _card_data_masked(order.get(CARD_DATA_MASKED), items, item_object)


def _card_data_masked(order_fields: Any, items: Sequence[StagedItem], item_object: str) -> tuple[str, ...]:
    fields = list(order_fields or ())
    for item in items:
        fields += [f"{item_object} {item.get('Id')}.{name}" for name in item.get(CARD_DATA_MASKED) or ()]
    return tuple(fields)


# --- write-back and change detection ---------------------------------------------------


def write_backs_for(
    order: StagedOrder, customer: CustomerRecord, config: ImportConfig
) -> tuple[WriteBack, ...]:
    """The enabled updates for Salesforce: one for the Order (status, card mask), one for the Account."""
    return _write_backs(
        _plan(config),
        _text(order.get("Id")) or "",
        order.get("Status"),
        _get(order, f"Account.{config.customer_id_field}"),
        customer,
    )


def _write_backs(
    plan: _Plan, order_id: str, status: Any, account_customer_id: Any, customer: CustomerRecord
) -> tuple[WriteBack, ...]:
    config = plan.config
    fields, action = plan.order_updates[_fold(status) == plan.imported_status]
    write_backs = []
    if fields and order_id:
        write_backs.append(_make_write_back(config.order_object, order_id, dict(fields), order_id, action))
    if (
        config.write_back.set_customer_id
        and customer.sf_account_id
        and account_customer_id != customer.customer_id
    ):
        write_backs.append(
            _make_write_back(
                "Account",
                customer.sf_account_id,
                {config.customer_id_field: customer.customer_id},
                order_id,
                "set_customer_id",
            )
        )
    return tuple(write_backs)


def _order_updates(config: ImportConfig, *, marked_imported: bool) -> tuple[dict[str, Any], str]:
    """What the Order's write-back sets, and its action: for an order whose Status is already the
    imported status or not (the only thing that differs between orders)."""
    enabled = config.write_back
    fields: dict[str, Any] = {}
    actions = []
    if enabled.mark_imported and not marked_imported:
        fields["Status"] = config.imported_status
        actions.append("mark_imported")
    if enabled.x_out_card_fields and config.card_fields:
        fields.update(dict.fromkeys(config.card_fields, CARD_MASK))
        actions.append("x_out_card")
    return fields, "+".join(actions)


def content_hash(
    order: OrderRecord,
    items: Iterable[ItemRecord],
    services: Iterable[ServiceRecord],
    customer: CustomerRecord,
    parent_customer: CustomerRecord | None,
    location: LocationRecord | None,
) -> str:
    """sha256 of the business content, without what our own write-back changes.

    The order's Status and SystemModstamp and the customer id's source are left out,
    so re-extracting an order after our write-back gives the same hash. (LastModifiedDate
    is never part of the records.)
    """
    items, services = tuple(items), tuple(services)  # read twice when the text is written directly
    try:
        data = _HASH_ENCODER.encode(
            {  # keys in sorted order
                "customer": _written_customer(customer),
                "items": [_ITEM_HASHED(item) for item in items],
                # (as a struct: a location seldom repeats across orders, its service address being the
                # order's shipping address, and a struct costs less than writing it once and looking it up)
                "location": _LOCATION_HASHED(location) if location else None,
                "order": _ORDER_HASHED(order),
                "parent_customer": _written_customer(parent_customer) if parent_customer else None,
                "services": [_SERVICE_HASHED(service) for service in services],
            }
        )
    except _NotPlain:  # a value written otherwise by json.dumps (see below): the text written directly
        text = _json_object(
            {
                "order": _json_record(order, _ORDER_JSON),
                "items": _json_array(items, _ITEM_JSON),
                "services": _json_array(services, _SERVICE_JSON),
                "customer": _json_record(customer, _CUSTOMER_JSON),
                "parent_customer": _json_record(parent_customer, _CUSTOMER_JSON) if parent_customer else "null",
                "location": _json_record(location, _LOCATION_JSON) if location else "null",
            }
        )
        data = text.encode()
    return hashlib.sha256(data).hexdigest()


# --- the content hash's text -------------------------------------------------------------
# Stored hashes depend on the exact bytes hashed: json.dumps(content, sort_keys=True,
# separators=(",", ":"), ensure_ascii=False, default=str), content being the dict above with
# plain() of each record, less the echo fields. Building those dicts and dumping them was some 40%
# of the transform, so the same text is written directly: each record class has a template with
# its keys in sorted order, filled with its values as json.dumps writes them. test_transform pins
# hashes and compares the text with json.dumps.

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class _JsonLayout(NamedTuple):
    values: itemgetter  # a record's __dict__ -> its values in sorted field order
    template: str  # '{"city":%s,"country":%s,...}'


def _json_layout(cls: type, without: frozenset[str] = frozenset()) -> _JsonLayout:
    """How to write a record class, less the fields in ``without``."""
    names = sorted(field.name for field in fields(cls) if field.name not in without)
    template = "{" + ",".join(encode_basestring(name) + ":%s" for name in names) + "}"
    return _JsonLayout(itemgetter(*names), template)  # several names: the values come as a tuple


_ADDRESS_JSON = _json_layout(Address)
_ORDER_JSON = _json_layout(OrderRecord, _ORDER_NOT_HASHED)
_ITEM_JSON = _json_layout(ItemRecord)
_SERVICE_JSON = _json_layout(ServiceRecord)
_CUSTOMER_JSON = _json_layout(CustomerRecord, _CUSTOMER_ECHO_FIELDS)
_LOCATION_JSON = _json_layout(LocationRecord)


@lru_cache(maxsize=_ACCOUNTS_REMEMBERED)  # addresses repeat (see _address)
def _json_address(address: Address) -> str:
    return _json_record(address, _ADDRESS_JSON)


def _json_record(record: Any, layout: _JsonLayout) -> str:
    return layout.template % _json_values(layout.values(record.__dict__))


def _json_array(records: Iterable[Any], layout: _JsonLayout) -> str:
    return "[" + ",".join([_json_record(record, layout) for record in records]) + "]"


def _json_object(members: Mapping[str, str]) -> str:
    """An object from its keys and already written values, keys in sorted order."""
    return "{" + ",".join([encode_basestring(key) + ":" + members[key] for key in sorted(members)]) + "}"


def _json_values(values: Iterable[Any]) -> tuple[str, ...]:
    # Text and None, most of the values, are written here: a call per value costs more than that.
    return tuple(
        [
            encode_basestring(value) if type(value) is str else "null" if value is None else _json(value)
            for value in values
        ]
    )


def _json(value: Any) -> str:
    """A value as json.dumps writes it inside plain() of a record."""
    if value is None:
        return "null"
    if value is True or value is False:
        return "true" if value else "false"
    if (type(value) is float and math.isfinite(value)) or type(value) is int:
        return repr(value)  # as the encoder writes them
    if type(value) is Decimal:
        return amounts.as_hashed(value)
    if type(value) is Address:
        return _json_address(value)
    if type(value) is dict:  # metadata
        if not value:
            return "{}"
        if all(type(key) is str for key in value):
            return _json_object(dict(zip(value, _json_values(value.values()), strict=True)))
    return _ENCODER.encode(plain(value))  # anything else (text too): the encoder itself


# The usual content is text, None, booleans, whole numbers, amounts and addresses, and metadata of
# those. msgspec writes text, None, booleans and ints as json.dumps does (text escaped alike: every
# character checked), and dicts in their keys' order. So each record is handed to it as a dict with
# its keys in sorted order, amounts already written as _json writes them (msgspec.Raw), addresses
# and customers written once (they repeat). Anything else (a float, a list or a dict in metadata, a
# key that is not text) raises _NotPlain and the whole text is written by the functions above.
# test_transform compares both with the hash's definition.


class _NotPlain(Exception):
    """A value msgspec might write otherwise than json.dumps."""


def _not_plain(value: Any) -> Any:
    raise _NotPlain(type(value).__name__)


_HASH_ENCODER = msgspec.json.Encoder(enc_hook=_not_plain)
# Amounts repeat (prices, quantities): their written form, by the Decimal's text, which decides it
# (as_hashed reads nothing else). Not by value: a Decimal parsed from staging computes its hash the
# first time it is asked (some 0.4 µs, several times what its text costs), and equal values can be
# written differently (0 and -0; 2 and 2.0 happen to agree, zeros do not).
_WRITTEN_AMOUNTS: dict[str, msgspec.Raw] = {}
_WRITTEN_AMOUNTS_MAX = 100_000  # (a few MB: amounts that do not repeat would be written each time)


def _written_amount(value: Any) -> Any:
    """An amount field's value, for the hash encoder."""
    if type(value) is Decimal:
        text = str(value)
        written = _WRITTEN_AMOUNTS.get(text)
        if written is None:
            written = msgspec.Raw(amounts.as_hashed(value).encode())
            if len(_WRITTEN_AMOUNTS) < _WRITTEN_AMOUNTS_MAX:
                _WRITTEN_AMOUNTS[text] = written
        return written
    if value is None or type(value) is int:
        return value
    raise _NotPlain(type(value).__name__)


_PLAIN_SCALARS = frozenset({str, type(None), bool, int})


def _written_metadata(metadata: Any) -> Any:
    if type(metadata) is not dict:
        raise _NotPlain(type(metadata).__name__)
    if not metadata:
        return metadata
    written = {}
    for key, value in sorted(metadata.items()) if all(type(key) is str for key in metadata) else _not_plain(metadata):
        written[key] = value if type(value) in _PLAIN_SCALARS else _written_amount(value)
    return written


class _WrittenOnce:
    """The written form of immutable records that repeat across orders (addresses, customers),
    remembered by identity: a remembered record is kept alive, so no other record has its id."""

    _SIZE = _ACCOUNTS_REMEMBERED

    def __init__(self, write: Callable[[Any], msgspec.Raw]):
        self._write = write
        self._known: dict[int, tuple[Any, msgspec.Raw]] = {}

    def __call__(self, record: Any) -> msgspec.Raw:
        known = self._known.get(id(record))
        if known is None:
            if len(self._known) >= self._SIZE:
                self._known.clear()
            known = self._known[id(record)] = (record, self._write(record))
        return known[1]


# An Address's text: its struct's (_ADDRESS_HASHED, below, made as the other classes' are), once.
_written_address = _WrittenOnce(lambda address: msgspec.Raw(_HASH_ENCODER.encode(_ADDRESS_HASHED(address))))


def _hash_content(cls: type, without: frozenset[str] = frozenset()) -> Callable[[Any], Any]:
    """A record of ``cls`` as the hash encoder takes it: a msgspec Struct of its fields less
    ``without``, in sorted order (written as an object with those keys), amounts and addresses
    written, metadata checked. (The other fields hold text, None, booleans and ints; a tuple of
    text, the card-data fields, is not hashed.)"""
    hints = typing.get_type_hints(cls)
    names = sorted(field.name for field in fields(cls) if field.name not in without)
    assert not any(typing.get_origin(hints[name]) is tuple for name in names), "a tuple would need checking"
    # (gc=False: a struct lives only while the hash's text is written, and holds no record, so it
    # is never in a cycle; untracked, it does not bring the collector's next pass nearer)
    struct = msgspec.defstruct(f"{cls.__name__}Hashed", [(name, object) for name in names], gc=False)
    # The struct is built by one expression per class, each field read from the record's __dict__
    # and converted inline: a loop over the amount fields, with a call per amount, cost some twice
    # what building the struct does. Compiled from the names of the class's fields (identifiers).
    arguments = []
    for name in names:
        read = f"d[{name!r}]"
        hint = hints[name]
        if Decimal in typing.get_args(hint) or hint is Decimal:  # a remembered amount, else _written_amount
            arguments.append(f"None if (v := {read}) is None else (known.get(str(v)) if type(v) is Decimal else None) or written_amount(v)")
        elif typing.get_origin(hint) is dict or hint is dict:  # no metadata, the usual case, as it is
            arguments.append(f"m if type(m := {read}) is dict and not m else written_metadata(m)")
        elif hint is Address:
            arguments.append(f"written_address({read})")
        else:
            arguments.append(read)
    source = f"def content(record):\n    d = record.__dict__\n    return struct({', '.join(arguments)})\n"
    namespace = {
        "struct": struct,
        "Decimal": Decimal,
        "known": _WRITTEN_AMOUNTS,
        "written_amount": _written_amount,
        "written_metadata": _written_metadata,
        "written_address": _written_address,
    }
    exec(compile(source, f"<{cls.__name__} hashed>", "exec"), namespace)  # noqa: S102
    return namespace["content"]


_ADDRESS_HASHED = _hash_content(Address)
_ORDER_HASHED = _hash_content(OrderRecord, _ORDER_NOT_HASHED)
_ITEM_HASHED = _hash_content(ItemRecord)
_SERVICE_HASHED = _hash_content(ServiceRecord)
_LOCATION_HASHED = _hash_content(LocationRecord)
_CUSTOMER_HASHED = _hash_content(CustomerRecord, _CUSTOMER_ECHO_FIELDS)
_written_customer = _WrittenOnce(lambda customer: msgspec.Raw(_HASH_ENCODER.encode(_CUSTOMER_HASHED(customer))))


# --- values ---------------------------------------------------------------------------


def _get(record: Mapping[str, Any], key: str) -> Any:
    """``record[key]``, matching the key case-insensitively as Salesforce names are."""
    if key in record:
        return record[key]
    lowered = key.lower()
    return next((value for name, value in record.items() if name.lower() == lowered), None)


def _text(value: Any) -> str | None:
    """Trimmed text; None for None, "" and whitespace."""
    if isinstance(value, str):  # checked first: nearly every value is text
        return storable(value).strip() or None
    if value is None:
        return None
    return str(value) or None


def _texts(values: Iterable[Any]) -> list[str | None]:
    """_text of each value; text and None (nearly every value) without a call."""
    return [
        (value.strip() or None) if type(value) is str and "\x00" not in value else None if value is None else _text(value)
        for value in values
    ]


def _fold(value: Any) -> str:
    return (_text(value) or "").casefold()


def _flag(value: Any) -> bool | None:
    """A checkbox as REST (a boolean) or Bulk CSV (``true``/``false``) gives it."""
    if isinstance(value, bool) or value is None:
        return value
    text = str(value).strip().lower()
    return True if text == "true" else False if text == "false" else None


def _same(actual: Any, expected: Any) -> bool:
    if isinstance(expected, bool):
        return _fold(actual) == ("true" if expected else "false")
    if isinstance(expected, int | float | Decimal):
        return amounts.exact(actual) == amounts.exact(expected)
    return _fold(actual) == _fold(expected)


# How the API writes a dateTime, "2026-01-02T03:04:05.000+0000": already UTC with milliseconds.
# (Years before 1000 are left to strftime, which writes them without leading zeros.)
_UTC_MILLISECONDS = re.compile(
    r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}(?:Z|\+0000|\+00:00)"
)


def _iso_utc(value: Any) -> tuple[str | None, bool]:
    """A Salesforce dateTime as ``YYYY-MM-DDThh:mm:ss.fffZ`` (sortable as text); and whether it parsed.

    Text that is not a dateTime is kept as it is rather than lost.
    """
    return _iso_utc_text(_text(value))


def _iso_utc_text(text: str | None) -> tuple[str | None, bool]:
    if text is None:
        return None, True
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return text, False
    if _UTC_MILLISECONDS.fullmatch(text):
        return text[:23] + "Z", True  # what the formatting below gives it, at a fraction of the cost
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)  # the API always answers in UTC
    parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z", True


__all__ = [
    "CARD_MASK",
    "address_from",
    "assigned_customer_id",
    "card_data_masked_fields",
    "billing_address",
    "content_hash",
    "customer_for",
    "external_name",
    "is_zero_total",
    "location_for",
    "location_id",
    "map_fields",
    "order_notes",
    "resolve_country_code",
    "route",
    "rule_matches",
    "salesforce_url",
    "service_address",
    "service_address_of",
    "service_groups",
    "transform_order",
    "write_backs_for",
]
