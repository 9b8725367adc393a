"""The compiled record converters give exactly what the generic ones gave.

``plain()`` (model.py) and the staged-record decoder (staging.py) are compiled per record
class for speed. Real orders from the sandbox generator, transformed under several configs,
must still encode to what ``dataclasses.asdict`` gives (tuples as lists, same key order) and
decode back to equal records, built as their constructors build them.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from salesforce_orders.config import ImportConfig, parse_config
from salesforce_orders.extract import split_order
from salesforce_orders.model import (
    RECORD_CLASSES,
    Address,
    FieldReader,
    SkippedOrder,
    TransformedOrder,
    plain,
    record_maker,
)
from salesforce_orders.soql import ExtractWindow, build_orders_query
from salesforce_orders.staging import (
    _BATCH_DECODER,
    _as_constructed,
    _decoder,
    _from_payload,
    _init_only_sets_fields,
    _to_payload,
    record_view,
    transformed_batch_from_json,
    transformed_from_json,
    transformed_to_json,
    transformed_views_from_json,
)
from salesforce_orders.transform import transform_order
from salesforce_orders.warehouse import json_dumps, json_loads
from salesforce_sandbox.generator import generate
from salesforce_sandbox.soql.engine import QueryEngine
from salesforce_sandbox.store import Store

NOW = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
_ADDRESS_PREFIXES = ("Billing", "Shipping", "Account.Billing")
_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country")

CONFIGS = {
    "default": {},
    "mapped": {
        "order_prefix": "SF-",
        "order_field_mappings": {
            "PoNumber": "po",
            "Account.Type": "account_type",
            "Description": "description",
        },
        "item_field_mappings": {"Description": "line", "Product2.Name": "product"},
        "routing": {
            "rules": [
                {"field": "Type", "operator": "equals", "value": "New Service", "destination": "work_order"}
            ],
            "default_destination": "request",
        },
    },
    "no_write_back": {
        "import_notes": False,
        "write_back": {"mark_imported": False, "set_customer_id": False, "x_out_card_fields": False, "x_out_card_fields_not_imported": False},
        "order_field_mappings": {"PoNumber": "po"},
    },
}


def _transformed(config: ImportConfig, orders: int, seed: int, **options: Any) -> list[TransformedOrder]:
    """Generated orders, extracted as the REST query reads them, then transformed.

    Every seventh order loses its addresses (no location), every eleventh carries nested
    metadata (a value that is an object with a list), every thirteenth an unknown country."""
    store = Store(clock=lambda: NOW)
    generate(store, orders=orders, seed=seed, now=NOW, **options)
    query = QueryEngine(store.conn, store.schema).prepare(
        build_orders_query(config, ExtractWindow(None, None, datetime(2000, 1, 1, tzinfo=UTC))), now=NOW
    )
    results = []
    for n, record in enumerate(query.fetch(query.ids())):
        order, items = split_order(record, config.order_items_relationship)
        if n % 7 == 0:
            order.update({prefix + part: None for prefix in _ADDRESS_PREFIXES for part in _ADDRESS_PARTS})
        if n % 11 == 0 and "PoNumber" in config.order_field_mappings:
            order["PoNumber"] = {"lines": [1, 2.5, None, True, ["x", {"y": "z"}]], "note": "Straße ☎"}
        if n % 13 == 0:
            order["ShippingCountry"] = "Atlantis"
        result = transform_order(order, items, config, instance_url="https://acme.my.salesforce.com")
        if isinstance(result, TransformedOrder):
            results.append(result)
    return results


@pytest.fixture(scope="module")
def transformed() -> list[TransformedOrder]:
    records = []
    for n, (name, settings) in enumerate(CONFIGS.items()):
        options = {"dirty_share": 0.3} if name == "mapped" else {}
        records += _transformed(parse_config(settings), 250, 31 + n, **options)
    return records


def _lists(value: Any) -> Any:
    """asdict() data with tuples as lists, as JSON has them."""
    if isinstance(value, tuple | list):
        return [_lists(v) for v in value]
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return value


def _dump(value: Any) -> str:
    return json_dumps(value)  # unsorted: key order counts


def test_the_generated_orders_cover_every_shape(transformed: list[TransformedOrder]) -> None:
    assert len(transformed) > 500
    assert any(t.parent_customer is not None for t in transformed)
    assert any(t.parent_customer is None for t in transformed)
    assert any(t.location is None for t in transformed)
    assert any(t.location is not None for t in transformed)
    assert any(t.warnings for t in transformed)
    assert any(not t.write_backs for t in transformed) and any(len(t.write_backs) > 1 for t in transformed)
    assert any(isinstance(t.order.metadata.get("po"), dict) for t in transformed)
    assert any(item.metadata for t in transformed for item in t.items)
    assert any(service.item_count > 1 for t in transformed for service in t.services)
    assert any(not t.items for t in transformed) or any(len(t.items) > 3 for t in transformed)


def test_plain_is_asdict_with_lists(transformed: list[TransformedOrder]) -> None:
    for t in transformed:
        expected = _lists(dataclasses.asdict(t))
        encoded = plain(t)
        assert encoded == expected  # a tuple left in place would differ: (1,) != [1]
        assert _dump(encoded) == _dump(dataclasses.asdict(t))  # same key order everywhere
        assert _to_payload(t) == expected
        # the records inside, on their own
        assert plain(t.order) == _lists(dataclasses.asdict(t.order))
        assert [plain(i) for i in t.items] == _lists([dataclasses.asdict(i) for i in t.items])
        assert plain(t.customer.billing) == dataclasses.asdict(t.customer.billing)


def test_plain_copies_rather_than_shares(transformed: list[TransformedOrder]) -> None:
    t = next(t for t in transformed if isinstance(t.order.metadata.get("po"), dict))
    encoded = plain(t)
    encoded["order"]["metadata"]["po"]["note"] = "changed"
    encoded["order"]["billing"]["city"] = "changed"
    assert t.order.metadata["po"]["note"] == "Straße ☎"
    assert t.order.billing.city != "changed"
    assert encoded["order"]["metadata"]["po"]["lines"] == [1, 2.5, None, True, ["x", {"y": "z"}]]


def test_plain_of_other_values_is_unchanged() -> None:
    address = Address(city="Springfield")
    skipped = SkippedOrder("801", None, "zero total")
    assert plain(None) is None and plain("x") == "x" and plain(1.5) == 1.5
    assert plain((1, (2, [3]), {"a": (4,)})) == [1, [2, [3]], {"a": [4]}]
    assert plain({"k": address, "l": [skipped]}) == {
        "k": dataclasses.asdict(address),
        "l": [{"sf_order_id": "801", "order_number": None, "reason": "zero total", "sf_system_modstamp": None,
               "account_name": None, "total_amount": None, "currency": None}],
    }


def _fields_in_order(value: Any) -> bool:
    """Whether every record's __dict__ holds its fields in field order, as __init__ leaves it."""
    if dataclasses.is_dataclass(value):
        return list(vars(value)) == [f.name for f in dataclasses.fields(value)] and all(
            _fields_in_order(v) for v in vars(value).values()
        )
    if isinstance(value, tuple):
        return all(_fields_in_order(v) for v in value)
    return True


def _check_rebuilt(rebuilt: Any, original: Any, *, same_text: bool = True) -> None:
    """Equal, of the same classes, with the same __dict__ key order, and still frozen."""
    assert rebuilt == original
    if same_text:
        assert _dump(plain(rebuilt)) == _dump(plain(original))
    assert _fields_in_order(rebuilt)
    assert type(rebuilt.items) is tuple and type(rebuilt.warnings) is tuple
    assert hash(rebuilt.order.billing) == hash(original.order.billing)
    assert hash(rebuilt.customer) == hash(original.customer)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rebuilt.order.billing.city = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        rebuilt.content_hash = "x"  # type: ignore[misc]


def test_decode_of_encode_gives_the_records_back(transformed: list[TransformedOrder]) -> None:
    for t in transformed:
        _check_rebuilt(_from_payload(plain(t)), t)
        # through JSON text, as staging stores the payloads
        _check_rebuilt(transformed_from_json(transformed_to_json(t)), t)
        _check_rebuilt(_from_payload(json_loads(json_dumps([_to_payload(t)]))[0]), t)


def _reordered(value: Any) -> Any:
    """The payload with every object's keys in reverse order (JSONB reorders keys, too)."""
    if isinstance(value, list):
        return [_reordered(v) for v in value]
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(value)}
    return value


def test_decode_takes_fields_in_field_order_whatever_the_key_order(
    transformed: list[TransformedOrder],
) -> None:
    for t in transformed[::10]:
        # (metadata and write-back fields are dicts: they keep the payload's order, as before)
        _check_rebuilt(_from_payload(_reordered(json_loads(transformed_to_json(t)))), t, same_text=False)


def test_decode_fills_in_defaults_and_drops_unknown_keys(transformed: list[TransformedOrder]) -> None:
    t = next(t for t in transformed if t.warnings)
    payload = json_loads(transformed_to_json(t))
    del payload["warnings"]  # staged before the field was added
    payload["added_later"] = 1
    payload["order"]["unknown"] = {"x": 1}
    rebuilt = _from_payload(payload)
    assert rebuilt == dataclasses.replace(t, warnings=())
    assert list(vars(rebuilt)) == [f.name for f in dataclasses.fields(TransformedOrder)]
    del payload["content_hash"]  # a required field: refused, as the constructor refuses it
    with pytest.raises(TypeError, match="content_hash"):
        _from_payload(payload)


def test_records_are_rebuilt_without_init_only_where_init_just_stores_fields() -> None:
    assert all(_init_only_sets_fields(cls) for cls in RECORD_CLASSES)

    @dataclasses.dataclass(frozen=True)
    class Normalised:
        name: str
        tags: tuple[str, ...] = ()

        def __post_init__(self) -> None:
            object.__setattr__(self, "name", self.name.strip())

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        name: str

    assert not _init_only_sets_fields(Normalised) and not _init_only_sets_fields(Slotted)
    assert _decoder(Normalised)({"name": " x ", "tags": ["a"]}) == Normalised("x", ("a",))
    assert _decoder(Slotted)({"name": "x", "other": 1}) == Slotted("x")


def test_the_warehouse_codec_writes_records_as_their_plain_form(transformed: list[TransformedOrder]) -> None:
    """stage_transformed hands the records themselves to the warehouse's JSON codec: the text is
    the one their plain() form gives, key order and all."""
    assert json_dumps(transformed) == json_dumps([plain(t) for t in transformed])


def test_records_made_without_init_equal_the_constructed_ones(transformed: list[TransformedOrder]) -> None:
    """The transform makes records with record_maker: equal to the constructor's, same key order."""
    for t in transformed[:50]:
        for record in (t.order, *t.items, *t.services, t.customer, *t.write_backs, t):
            cls = type(record)
            values = [getattr(record, f.name) for f in dataclasses.fields(cls)]
            made, constructed = record_maker(cls)(*values), cls(*values)
            assert made == constructed
            assert list(vars(made).items()) == list(vars(constructed).items())
    with pytest.raises(TypeError):
        record_maker(Address)("street only")


_ANY_CASE = {"Id": "801A", "account.name": "Acme", "Account.NAME": "second", "Quantity": 2, "quantity": 3}


@pytest.mark.parametrize(
    ("record", "fields", "expected"),
    [
        pytest.param(_ANY_CASE, [("Id", False), ("Account.Name", True)], ("801A", "Acme"), id="first key equal ignoring case"),
        pytest.param(_ANY_CASE, [("Account.Name", False), ("Id", True)], (None, "801A"), id="as written: absent is None"),
        pytest.param(_ANY_CASE, [("quantity", True), ("Quantity", True), ("QUANTITY", True)], (3, 2, 2), id="as written first"),
        pytest.param(_ANY_CASE, [("Missing__c", True), ("Id", False)], (None, "801A"), id="missing"),
        pytest.param({"Id": "801A"}, [("Id", True)], ("801A",), id="one field"),
        pytest.param({"Id": "801A"}, [], (), id="no field"),
    ],
)
def test_field_reader_reads_as_get_and_matching(record: dict, fields: list, expected: tuple) -> None:
    """FieldReader gives what ``record.get`` (as written) and the case-insensitive lookup give,
    whether the record has every field (one itemgetter) or not (resolved per set of keys)."""
    reader = FieldReader(fields)
    for _ in range(2):  # resolved, then remembered
        assert reader(record) == expected
    assert reader(dict(reversed(list(record.items())))) == tuple(
        record.get(name) if not matched else next((v for k, v in reversed(list(record.items())) if k.lower() == name.lower()), None)
        if name not in record
        else record[name]
        for name, matched in fields
    )


def _generic_batch(text: str) -> list[TransformedOrder]:
    return [_from_payload(payload) for payload in json_loads(text)]


def test_a_staged_batch_decodes_to_the_records_the_generic_decoder_gives(transformed: list[TransformedOrder]) -> None:
    text = json_dumps([_to_payload(t) for t in transformed])
    decoded = transformed_batch_from_json(text)
    assert decoded == _generic_batch(text) == transformed
    # taken as msgspec decoded it, not decoded a second time
    assert all(map(_as_constructed(TransformedOrder), _BATCH_DECODER.decode(text)))
    for rebuilt, original in zip(decoded, transformed, strict=True):
        _check_rebuilt(rebuilt, original)
    # keys in another order: rebuilt in field order, as the generic decoder does
    reordered = json_dumps(_reordered(json_loads(text))[::25])
    for rebuilt, original in zip(transformed_batch_from_json(reordered), transformed[::25], strict=True):
        _check_rebuilt(rebuilt, original, same_text=False)


def test_a_batch_msgspec_would_read_otherwise_is_decoded_generically(transformed: list[TransformedOrder]) -> None:
    t = next(t for t in transformed if t.warnings and t.items)
    payloads = json_loads(json_dumps([_to_payload(t), _to_payload(transformed[0])]))
    mistyped = json_loads(json_dumps(payloads))
    mistyped[1]["order"]["order_number"] = 42  # not the declared str: kept as it is, as before
    older = json_loads(json_dumps(payloads))
    del older[0]["warnings"], older[0]["order"]["owner_name"], older[0]["items"][0]["product_family"]  # staged before the fields were added
    for variant in (mistyped, older):
        text = json_dumps(variant)
        decoded = transformed_batch_from_json(text)
        assert decoded == _generic_batch(text)
        assert all(_fields_in_order(record) for record in decoded)
    assert transformed_batch_from_json(json_dumps(mistyped))[1].order.order_number == 42
    rebuilt = transformed_batch_from_json(json_dumps(older))[0]
    assert rebuilt.warnings == () and rebuilt.order.owner_name is None and rebuilt.items[0].product_family is None
    # NaN from an older SQLite warehouse's json.dumps
    nan = json_dumps(payloads).replace('"total_amount":', '"total_amount":NaN,"x":', 1)
    assert transformed_batch_from_json(nan) == _generic_batch(nan)
    del payloads[0]["content_hash"]  # a required field: refused, as the constructor refuses it
    with pytest.raises(TypeError, match="content_hash"):
        transformed_batch_from_json(json_dumps(payloads))


def _as_view_data(value: Any) -> Any:
    """A record or its view as nested data: field name -> value, every value with its type."""
    if dataclasses.is_dataclass(value):
        return (type(value).__name__, {f.name: _as_view_data(getattr(value, f.name)) for f in dataclasses.fields(value)})
    if isinstance(value, msgspec.Struct):
        return (type(value).__name__.removesuffix("View"), {name: _as_view_data(getattr(value, name)) for name in value.__struct_fields__})
    if isinstance(value, tuple):
        return tuple(_as_view_data(v) for v in value)
    if isinstance(value, dict):
        return {k: _as_view_data(v) for k, v in value.items()}
    return (type(value).__name__, value)


def test_the_loads_views_of_a_staged_batch_hold_what_its_records_hold(transformed: list[TransformedOrder]) -> None:
    """Field by field, each value of the same type, in the same order; methods and hashes as the records'."""
    from salesforce_orders.load import _customer_hash, customer_row

    text = json_dumps([_to_payload(t) for t in transformed])
    views = transformed_views_from_json(text)
    assert all(type(view) is record_view(TransformedOrder) for view in views)
    assert [_as_view_data(view) for view in views] == [_as_view_data(record) for record in transformed]
    for view, record in zip(views, transformed, strict=True):
        assert view.order.billing.is_empty() == record.order.billing.is_empty()
        assert _customer_hash(view.customer) == _customer_hash(record.customer)
        assert customer_row(view.customer, NOW) == customer_row(record.customer, NOW)
    with pytest.raises(AttributeError):
        views[0].content_hash = "x"  # type: ignore[misc]  # frozen, as the records are


def test_a_batch_the_views_would_read_otherwise_is_read_as_records_as_before(transformed: list[TransformedOrder]) -> None:
    """A value not of its declared type, NaN from an older SQLite warehouse, a required field
    missing: read (or refused) by the records' generic decoder, as the load always read them. A
    batch staged before a field was added takes its default, as the records' constructor gives it."""
    t = next(t for t in transformed if t.warnings and t.items)
    payloads = json_loads(json_dumps([_to_payload(t), _to_payload(transformed[0])]))
    mistyped = json_loads(json_dumps(payloads))
    mistyped[1]["order"]["order_number"] = 42
    assert transformed_views_from_json(json_dumps(mistyped)) == transformed_batch_from_json(json_dumps(mistyped))
    nan = json_dumps(payloads).replace('"total_amount":', '"total_amount":NaN,"x":', 1)
    assert transformed_views_from_json(nan) == _generic_batch(nan)
    older = json_loads(json_dumps(payloads))
    del older[0]["warnings"], older[0]["order"]["owner_name"], older[0]["items"][0]["product_family"]
    assert [_as_view_data(v) for v in transformed_views_from_json(json_dumps(older))] == [
        _as_view_data(r) for r in transformed_batch_from_json(json_dumps(older))
    ]
    del payloads[0]["content_hash"]
    with pytest.raises(TypeError, match="content_hash"):
        transformed_views_from_json(json_dumps(payloads))
