"""Staged Salesforce rows -> the records the load writes. Pure functions, no I/O.

Rows reaching this module have passed validation, but a value may still be missing
or blank: every rule treats None, "" and whitespace alike and never raises on them.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from json.encoder import encode_basestring
from operator import itemgetter
from typing import Any, NamedTuple

from salesforce_orders import amounts
from salesforce_orders.config import ImportConfig, RoutingRule
from salesforce_orders.countries import resolve_country_code
from salesforce_orders.currencies import CurrencyRates
from salesforce_orders.model import (
    CARD_DATA_MASKED,
    Address,
    CustomerRecord,
    ItemRecord,
    LocationRecord,
    OrderRecord,
    ServiceRecord,
    SkippedOrder,
    StagedItem,
    StagedOrder,
    TransformedOrder,
    WriteBack,
    plain,
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
    order_id = _text(order.get("Id")) or ""
    zero_total = is_zero_total(order, items)
    if zero_total and config.zero_total_policy == "skip":
        return SkippedOrder(
            sf_order_id=order_id,
            order_number=_text(order.get("OrderNumber")),
            reason=ZERO_TOTAL,
            sf_system_modstamp=_text(order.get("SystemModstamp")),
            account_name=_text(_get(order, "Account.Name")),
            total_amount=amounts.exact(order.get("TotalAmount")),
            currency=_text(order.get("CurrencyIsoCode")),
        )

    warnings: list[str] = []
    billing = billing_address(order)
    service, service_source = service_address(order, billing)
    checked = (
        (("billing", billing), ("service", service))
        if service_source == SHIPPING
        else (("billing", billing),)
    )
    for label, address in checked:
        if address.country and not address.country_code:
            warnings.append(f"{label} country {address.country!r} is not a recognised country")
    customer, parent_customer = customer_for(order, config, billing)
    if not customer.sf_account_id:
        warnings.append("order has no AccountId")
    location = location_for(customer, service)
    location_key = location.location_id if location else None
    item_records, services = service_groups(order_id, items, config, location_id=location_key)
    activated_at, activated_ok = _iso_utc(order.get("ActivatedDate"))
    created_at, _ = _iso_utc(order.get("CreatedDate"))
    modstamp, _ = _iso_utc(order.get("SystemModstamp"))
    if not activated_ok:
        warnings.append(f"ActivatedDate {order.get('ActivatedDate')!r} is not a date and time")
    total, currency, effective_date = amounts.exact(order.get("TotalAmount")), _text(order.get("CurrencyIsoCode")), _text(order.get("EffectiveDate"))
    converted = (rates or _SINGLE_CURRENCY).convert(total, currency, effective_date)
    if converted is None and currency is not None:
        warnings.append(f"CurrencyIsoCode {currency!r} has no conversion rate in the org: corporate_amount left empty")

    record = OrderRecord(
        sf_order_id=order_id,
        order_number=_text(order.get("OrderNumber")) or "",
        external_name=external_name(order, config),
        salesforce_url=salesforce_url(instance_url, order_id),
        customer_id=customer.customer_id,
        sf_account_id=customer.sf_account_id,
        account_name=customer.name,
        status=_text(order.get("Status")),
        status_code=_text(order.get("StatusCode")),
        order_type=_text(order.get("Type")),
        effective_date=effective_date,
        activated_at=activated_at,
        total_amount=total,
        currency=currency,
        billing=billing,
        service=service,
        service_address_source=service_source,
        location_id=location_key,
        destination=route(order, config),
        notes=order_notes(order, config),
        po_number=_text(order.get("PoNumber")),
        metadata=map_fields(order, config.order_field_mappings),
        is_zero_total=zero_total,
        sf_created_at=created_at,
        sf_system_modstamp=modstamp,
        card_data_masked=card_data_masked_fields(order, items, config.order_item_object),
        corporate_currency=converted.corporate_currency if converted else None,
        conversion_rate=converted.rate if converted else None,
        corporate_amount=converted.amount if converted else None,
        end_date=_text(order.get("EndDate")),
        contract_id=_text(order.get("ContractId")),
        opportunity_id=_text(order.get("OpportunityId")),
        owner_id=_text(order.get("OwnerId")),
        owner_name=_text(_get(order, "Owner.Name")),
    )
    return TransformedOrder(
        order=record,
        items=item_records,
        services=services,
        customer=customer,
        parent_customer=parent_customer,
        location=location,
        write_backs=write_backs_for(order, customer, config),
        content_hash=content_hash(record, item_records, services, customer, parent_customer, location),
        warnings=tuple(warnings),
    )


# --- naming -------------------------------------------------------------------------


def external_name(order: StagedOrder, config: ImportConfig) -> str:
    """``"<prefix><OrderNumber> <Account.Name>"``; just the number when the Account has no name."""
    number = f"{config.order_prefix}{_text(order.get('OrderNumber')) or ''}"
    account_name = _text(_get(order, "Account.Name"))
    return f"{number} {account_name}".strip() if account_name else number.strip()


def salesforce_url(instance_url: str, order_id: str) -> str:
    """The order's Lightning page."""
    return f"{instance_url.rstrip('/')}/lightning/r/Order/{order_id}/view"


# --- addresses ----------------------------------------------------------------------


def address_from(record: Mapping[str, Any], prefix: str) -> Address:
    """The address in ``<prefix>Street`` ... ``<prefix>Country``, trimmed, blanks as None."""
    return _address(*[_text(_get(record, prefix + part)) for part in _ADDRESS_PARTS])


# Addresses repeat: an order's billing address is usually its Account's, and a customer's orders
# share theirs. Records are immutable, so orders can share one Address.
@lru_cache(maxsize=4096)
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


@lru_cache(maxsize=4096)  # a run's orders repeat their Accounts
def case_safe_id(record_id: str) -> str:
    """The 18-character form of a Salesforce id (its suffix encodes the case of the first 15).

    15-character ids differ only by case, and text fields (such as a unique customer-id field)
    compare case-insensitively in Salesforce: only the 18-character form is safe there.
    """
    base = record_id[:_ACCOUNT_ID_LENGTH]
    if len(base) < _ACCOUNT_ID_LENGTH:
        return record_id
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    suffix = ""
    for start in range(0, _ACCOUNT_ID_LENGTH, 5):
        bits = sum(1 << i for i, ch in enumerate(base[start : start + 5]) if "A" <= ch <= "Z")
        suffix += alphabet[bits]
    return base + suffix


def assigned_customer_id(account_id: str, config: ImportConfig) -> str:
    """The id we give an Account that has none: deterministic, so a retry never makes a second.

    Built from the case-safe 18-character Account id: two Accounts whose 15-character ids differ
    only by case must not get ids that Salesforce's case-insensitive unique field sees as equal.
    """
    return f"{config.assigned_customer_id_prefix}{case_safe_id(account_id)}"


def _customer_id(salesforce_value: Any, account_id: str, config: ImportConfig) -> tuple[str, str]:
    value = _text(salesforce_value)
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
    account_id = _text(order.get("AccountId")) or ""
    customer_id, source = _customer_id(_get(order, f"Account.{id_field}"), account_id, config)
    parent_account_id = _text(_get(order, "Account.ParentId"))
    parent = None
    if parent_account_id:
        parent_id, parent_source = _customer_id(
            _get(order, f"Account.Parent.{id_field}"), parent_account_id, config
        )
        parent = CustomerRecord(
            customer_id=parent_id,
            sf_account_id=parent_account_id,
            name=_text(_get(order, "Account.Parent.Name")),
            parent_sf_account_id=None,  # not selected: unknown here, not "no parent"
            parent_customer_id=None,
            customer_id_source=parent_source,
            billing=Address(),
        )
    account_billing = address_from(order, "Account.Billing")
    customer = CustomerRecord(
        customer_id=customer_id,
        sf_account_id=account_id,
        name=_text(_get(order, "Account.Name")),
        parent_sf_account_id=parent_account_id,
        parent_customer_id=parent.customer_id if parent else None,
        customer_id_source=source,
        billing=(billing or billing_address(order)) if account_billing.is_empty() else account_billing,
    )
    return customer, parent


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


@lru_cache(maxsize=4096)  # a customer's orders repeat their locations
def location_id(customer_id: str, address: Address) -> str:
    """A stable id for one customer's address, insensitive to case and spacing."""
    digest = hashlib.sha1(f"{customer_id}|{_normalised_address(address)}".encode(), usedforsecurity=False)
    return digest.hexdigest()[:16]


def location_for(customer: CustomerRecord, service: Address) -> LocationRecord | None:
    """The service address as the customer's location; None when there is no address."""
    if service.is_empty():
        return None
    return LocationRecord(
        location_id=location_id(customer.customer_id, service),
        customer_id=customer.customer_id,
        sf_account_id=customer.sf_account_id,
        address=service,
    )


# --- items and services --------------------------------------------------------------


def service_groups(
    order_id: str, items: Sequence[StagedItem], config: ImportConfig, *, location_id: str | None = None
) -> tuple[tuple[ItemRecord, ...], tuple[ServiceRecord, ...]]:
    """Items (ordered by Id) and their services: one per service number, or per lone item."""
    service_number_field, mappings = config.service_number_field, config.item_field_mappings
    records = []
    members: dict[str, list[ItemRecord]] = {}
    by_id = sorted([(_text(item.get("Id")) or "", item) for item in items], key=itemgetter(0))
    for item_id, item in by_id:
        service_number = _text(_get(item, service_number_field))
        key = f"{order_id}:{service_number}" if service_number else f"{order_id}:item:{item_id}"
        record = ItemRecord(
            sf_order_item_id=item_id,
            sf_order_id=_text(item.get("OrderId")) or order_id,
            product_code=_text(_get(item, "Product2.ProductCode")),
            product_name=_text(_get(item, "Product2.Name")),
            quantity=amounts.exact(item.get("Quantity")),
            unit_price=amounts.exact(item.get("UnitPrice")),
            total_price=amounts.exact(item.get("TotalPrice")),
            service_number=service_number,
            service_key=key,
            metadata=map_fields(item, mappings),
            list_price=amounts.exact(item.get("ListPrice")),
            service_date=_text(item.get("ServiceDate")),
            end_date=_text(item.get("EndDate")),
            sf_product_id=_text(item.get("Product2Id")),
            sf_pricebook_entry_id=_text(item.get("PricebookEntryId")),
            product_family=_text(_get(item, "Product2.Family")),
            product_is_active=_flag(_get(item, "Product2.IsActive")),
            pricebook_list_price=amounts.exact(_get(item, "PricebookEntry.UnitPrice")),
        )
        records.append(record)
        members.setdefault(key, []).append(record)
    services = tuple(
        ServiceRecord(
            service_key=key,
            sf_order_id=order_id,
            service_number=group[0].service_number,
            item_count=len(group),
            total_amount=amounts.total(item.total_price for item in group),
            location_id=location_id,
        )
        for key, group in sorted(members.items())
    )
    return tuple(records), services


def is_zero_total(order: StagedOrder, items: Sequence[StagedItem]) -> bool:
    """TotalAmount is 0, or the order's items add up to 0."""
    if amounts.exact(order.get("TotalAmount")) == 0:
        return True
    return bool(items) and amounts.total(amounts.exact(item.get("TotalPrice")) for item in items) == 0


# --- routing, metadata, notes --------------------------------------------------------


def route(order: StagedOrder, config: ImportConfig) -> str:
    """The first matching rule's destination, else the default destination."""
    for rule in config.routing.rules:
        if rule_matches(rule, _get(order, rule.field)):
            return rule.destination
    return config.routing.default_destination


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


def map_fields(record: Mapping[str, Any], mappings: Mapping[str, str]) -> dict[str, Any]:
    """``{metadata key: value}`` for each configured ``Salesforce field -> metadata key``."""
    return {key: _get(record, sf_field) for sf_field, key in mappings.items()}


def order_notes(order: StagedOrder, config: ImportConfig) -> str | None:
    """The order's Description as notes, when notes are imported."""
    return _text(order.get("Description")) if config.import_notes else None


def card_data_masked_fields(order: StagedOrder, items: Sequence[StagedItem], item_object: str = "OrderItem") -> tuple[str, ...]:
    """The fields of the order and its items whose card numbers were masked when extracted."""
    fields = list(order.get(CARD_DATA_MASKED) or ())
    for item in items:
        fields += [f"{item_object} {item.get('Id')}.{name}" for name in item.get(CARD_DATA_MASKED) or ()]
    return tuple(fields)


# --- write-back and change detection ---------------------------------------------------


def write_backs_for(
    order: StagedOrder, customer: CustomerRecord, config: ImportConfig
) -> tuple[WriteBack, ...]:
    """The enabled updates for Salesforce: one for the Order (status, card mask), one for the Account."""
    enabled = config.write_back
    order_id = _text(order.get("Id")) or ""
    fields: dict[str, Any] = {}
    actions = []
    if enabled.mark_imported and _fold(order.get("Status")) != _fold(config.imported_status):
        fields["Status"] = config.imported_status
        actions.append("mark_imported")
    if enabled.x_out_card_fields and config.card_fields:
        fields.update(dict.fromkeys(config.card_fields, CARD_MASK))
        actions.append("x_out_card")
    write_backs = []
    if fields and order_id:
        write_backs.append(WriteBack(config.order_object, order_id, fields, order_id, "+".join(actions)))
    id_field = config.customer_id_field
    if (
        enabled.set_customer_id
        and customer.sf_account_id
        and _get(order, f"Account.{id_field}") != customer.customer_id
    ):
        write_backs.append(
            WriteBack(
                "Account",
                customer.sf_account_id,
                {id_field: customer.customer_id},
                order_id,
                "set_customer_id",
            )
        )
    return tuple(write_backs)


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
    return hashlib.sha256(text.encode()).hexdigest()


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


@lru_cache(maxsize=4096)  # addresses repeat (see _address)
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
        if "\x00" in value:  # Salesforce can hold a NUL; no PostgreSQL text column can
            value = value.replace("\x00", "")
        return value.strip() or None
    if value is None:
        return None
    return str(value) or None


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
    text = _text(value)
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
    "service_groups",
    "transform_order",
    "write_backs_for",
]
