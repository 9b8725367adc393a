"""The records that flow between the pipeline's stages.

Staged records (extract -> validate -> transform) are plain dicts keyed by Salesforce
API names, flattened with dotted relationship paths exactly as a Bulk API 2.0 CSV
header names them: an order has ``Id``, ``OrderNumber``, ``BillingCity``, ...,
``Account.Name``, ``Account.ParentId``, ``Account.Parent.Name``; an item has ``Id``,
``OrderId``, ``Quantity``, ``Product2.ProductCode``, ... Values are JSON types as the
REST API returns them (dates and datetimes as strings).

Transformed records (transform -> load) are the frozen dataclasses below: one
:class:`TransformedOrder` per order, carrying everything the load writes for it.
Card fields appear in neither: they are never selected.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

StagedOrder = dict[str, Any]
StagedItem = dict[str, Any]

# Order lifecycle in the warehouse, as the provisioning system shows it.
READY = "READY"  # loaded, write-back not yet attempted
PROCESSING = "PROCESSING"  # write-back under way
COMPLETE = "COMPLETE"  # written back
FAILED = "FAILED"  # write-back failed; error kept on the order
LIFECYCLE_STATES = (READY, PROCESSING, COMPLETE, FAILED)

# Whether the order is still an Activated, existing order in Salesforce.
SF_ACTIVE = "active"
SF_DEACTIVATED = "deactivated"  # went back to Draft after import
SF_DELETED = "deleted"

WORK_ORDER = "work_order"
REQUEST = "request"


@dataclass(frozen=True)
class Address:
    street: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2, resolved from ``country`` (None if unresolvable)

    def is_empty(self) -> bool:
        return not any((self.street, self.city, self.state, self.postal_code, self.country))


@dataclass(frozen=True)
class CustomerRecord:
    customer_id: str
    sf_account_id: str
    name: str | None
    parent_sf_account_id: str | None
    parent_customer_id: str | None
    customer_id_source: str  # "salesforce" (read from the Account) or "assigned" (by us)
    billing: Address


@dataclass(frozen=True)
class LocationRecord:
    location_id: str  # stable hash of customer id + normalised address
    customer_id: str
    sf_account_id: str
    address: Address


@dataclass(frozen=True)
class OrderRecord:
    sf_order_id: str
    order_number: str
    external_name: str  # "<prefix><OrderNumber> <Account.Name>"
    salesforce_url: str
    customer_id: str
    sf_account_id: str
    account_name: str | None
    status: str | None
    status_code: str | None
    order_type: str | None
    effective_date: str | None  # YYYY-MM-DD
    activated_at: str | None  # ISO 8601 UTC
    total_amount: float | None
    currency: str | None
    billing: Address
    service: Address
    service_address_source: str  # "shipping" or "billing"
    location_id: str | None
    destination: str  # WORK_ORDER or REQUEST
    notes: str | None
    po_number: str | None
    metadata: dict[str, Any]
    is_zero_total: bool
    sf_created_at: str | None
    sf_system_modstamp: str | None


@dataclass(frozen=True)
class ItemRecord:
    sf_order_item_id: str
    sf_order_id: str
    product_code: str | None
    product_name: str | None
    quantity: float | None
    unit_price: float | None
    total_price: float | None
    service_number: str | None
    service_key: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class ServiceRecord:
    """Order products grouped by the item's service number (or one product alone)."""

    service_key: str  # "<sf_order_id>:<service_number>" or "<sf_order_id>:item:<item id>"
    sf_order_id: str
    service_number: str | None
    item_count: int
    total_amount: float
    location_id: str | None


@dataclass(frozen=True)
class WriteBack:
    """One record update to send to Salesforce after the load commits."""

    sf_object: str  # "Order" or "Account"
    sf_record_id: str
    fields: dict[str, Any]
    sf_order_id: str  # the order whose lifecycle this write-back belongs to
    action: str  # "mark_imported" | "x_out_card" | "set_customer_id" | combinations joined by "+"


@dataclass(frozen=True)
class TransformedOrder:
    order: OrderRecord
    items: tuple[ItemRecord, ...]
    services: tuple[ServiceRecord, ...]
    customer: CustomerRecord
    parent_customer: CustomerRecord | None
    location: LocationRecord | None
    write_backs: tuple[WriteBack, ...]
    content_hash: str  # over business content only: our own write-back's echo leaves it unchanged
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class SkippedOrder:
    """An order deliberately not imported (e.g. zero total under the "skip" policy)."""

    sf_order_id: str
    order_number: str | None
    reason: str


def plain(value: Any) -> Any:
    """A record as plain JSON-able data (dicts, lists, scalars).

    Equivalent to ``dataclasses.asdict`` for these records, without its deep copies, which
    dominate the transform and load of large runs: a record's fields are copied from its
    ``__dict__`` in one step, and only the fields that can hold records or containers are
    converted further.
    """
    nested = _NESTED_FIELDS.get(type(value))
    if nested is not None:
        data = dict(value.__dict__)
        for name in nested:
            data[name] = plain(data[name])
        return data
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


_SCALAR_TYPES = {"str", "str | None", "float | None", "int", "bool", "float", "int | None", "bool | None"}
# Per record class, the fields whose values are records, tuples or dicts (annotations are
# strings under ``from __future__ import annotations``); the rest are JSON scalars already.
_NESTED_FIELDS: dict[type, tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if str(f.type) not in _SCALAR_TYPES)
    for cls in (Address, CustomerRecord, LocationRecord, OrderRecord, ItemRecord, ServiceRecord, WriteBack, TransformedOrder, SkippedOrder)
}
