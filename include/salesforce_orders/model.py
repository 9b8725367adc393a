"""The records that flow between the pipeline's stages.

Staged records (extract -> validate -> transform) are plain dicts keyed by Salesforce
API names, flattened with dotted relationship paths exactly as a Bulk API 2.0 CSV
header names them: an order has ``Id``, ``OrderNumber``, ``BillingCity``, ...,
``Account.Name``, ``Account.ParentId``, ``Account.Parent.Name``; an item has ``Id``,
``OrderId``, ``Quantity``, ``Product2.ProductCode``, ... Values are JSON types as the
REST API returns them (dates and datetimes as strings).

Transformed records (transform -> load) are the frozen dataclasses below: one
:class:`TransformedOrder` per order, carrying everything the load writes for it.
Card fields appear in neither: they are never selected. Card numbers typed into other fields
are masked as records are extracted (``redaction.py``); a staged record that had any carries the
names of the fields masked under :data:`CARD_DATA_MASKED`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from decimal import Decimal
from operator import itemgetter
from typing import Any

StagedOrder = dict[str, Any]
StagedItem = dict[str, Any]

# The key of a staged record listing the fields whose card numbers were masked. Not an API name
# (those start with a letter), so it cannot clash with a field, nor be mapped or selected.
CARD_DATA_MASKED = "_card_data_masked"

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
    total_amount: Decimal | None
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
    # the fields whose card numbers were masked ("Description", "OrderItem <Id>.Description"):
    # someone should clean them up in Salesforce
    card_data_masked: tuple[str, ...] = ()
    # total_amount in the org's corporate currency and the rate used (None: the org has no rate for it)
    corporate_currency: str | None = None
    conversion_rate: Decimal | None = None
    corporate_amount: Decimal | None = None
    end_date: str | None = None  # YYYY-MM-DD
    contract_id: str | None = None
    opportunity_id: str | None = None
    owner_id: str | None = None
    owner_name: str | None = None


@dataclass(frozen=True)
class ItemRecord:
    sf_order_item_id: str
    sf_order_id: str
    product_code: str | None
    product_name: str | None
    quantity: Decimal | None
    unit_price: Decimal | None
    total_price: Decimal | None
    service_number: str | None
    service_key: str
    metadata: dict[str, Any]
    list_price: Decimal | None = None  # the item's ListPrice
    service_date: str | None = None  # YYYY-MM-DD
    end_date: str | None = None
    sf_product_id: str | None = None
    sf_pricebook_entry_id: str | None = None
    # the product dimension (``products``), as the item's Product2 and price book entry have it now
    product_family: str | None = None
    product_is_active: bool | None = None
    pricebook_list_price: Decimal | None = None


@dataclass(frozen=True)
class ServiceRecord:
    """Order products grouped by the item's service number (or one product alone)."""

    service_key: str  # "<sf_order_id>:<service_number>" or "<sf_order_id>:item:<item id>"
    sf_order_id: str
    service_number: str | None
    item_count: int
    total_amount: Decimal
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
    sf_system_modstamp: str | None = None
    account_name: str | None = None
    total_amount: Decimal | None = None
    currency: str | None = None


def storable(value: Any) -> Any:
    """``value`` less any NUL character when it is text: Salesforce can hold one, no PostgreSQL text
    or JSONB value can (the order would be refused, or a stage's write failing every run)."""
    return value.replace("\x00", "") if type(value) is str and "\x00" in value else value


def plain(value: Any) -> Any:
    """A record as plain JSON-able data (dicts, lists, scalars).

    Equivalent to ``dataclasses.asdict`` for these records, without its deep copies, which
    dominate the transform and load of large runs: each record class has its own converter
    (see below); other values are converted generically, tuples becoming lists.
    """
    encode = _ENCODERS.get(type(value))
    if encode is not None:
        return encode(value)
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


# Converting records generically, field by field, took 2.6M recursive plain() calls (~14 s
# under cProfile) for 81k orders. So each record class gets a converter, built once from its
# field types: it copies the record's ``__dict__`` in one step and converts only the fields
# that hold records, tuples or dicts, each with the converter its type calls for.

_SCALARS = frozenset({str, int, float, Decimal, bool, type(None)})
_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _plain_dict(value: dict[Any, Any]) -> dict[Any, Any]:
    # metadata, write-back fields: their values are scalars, nearly always
    return {k: v if type(v) in _SCALARS else plain(v) for k, v in value.items()}


def _field_encoder(annotation: Any) -> Callable[[Any], Any] | None:
    """How plain() converts a (non-None) value of a field of this type; None: a JSON scalar."""
    is_union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    options = [a for a in typing.get_args(annotation) if a is not type(None)] if is_union else [annotation]
    if all(option in _SCALARS for option in options):
        return None
    if len(options) == 1:
        (kind,) = options
        if kind in _ENCODERS:
            return _ENCODERS[kind]
        args = typing.get_args(kind)
        if typing.get_origin(kind) is tuple and len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]
            if args[0] in _SCALARS:
                return list
            if args[0] in _ENCODERS:
                encode = _ENCODERS[args[0]]
                return lambda records: [encode(record) for record in records]
        if kind is dict or typing.get_origin(kind) is dict:
            return _plain_dict
    return plain  # anything else: converted generically


def _record_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    hints = typing.get_type_hints(cls)
    nested = tuple(
        (f.name, encode) for f in fields(cls) if (encode := _field_encoder(hints[f.name])) is not None
    )

    def encode_record(record: Any) -> dict[str, Any]:
        data = record.__dict__.copy()  # a third of the cost of dict(record.__dict__) here
        for name, encode in nested:
            value = data[name]
            if value is not None:  # e.g. no parent customer, no location: stays None
                data[name] = encode(value)
        return data

    return encode_record


# Every record class, records before the records holding them: a field's converter is looked up
# as its record's is built.
RECORD_CLASSES = (
    Address,
    CustomerRecord,
    LocationRecord,
    OrderRecord,
    ItemRecord,
    ServiceRecord,
    WriteBack,
    TransformedOrder,
    SkippedOrder,
)
for _cls in RECORD_CLASSES:
    _ENCODERS[_cls] = _record_encoder(_cls)
del _cls


# ---------------------------------------------------------------------------------------
# Building records and reading staged records fast
# ---------------------------------------------------------------------------------------

# A frozen dataclass's __init__ sets each field with object.__setattr__: several times the cost of
# the rest of building a record. Where __init__ does nothing more than store the fields, a record
# is made without it: a bare instance whose __dict__ is filled in one step (the staged-record
# decoder rebuilds records so, and the transform makes them so).


def init_only_sets_fields(cls: type) -> bool:
    """Whether ``cls(**fields)`` only stores the fields in the instance's ``__dict__``: the
    __init__ is the one @dataclass generates (compiled from text, hence "<string>"), with no
    __post_init__ after it, no custom __new__ before it, and no __slots__."""
    init = getattr(cls.__init__, "__code__", None)
    return (
        init is not None
        and init.co_filename == "<string>"
        and not hasattr(cls, "__post_init__")
        and cls.__new__ is object.__new__
        and not any("__slots__" in vars(base) for base in cls.__mro__)
        and all(f.init for f in dataclasses.fields(cls))
    )


def record_maker(cls: type) -> Callable[..., Any]:
    """``cls(*values)``, every field given in field order: the same record, made without __init__
    where __init__ only stores the fields."""
    if not init_only_sets_fields(cls):
        return cls
    names = [f.name for f in dataclasses.fields(cls)]
    # One function per class, compiled from its field names (identifiers), storing each value under
    # its name as a literal: 0.5 us for an ItemRecord, where filling the __dict__ from pairs
    # (update(zip(names, values))) took 1.2 us, a tenth of the transform. Stored one by one into
    # the fresh __dict__, as __init__ stores them, the dict stays as compact; a wrong number of
    # values is a TypeError, as the constructor's.
    parameters = ", ".join(f"v{index}" for index in range(len(names)))
    stores = "".join(f"    state[{name!r}] = v{index}\n" for index, name in enumerate(names))
    source = f"def make({parameters}, /):\n    record = new(cls)\n    state = record.__dict__\n{stores}    return record\n"
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    exec(compile(source, f"<make {cls.__name__}>", "exec"), namespace)  # noqa: S102
    make = namespace["make"]
    make.__qualname__ = f"record_maker.<{cls.__name__}>"
    return make


_ABSENT = object()  # a key no record has: dict.get gives None for it


class FieldReader:
    """Reads a fixed list of fields from staged records in one step: ``reader(record)`` gives their
    values in order, None for a field the record lacks.

    ``fields``: (name, matched) pairs. A name not matched is looked up as written (``record.get``);
    a matched name as Salesforce matches names, ignoring case: the key as written when the record
    has it, else the first key equal to it ignoring case. Which key serves each name depends only on
    the record's keys, so it is worked out once per set of keys (a run's records share theirs) and
    the values are then read by one ``itemgetter``. A record that has every name as written (the
    usual case) is read so at once.
    """

    _SHAPES = 64  # sets of keys remembered; more are resolved record by record

    def __init__(self, fields: Sequence[tuple[str, bool]]):
        self.fields = tuple(fields)
        names = [name for name, _ in self.fields]
        self._as_written = itemgetter(*names) if len(names) > 1 else None
        # Whether to read the next record as written first. A failed try costs an exception, and
        # a run's records mostly share their keys: after a record that lacks a name as written,
        # the next ones go by their shape, until one that has every name.
        self._try_as_written = self._as_written is not None
        # shape -> its reader, and whether a record of that shape has every name as written
        self._by_shape: dict[tuple[Any, ...], tuple[Callable[[Any], tuple[Any, ...]], bool]] = {}

    def __call__(self, record: dict[str, Any]) -> tuple[Any, ...]:
        if self._try_as_written:
            try:
                return self._as_written(record)  # type: ignore[misc]
            except KeyError:
                pass
        shape = tuple(record)
        known = self._by_shape.get(shape)
        if known is None:
            present = set(shape)
            has_every_name = self._as_written is not None and all(name in present for name, _ in self.fields)
            known = (self._reader(shape), has_every_name)
            if len(self._by_shape) < self._SHAPES:
                self._by_shape[shape] = known
        read, self._try_as_written = known
        return read(record)

    def many(self, records: Iterable[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """``[reader(record) for record in records]``, in one step when every record has every name."""
        if not isinstance(records, list | tuple):
            records = list(records)
        if self._try_as_written:
            try:
                return list(map(self._as_written, records))  # type: ignore[arg-type]
            except KeyError:
                pass
        return [self(record) for record in records]

    def _reader(self, shape: tuple[Any, ...]) -> Callable[[Any], tuple[Any, ...]]:
        present = set(shape)
        keys = []
        for name, matched in self.fields:
            if name in present:
                keys.append(name)
            elif matched:
                lowered = name.lower()
                keys.append(next((key for key in shape if key.lower() == lowered), _ABSENT))
            else:
                keys.append(_ABSENT)
        if len(keys) < 2:
            return lambda record: tuple([record.get(key) for key in keys])
        if _ABSENT not in keys:
            return itemgetter(*keys)
        # Fields this shape lacks read None from a dict of their own, merged under the record
        # (whose keys they are not): still one itemgetter, no call per field.
        names = [key if key is not _ABSENT else f"\x00absent {position}" for position, key in enumerate(keys)]
        nones = dict.fromkeys(name for name, key in zip(names, keys, strict=True) if key is _ABSENT)
        if present & nones.keys():  # (no Salesforce name looks like these)
            return lambda record: tuple([record.get(key) for key in keys])
        read = itemgetter(*names)
        return lambda record: read({**record, **nones})


def as_written(*names: str) -> list[tuple[str, bool]]:
    """FieldReader fields looked up as written."""
    return [(name, False) for name in names]


def matched(*names: str) -> list[tuple[str, bool]]:
    """FieldReader fields matched as Salesforce matches names."""
    return [(name, True) for name in names]


# What transform.service_address_of reads: the Shipping address fields, then the Billing ones.
SERVICE_ADDRESS_FIELDS = matched(
    *(f"{prefix}{part}" for prefix in ("Shipping", "Billing") for part in ("Street", "City", "State", "PostalCode", "Country"))
)
