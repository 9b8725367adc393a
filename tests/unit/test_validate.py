"""Validation of staged orders: every check, its message, duplicates across chunks, and the
validate stage over a SQLite warehouse (quarantine, staging status, the invalid-share breaker).

The Great Expectations suite costs seconds to build, so one validator serves the module and the
crafted orders are validated together in one chunk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

from salesforce_orders.config import ImportConfig, parse_config
from salesforce_orders.quarantine import validate_run
from salesforce_orders.schema_versions import create_all
from salesforce_orders.soql import item_fields, order_fields
from salesforce_orders.staging import stage_items, stage_orders
from salesforce_orders.validate import (
    CHECKS,
    ChunkResult,
    InvalidShareExceeded,
    OrderValidator,
    duplicate_order_numbers,
    text_limits,
)
from salesforce_orders.warehouse import tables

TODAY = date(2026, 3, 1)
CONFIG = ImportConfig()


# ---------------------------------------------------------------------------------------
# Staged records, shaped as extract stages them
# ---------------------------------------------------------------------------------------


def sf_id(prefix: str, n: int) -> str:
    """An 18-character Salesforce-style id."""
    return f"{prefix}{n:012d}AAA"


def staged_item(order_n: int, item_n: int, quantity: Any = 1.0, unit_price: Any = 100.0, **overrides: Any) -> dict:
    """A staged order product (every selected field present); TotalPrice follows quantity x price."""
    item = dict.fromkeys(item_fields(CONFIG))
    total = round(quantity * unit_price, 2) if isinstance(quantity, float) and isinstance(unit_price, float) else None
    item.update(
        {
            "Id": sf_id("802", order_n * 100 + item_n),
            "OrderId": sf_id("801", order_n),
            "Product2Id": sf_id("01t", item_n),
            "Product2.ProductCode": f"P-{item_n}",
            "Product2.Name": f"Product {item_n}",
            "Quantity": quantity,
            "UnitPrice": unit_price,
            "TotalPrice": total,
        }
    )
    item.update(overrides)
    return item


def staged_order(n: int, items: list[dict] | None = None, **overrides: Any) -> tuple[dict, list[dict]]:
    """A valid staged order ``n`` with its items; ``overrides`` replace fields by API name.

    TotalAmount is the sum of the items' TotalPrice unless overridden.
    """
    if items is None:
        items = [staged_item(n, 1, 1.0, 100.0), staged_item(n, 2, 2.0, 25.0)]
    order = dict.fromkeys(order_fields(CONFIG))
    address = {"Street": "1 Main St", "City": "Springfield", "State": "IL", "PostalCode": "62701", "Country": "United States"}
    order.update(
        {
            "Id": sf_id("801", n),
            "OrderNumber": f"{n:08d}",
            "Status": "Activated",
            "StatusCode": "Activated",
            "Type": "New Service",
            "EffectiveDate": "2026-01-15",
            "ActivatedDate": "2026-01-16T10:00:00.000+0000",
            "TotalAmount": round(sum(i["TotalPrice"] or 0 for i in items), 2),
            "CurrencyIsoCode": "USD",
            **{f"Billing{part}": value for part, value in address.items()},
            **{f"Shipping{part}": value for part, value in address.items()},
            "CreatedDate": "2026-01-15T09:00:00.000+0000",
            "LastModifiedDate": "2026-01-16T10:00:00.000+0000",
            "SystemModstamp": f"2026-01-16T10:{n % 60:02d}:00.000+0000",
            "AccountId": sf_id("001", n),
            "Account.Name": f"Account {n}",
        }
    )
    order.update(overrides)
    return order, items


# ---------------------------------------------------------------------------------------
# Every check, triggered by a crafted order
# ---------------------------------------------------------------------------------------

NO_SHIPPING = {f"Shipping{part}": None for part in ("Street", "City", "State", "PostalCode", "Country")}


@dataclass(frozen=True)
class Case:
    """One crafted order: what it breaks, the checks it must fail, and what each message must say."""

    name: str
    checks: tuple[str, ...]
    fragments: dict[str, tuple[str, ...]]  # check -> texts its message must contain
    overrides: dict[str, Any] = field(default_factory=dict)
    items: tuple[tuple[Any, Any], ...] | None = None  # (Quantity, UnitPrice) per item
    first_item: dict[str, Any] = field(default_factory=dict)  # fields of the first item, by API name


CASES = [
    Case("missing Id", ("order_id_present",), {"order_id_present": ("Id is missing",)}, {"Id": None}),
    Case("missing OrderNumber", ("order_number_present",), {"order_number_present": ("OrderNumber is missing",)},
         {"OrderNumber": None}),
    Case("missing AccountId", ("account_present",), {"account_present": ("AccountId is missing",)}, {"AccountId": None}),
    Case("missing Account.Name", ("account_present",), {"account_present": ("Account.Name is missing",)},
         {"Account.Name": None}),
    Case("Draft status", ("status_activated",), {"status_activated": ("StatusCode", "'Draft'")}, {"StatusCode": "Draft"}),
    Case("impossible ActivatedDate", ("activated_date_valid",),
         {"activated_date_valid": ("ActivatedDate", "'2026-02-30T10:00:00.000+0000'", "not a valid dateTime")},
         {"ActivatedDate": "2026-02-30T10:00:00.000+0000"}),
    Case("missing ActivatedDate", ("activated_date_valid",), {"activated_date_valid": ("ActivatedDate is missing",)},
         {"ActivatedDate": None}),
    Case("EffectiveDate not a date", ("effective_date_valid",),
         {"effective_date_valid": ("EffectiveDate", "'15/01/2026'", "not a valid date")}, {"EffectiveDate": "15/01/2026"}),
    Case("EffectiveDate before 2000", ("effective_date_valid",),
         {"effective_date_valid": ("EffectiveDate 1999-12-31", "before 2000-01-01")}, {"EffectiveDate": "1999-12-31"}),
    Case("EffectiveDate over a year ahead", ("effective_date_valid",),
         {"effective_date_valid": ("EffectiveDate 2027-03-02", "365 days in the future")}, {"EffectiveDate": "2027-03-02"}),
    Case("missing EffectiveDate", ("effective_date_valid",), {"effective_date_valid": ("EffectiveDate is missing",)},
         {"EffectiveDate": None}),
    # A negative total cannot equal the (positive) sum of the products as well.
    Case("negative TotalAmount", ("total_non_negative", "total_matches_products"),
         {"total_non_negative": ("TotalAmount -150.0 is negative",), "total_matches_products": ("TotalAmount -150.0", "150.0")},
         {"TotalAmount": -150.0}),
    Case("missing TotalAmount", ("total_non_negative", "total_matches_products"),
         {"total_non_negative": ("TotalAmount is missing",), "total_matches_products": ("TotalAmount None",)},
         {"TotalAmount": None}),
    Case("TotalAmount off the products", ("total_matches_products",),
         {"total_matches_products": ("TotalAmount 999.0", "TotalPrice (150.0)")}, {"TotalAmount": 999.0}),
    Case("no products", ("has_products",), {"has_products": ("no products",)}, {"TotalAmount": 0.0}, items=()),
    Case("zero quantity", ("quantities_positive",), {"quantities_positive": ("OrderItem", "Quantity 0.0", "not greater than 0")},
         items=((1.0, 100.0), (0.0, 50.0))),
    Case("missing quantity", ("quantities_positive", "total_matches_products"),
         {"quantities_positive": ("Quantity None",)}, items=((1.0, 100.0), (None, 50.0))),
    Case("negative unit price", ("unit_prices_non_negative",),
         {"unit_prices_non_negative": ("OrderItem", "UnitPrice -10.0", "negative")}, items=((1.0, 100.0), (1.0, -10.0))),
    Case("shipping address without city", ("service_address_complete",),
         {"service_address_complete": ("from Shipping", "ShippingCity")}, {"ShippingCity": "  "}),
    Case("billing fallback without postal code", ("service_address_complete",),
         {"service_address_complete": ("from Billing", "BillingPostalCode")}, {**NO_SHIPPING, "BillingPostalCode": None}),
    Case("unknown shipping country", ("country_resolvable",),
         {"country_resolvable": ("ShippingCountry 'Atlantis'", "not a recognisable country")}, {"ShippingCountry": "Atlantis"}),
    Case("unknown billing country", ("country_resolvable",),
         {"country_resolvable": ("BillingCountry 'Narnia'",)}, {"BillingCountry": "Narnia"}),
    Case("PoNumber too long", ("field_lengths",),
         {"field_lengths": ("PoNumber is 81 characters", "the 80 allowed")}, {"PoNumber": "P" * 81}),
    Case("Account.Name too long", ("field_lengths",),
         {"field_lengths": ("Account.Name is 256 characters", "the 255 allowed")}, {"Account.Name": "A" * 256}),
    Case("unit price with more decimals than the warehouse keeps", ("amounts_storable",),
         {"amounts_storable": ("UnitPrice of OrderItem", "100.005", "more than 2 decimals")}, items=((1.0, 100.005),),
         overrides={"TotalAmount": 100.005}),
    # stored too (external_order_items.list_price, products.list_price): held to the same promise
    Case("list price with more decimals than the warehouse keeps", ("amounts_storable",),
         {"amounts_storable": ("ListPrice of OrderItem", "100.005", "more than 2 decimals")}, first_item={"ListPrice": 100.005}),
    Case("price book price too large for the warehouse", ("amounts_storable",),
         {"amounts_storable": ("PricebookEntry.UnitPrice of OrderItem", "1e+17", "too large")},
         first_item={"PricebookEntry.UnitPrice": 1e17}),
    Case("total too large for the warehouse", ("amounts_storable", "total_matches_products"),
         {"amounts_storable": ("TotalAmount 1e+17", "too large")}, {"TotalAmount": 1e17}),
    Case("several problems at once", ("status_activated", "activated_date_valid", "country_resolvable"),
         {"status_activated": ("'Draft'",), "activated_date_valid": ("ActivatedDate is missing",),
          "country_resolvable": ("ShippingCountry 'Atlantis'",)},
         {"StatusCode": "Draft", "ActivatedDate": None, "ShippingCountry": "Atlantis"}),
]
FIRST_CASE = 100  # order numbers of the crafted orders start here
VALID = 1
DUPLICATES = (2, 3)  # two orders sharing one OrderNumber


def crafted(index: int, case: Case) -> tuple[dict, list[dict]]:
    n = FIRST_CASE + index
    items = None if case.items is None else [staged_item(n, k, q, p) for k, (q, p) in enumerate(case.items, start=1)]
    order, items = staged_order(n, items, **case.overrides)
    if case.first_item:
        items[0].update(case.first_item)
    return order, items


@pytest.fixture(scope="module")
def validator() -> OrderValidator:
    order_limits, item_limits = text_limits(ImportConfig())
    return OrderValidator(order_limits, today=TODAY, item_limits=item_limits)


def test_the_fields_the_config_points_at_are_held_to_their_columns_lengths():
    """``customer_id_field`` and ``service_number_field`` may name longer fields than the defaults
    (and be spelt in another case than the org's answers): their values are checked against the
    warehouse's customer_id and service_number columns (40 characters)."""
    order_limits, item_limits = text_limits(parse_config({"customer_id_field": "site", "service_number_field": "Description"}))
    checker = OrderValidator(order_limits, today=TODAY, item_limits=item_limits)
    order, items = staged_order(1, None, **{"Account.Site": "C" * 41, "Account.Parent.Site": "P" * 40, "Account.Customer_ID__c": "x" * 99})
    items[0]["Description"] = "S" * 41

    found = checker.overlong(order, items)

    # the default Customer_ID__c is not held to the column once another field is configured
    assert found == [("Account.site", 41, 40), (f"OrderItem {items[0]['Id']} Description", 41, 40)]


@pytest.fixture(scope="module")
def chunk() -> list[tuple[dict, list[dict]]]:
    duplicates = [staged_order(n, OrderNumber="DUP-0001") for n in DUPLICATES]
    return [staged_order(VALID), *duplicates, *(crafted(i, case) for i, case in enumerate(CASES))]


@pytest.fixture(scope="module")
def outcome(validator: OrderValidator, chunk: list[tuple[dict, list[dict]]]) -> ChunkResult:
    return validator.validate(chunk)


def result_key(chunk: list[tuple[dict, list[dict]]], index: int) -> str:
    """How the result names an order: its Id, or its row when it has none."""
    return chunk[index][0]["Id"] or f"(row {index})"


def test_every_check_has_a_crafted_order():
    # (found across orders, and by the extract: tested on their own below)
    found_apart = {"order_number_unique", "hierarchy_storable", "keys_not_card_numbers"}
    assert {check for case in CASES for check in case.checks} | found_apart == set(CHECKS)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.name for case in CASES])
def test_each_check_names_the_field_and_value(outcome: ChunkResult, chunk, index: int):
    case = CASES[index]
    key = result_key(chunk, 3 + index)
    assert sorted(outcome.failures.get(key, [])) == sorted(case.checks)
    for check, fragments in case.fragments.items():
        message = outcome.details[key][check]
        for fragment in fragments:
            assert fragment in message, f"{check}: {message!r} lacks {fragment!r}"


def test_the_valid_order_passes_every_check(outcome: ChunkResult, chunk):
    assert chunk[0][0]["Id"] not in outcome.failures


def test_a_valid_order_alone_passes_every_check(validator: OrderValidator):
    assert validator.validate([staged_order(VALID)]) == ChunkResult()


def test_orders_sharing_an_order_number_in_one_chunk_both_fail(outcome: ChunkResult, chunk):
    for index in (1, 2):
        key = result_key(chunk, index)
        assert outcome.failures[key] == ["order_number_unique"]
        assert outcome.details[key]["order_number_unique"] == "OrderNumber 'DUP-0001' appears on more than one order"


def test_an_empty_chunk_has_no_failures(validator: OrderValidator):
    assert validator.validate([]) == ChunkResult()


def test_duplicate_order_numbers_across_chunks():
    seen: set[str] = set()
    first = [staged_order(1), staged_order(2)]
    second = [staged_order(3, OrderNumber="00000001"), staged_order(4, OrderNumber=None), staged_order(5)]
    third = [staged_order(6, OrderNumber="00000005"), staged_order(7, OrderNumber="00000005")]

    assert duplicate_order_numbers(first, seen) == []
    assert duplicate_order_numbers(second, seen) == [sf_id("801", 3)]
    assert duplicate_order_numbers(third, seen) == [sf_id("801", 6), sf_id("801", 7)]
    assert seen == {"00000001", "00000002", "00000005"}


# ---------------------------------------------------------------------------------------
# The validate stage over a warehouse
# ---------------------------------------------------------------------------------------


@pytest.fixture
def engine(sqlite_engine: sa.Engine) -> sa.Engine:
    create_all(sqlite_engine)
    return sqlite_engine


def stage(engine: sa.Engine, run_id: str, orders: list[tuple[dict, list[dict]]]) -> None:
    with engine.begin() as conn:
        stage_orders(conn, run_id, [order for order, _ in orders])
        stage_items(conn, run_id, [item for _, items in orders for item in items])


def rows(engine: sa.Engine, table: sa.Table, *where: Any) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table).where(*where)).mappings()]


def staged_status(engine: sa.Engine, run_id: str) -> dict[str, tuple[str, Any]]:
    t = tables().stg_orders
    return {r["sf_order_id"]: (r["status"], r["failed_checks"]) for r in rows(engine, t, t.c.run_id == run_id)}


def test_validate_run_quarantines_the_invalid_and_marks_staging(engine: sa.Engine):
    orders = [
        staged_order(1),
        staged_order(2, StatusCode="Draft", PoNumber="P" * 81),
        staged_order(3),
        staged_order(4),
    ]
    stage(engine, "run-1", orders)

    summary = validate_run(engine, "run-1", parse_config({"max_invalid_share": 0.5}), today=TODAY)

    assert summary.as_dict() == {
        "checked": 4,
        "valid": 3,
        "invalid": 1,
        "invalid_share": 0.25,
        "superseded": 0,
        "failures_by_check": {"field_lengths": 1, "status_activated": 1},
    }
    [quarantined] = rows(engine, tables().quarantined_orders)
    assert (quarantined["run_id"], quarantined["sf_order_id"]) == ("run-1", sf_id("801", 2))
    assert (quarantined["order_number"], quarantined["account_name"]) == ("00000002", "Account 2")
    assert sorted(quarantined["failed_checks"]) == ["field_lengths", "status_activated"]
    assert quarantined["details"]["status_activated"] == "StatusCode is 'Draft', expected 'Activated'"
    assert quarantined["details"]["field_lengths"] == "PoNumber is 81 characters, more than the 80 allowed"
    assert quarantined["released_at"] is None
    status = staged_status(engine, "run-1")
    assert status[sf_id("801", 2)][0] == "invalid"
    assert sorted(status[sf_id("801", 2)][1]) == ["field_lengths", "status_activated"]
    assert {status[sf_id("801", n)] for n in (1, 3, 4)} == {("valid", None)}


def test_validate_run_quarantines_an_order_number_seen_in_an_earlier_chunk(engine: sa.Engine):
    # Chunks hold 100 orders, ordered by Id: the last order repeats the first one's number.
    orders = [staged_order(n) for n in range(1, 101)] + [staged_order(101, OrderNumber="00000001")]
    stage(engine, "run-1", orders)

    summary = validate_run(engine, "run-1", parse_config({"chunk_size": 100}), today=TODAY, batch_size=100)

    assert (summary.checked, summary.valid, summary.invalid) == (101, 100, 1)
    assert summary.failures_by_check == {"order_number_unique": 1}
    [quarantined] = rows(engine, tables().quarantined_orders)
    assert quarantined["sf_order_id"] == sf_id("801", 101)
    assert quarantined["failed_checks"] == ["order_number_unique"]
    assert quarantined["details"] == {"order_number_unique": "OrderNumber '00000001' appears on more than one order"}
    status = staged_status(engine, "run-1")
    assert status[sf_id("801", 101)] == ("invalid", ["order_number_unique"])
    assert status[sf_id("801", 1)] == ("valid", None)


def test_too_many_invalid_orders_stop_the_run_before_anything_is_loaded(engine: sa.Engine):
    orders = [staged_order(1), staged_order(2, AccountId=None), staged_order(3, TotalAmount=1.0), staged_order(4)]
    stage(engine, "run-1", orders)

    with pytest.raises(InvalidShareExceeded) as raised:
        validate_run(engine, "run-1", parse_config({"max_invalid_share": 0.25, "invalid_share_min_orders": 4}), today=TODAY)

    message = str(raised.value)
    assert "2 of 4 orders (50%)" in message and "max_invalid_share 25%" in message
    assert "nothing was loaded" in message and "quarantined_orders" in message
    t = tables()
    assert rows(engine, t.external_orders) == []
    # The reasons stay visible for whoever looks into the stopped run.
    assert {r["sf_order_id"] for r in rows(engine, t.quarantined_orders)} == {sf_id("801", 2), sf_id("801", 3)}
    # Only their card fields are queued to be X-ed out (card_masks): nothing else is written back.
    queued = rows(engine, t.writeback_outbox)
    assert {(r["sf_record_id"], r["action"]) for r in queued} == {(sf_id("801", 2), "x_out_card"), (sf_id("801", 3), "x_out_card")}
    assert all("Status" not in r["fields"] for r in queued)


@pytest.mark.parametrize("size", [1, 3])
def test_a_small_window_with_invalid_orders_quarantines_them_instead_of_failing_the_run(engine: sa.Engine, size: int):
    """Below invalid_share_min_orders (default 20) the share is not applied: 1 of 1 is no broken org."""
    orders = [staged_order(1, AccountId=None)] + [staged_order(n) for n in range(2, size + 1)]
    stage(engine, "run-1", orders)

    summary = validate_run(engine, "run-1", parse_config({}), today=TODAY)

    assert (summary.checked, summary.invalid) == (size, 1)
    assert {r["sf_order_id"] for r in rows(engine, tables().quarantined_orders)} == {sf_id("801", 1)}


def test_the_share_applies_from_invalid_share_min_orders_on(engine: sa.Engine):
    orders = [staged_order(n, AccountId=None) for n in (1, 2)] + [staged_order(n) for n in range(3, 6)]
    stage(engine, "run-1", orders)
    with pytest.raises(InvalidShareExceeded, match="2 of 5 orders"):
        validate_run(engine, "run-1", parse_config({"invalid_share_min_orders": 5}), today=TODAY)


def test_an_activated_date_in_the_future_is_quarantined_naming_it(engine: sa.Engine):
    stage(engine, "run-1", [staged_order(1), staged_order(2, ActivatedDate="2031-01-01T00:00:00.000+0000")])

    summary = validate_run(engine, "run-1", parse_config({}), today=TODAY)

    assert summary.failures_by_check == {"activated_date_valid": 1}
    [quarantined] = rows(engine, tables().quarantined_orders)
    assert quarantined["details"] == {"activated_date_valid": "ActivatedDate '2031-01-01T00:00:00.000+0000' is in the future"}


def test_an_order_number_an_imported_order_already_has_is_quarantined_in_a_later_run(engine: sa.Engine, make_transformed):
    from salesforce_orders.load import load_run

    load_run(engine, "run-1", [[make_transformed(1)]], watermark=None)
    taken = make_transformed(1).order.order_number
    stage(engine, "run-2", [staged_order(5, OrderNumber=taken), staged_order(6)])

    summary = validate_run(engine, "run-2", parse_config({}), today=TODAY)

    assert summary.failures_by_check == {"order_number_unique": 1}
    [quarantined] = rows(engine, tables().quarantined_orders)
    assert quarantined["sf_order_id"] == sf_id("801", 5)
    # the imported order itself, staged again, is no duplicate of itself
    stage(engine, "run-3", [staged_order(1, OrderNumber=taken)])
    assert validate_run(engine, "run-3", parse_config({}), today=TODAY).invalid == 0


def test_orders_under_an_account_the_extract_could_not_store_are_quarantined_naming_it(engine: sa.Engine):
    """The extract holds back an Account of the hierarchy the warehouse cannot store, with every
    Account below it (hierarchy.held_back): the orders whose Account or its parent is held are
    quarantined with the extract's reason, so none loads pointing at a customer that is not there."""
    parent, other_parent = sf_id("001", 900), sf_id("001", 901)
    reason = f"Account {parent} Website is 57 characters, more than the 40 allowed"
    under_parent = staged_order(1, **{"Account.ParentId": parent})
    held_itself = staged_order(2)  # its own Account is below a held one (read as a parent of another)
    free = staged_order(3, **{"Account.ParentId": other_parent})
    stage(engine, "run-1", [under_parent, held_itself, free])
    held = {parent: reason, held_itself[0]["AccountId"]: reason}

    summary = validate_run(engine, "run-1", parse_config({}), today=TODAY, held_accounts=held)

    assert summary.failures_by_check == {"hierarchy_storable": 2}
    details = {r["sf_order_id"]: r["details"] for r in rows(engine, tables().quarantined_orders)}
    assert details == {
        order["Id"]: {"hierarchy_storable": f"the order's Account {order['AccountId']} is in a hierarchy the warehouse cannot store: {reason}"}
        for order, _ in (under_parent, held_itself)
    }
    assert staged_status(engine, "run-1")[free[0]["Id"]] == ("valid", None)


@pytest.mark.parametrize("double_only", [False, True])
def test_a_chunk_s_amounts_fit_when_every_distinct_value_does(double_only: bool):
    from decimal import Decimal

    from salesforce_orders.validate import _amounts_fit

    fine = (Decimal("1.50"), Decimal("1.5"), None, 3, Decimal("NaN"), Decimal("-0"))
    assert _amounts_fit(double_only, fine, (Decimal("9999999999999999.99"),)) is not double_only
    assert _amounts_fit(double_only, fine) is True
    assert _amounts_fit(double_only, fine) is True  # (remembered)
    assert _amounts_fit(double_only, fine, (Decimal("100.005"),)) is False  # three decimals
    assert _amounts_fit(double_only, (10**16,), fine) is False  # too large, as an int
    assert _amounts_fit(double_only, (Decimal("1E+16"),)) is False  # too large, written with an exponent
    assert _amounts_fit(double_only, (1.5,)) is False  # a float: checked where it occurs


def test_an_order_whose_customer_id_or_service_number_held_a_card_number_is_quarantined_naming_the_field(engine: sa.Engine):
    """The extract masks a card number typed as an Account's customer id (``[card ending 1111]``):
    as the customers' key it would make Accounts whose ids end alike one customer (the second
    one's orders refused as a duplicate key, a runbook step then deleting the first one's row); a
    product's service number keys its service likewise (two services of the order made one). The
    order of such an Account, of an Account under such a parent, or with such a service number is
    quarantined naming the record and the field, never the value; a card number elsewhere is not a key."""
    from salesforce_orders.model import CARD_DATA_MASKED

    own = staged_order(1, **{"Account.Customer_ID__c": "[card ending 1111]", CARD_DATA_MASKED: ["Account.Customer_ID__c"]})
    under = staged_order(
        2, **{"Account.Parent.Customer_ID__c": "[card ending 1111]", CARD_DATA_MASKED: ["Account.Parent.Customer_ID__c"]}
    )
    elsewhere = staged_order(3, **{"Description": "paid by [card ending 1111]", CARD_DATA_MASKED: ["Description"]})
    service = staged_item(4, 1, Service_Number__c="[card ending 1111]", **{CARD_DATA_MASKED: ["Service_Number__c"]})
    described = staged_item(5, 1, Description="serial [card ending 1111]", **{CARD_DATA_MASKED: ["Description"]})
    with_service, with_description = staged_order(4, [service]), staged_order(5, [described])
    stage(engine, "run-1", [own, under, elsewhere, with_service, with_description])

    summary = validate_run(engine, "run-1", parse_config({}), today=TODAY)

    assert summary.failures_by_check == {"keys_not_card_numbers": 3}
    details = {r["sf_order_id"]: r["details"] for r in rows(engine, tables().quarantined_orders)}
    assert set(details) == {own[0]["Id"], under[0]["Id"], with_service[0]["Id"]}
    assert details[with_service[0]["Id"]]["keys_not_card_numbers"].startswith(
        f"OrderItem {service['Id']} Service_Number__c held a card number (masked to its last four digits)"
    )
    assert details[own[0]["Id"]]["keys_not_card_numbers"].startswith(
        "Account.Customer_ID__c held a card number (masked to its last four digits)"
    )
    assert details[under[0]["Id"]]["keys_not_card_numbers"].startswith("Account.Parent.Customer_ID__c held a card number")
    assert "1111" not in str(details)
    assert staged_status(engine, "run-1")[elsewhere[0]["Id"]] == ("valid", None)
    assert staged_status(engine, "run-1")[with_description[0]["Id"]] == ("valid", None)


def test_a_text_longer_than_its_column_only_once_its_card_number_was_masked_says_so(engine: sa.Engine):
    """``[card ending 1111]`` is longer than the 13 to 19 digits it replaces: a PO number of 80
    characters in Salesforce (its limit there too) is 82 once masked. The message says why, so
    nobody looks for an over-long value in Salesforce, and what to do."""
    from salesforce_orders.model import CARD_DATA_MASKED

    masked = staged_order(1, PoNumber="x" * 63 + " [card ending 1111]", **{CARD_DATA_MASKED: ["PoNumber"]})
    stage(engine, "run-1", [masked])

    validate_run(engine, "run-1", parse_config({}), today=TODAY)

    (row,) = rows(engine, tables().quarantined_orders)
    assert row["details"]["field_lengths"] == (
        "PoNumber is 82 characters, more than the 80 allowed once the card data in it was masked: remove the card data in Salesforce"
    )

