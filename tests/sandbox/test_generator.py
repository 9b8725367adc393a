"""The dataset generator: deterministic, sized by orders, and holding what a real org holds."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from salesforce_sandbox.generator import (
    DIRTY_KINDS,
    FREE_TEXT_COUNTRIES,
    SPECIAL_ACCOUNT_NAMES,
    GeneratorOptions,
    generate,
    generate_with,
)
from salesforce_sandbox.schema import build_schema
from salesforce_sandbox.store import Store, coerce_value

NOW = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
ORDERS = 800
TWO_YEARS_AGO = (NOW - timedelta(days=730)).strftime("%Y-%m-%dT%H:%M:%S")


def fresh_store() -> Store:
    return Store(clock=lambda: NOW)


def rows(store: Store, sobject: str) -> list[dict]:
    cursor = store.conn.execute(f'SELECT * FROM "{sobject}" ORDER BY Id')
    names = [c[0] for c in cursor.description]
    return [dict(zip(names, values, strict=True)) for values in cursor]


def dump(store: Store) -> dict[str, list[dict]]:
    return {name: rows(store, name) for name in store.schema.objects}


@pytest.fixture(scope="module")
def org() -> tuple[Store, dict[str, int]]:
    store = fresh_store()
    return store, generate(store, orders=ORDERS, seed=7, now=NOW)


@pytest.fixture(scope="module")
def orders(org: tuple[Store, dict[str, int]]) -> list[dict]:
    return rows(org[0], "Order")


@pytest.fixture(scope="module")
def items_by_order(org: tuple[Store, dict[str, int]]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for item in rows(org[0], "OrderItem"):
        grouped[item["OrderId"]].append(item)
    return grouped


@pytest.fixture(scope="module")
def accounts(org: tuple[Store, dict[str, int]]) -> dict[str, dict]:
    return {a["Id"]: a for a in rows(org[0], "Account")}


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number]
    checksum = sum(digits[-1::-2]) + sum(sum(divmod(2 * d, 10)) for d in digits[-2::-2])
    return checksum % 10 == 0


# -- determinism and size ----------------------------------------------------------------------


def test_same_seed_and_now_give_identical_rows() -> None:
    first, second = fresh_store(), fresh_store()
    generate(first, orders=300, seed=11, now=NOW)
    generate(second, orders=300, seed=11, now=NOW)
    assert dump(first) == dump(second)


def test_a_different_seed_gives_different_rows() -> None:
    first, second = fresh_store(), fresh_store()
    generate(first, orders=300, seed=11, now=NOW)
    generate(second, orders=300, seed=12, now=NOW)
    assert rows(first, "Order") != rows(second, "Order")
    assert rows(first, "Account") != rows(second, "Account")


def test_options_as_one_value_give_the_same_org() -> None:
    first, second = fresh_store(), fresh_store()
    generate(first, orders=120, seed=3, now=NOW, dirty_share=0.2)
    generate_with(second, GeneratorOptions(orders=120, seed=3, now=NOW, dirty_share=0.2))
    assert dump(first) == dump(second)


def test_counts_match_the_store_and_the_requested_size(org: tuple[Store, dict[str, int]]) -> None:
    store, stats = org
    assert stats == {
        name: store.count(name) - (name == "User") for name in stats
    }  # plus the integration user
    assert stats["Order"] == ORDERS
    assert stats["Account"] == ORDERS // 4
    assert stats["Product2"] == stats["PricebookEntry"] == 30
    assert stats["Pricebook2"] == 1
    assert 1.5 * stats["Account"] <= stats["Contact"] <= 2.5 * stats["Account"]
    assert 2.8 * ORDERS <= stats["OrderItem"] <= 3.3 * ORDERS


def test_activated_share_and_items_per_order_are_honoured() -> None:
    store = fresh_store()
    generate(store, orders=1_000, seed=5, now=NOW, activated_share=0.5, items_per_order=1.5)
    activated = store.conn.execute(
        "SELECT COUNT(*) FROM \"Order\" WHERE StatusCode = 'Activated'"
    ).fetchone()[0]
    assert 450 <= activated <= 550
    assert 1_400 <= store.count("OrderItem") <= 1_800


def test_only_an_empty_org_is_filled(org: tuple[Store, dict[str, int]]) -> None:
    with pytest.raises(ValueError, match="empty org"):
        generate(org[0], orders=10, now=NOW)


@pytest.mark.parametrize(
    "options", [{"orders": -1}, {"dirty_share": 1.5}, {"activated_share": -0.1}, {"items_per_order": -2}]
)
def test_bad_options_are_refused(options: dict) -> None:
    with pytest.raises(ValueError):
        GeneratorOptions(**options)


def test_no_orders_gives_just_the_catalogue_and_the_currencies() -> None:
    store = fresh_store()
    stats = generate(store, orders=0, now=NOW)
    assert stats == {
        "User": 3, "Pricebook2": 1, "Product2": 30, "PricebookEntry": 30,
        "Account": 0, "Contact": 0, "Order": 0, "OrderItem": 0,
        "CurrencyType": 4, "DatedConversionRate": 3 * 16, "Organization": 1,
    }  # fmt: skip


def test_an_org_without_multi_currency_has_no_currency_fields_nor_rates_and_one_currency() -> None:
    """The same org, less multi-currency: orders without CurrencyIsoCode, no rate objects, and the
    org's currency on its Organization record. The rest of the data is the multi-currency org's."""
    single = Store(schema=build_schema(multi_currency=False), clock=lambda: NOW)
    stats = generate(single, orders=40, now=NOW)
    assert stats["CurrencyType"] == stats["DatedConversionRate"] == 0 and stats["Order"] > 0
    assert single.schema.get("CurrencyType") is None and single.schema.get("Order").field("CurrencyIsoCode") is None
    assert single.conn.execute('SELECT DefaultCurrencyIsoCode FROM "Organization"').fetchall() == [("USD",)]
    multi = fresh_store()
    generate(multi, orders=40, now=NOW)
    columns = "Id, OrderNumber, AccountId, TotalAmount, Status, SystemModstamp"
    assert single.conn.execute(f'SELECT {columns} FROM "Order" ORDER BY Id').fetchall() == multi.conn.execute(
        f'SELECT {columns} FROM "Order" ORDER BY Id'
    ).fetchall()


def test_currencies_have_one_corporate_and_dated_rates_that_tile_time() -> None:
    store = fresh_store()
    generate(store, orders=0, now=NOW)
    corporate = store.conn.execute("SELECT IsoCode, ConversionRate FROM CurrencyType WHERE IsCorporate = 1").fetchall()
    assert corporate == [("USD", 1.0)]
    for (code,) in store.conn.execute("SELECT IsoCode FROM CurrencyType WHERE IsCorporate = 0").fetchall():
        periods = store.conn.execute(
            "SELECT StartDate, NextStartDate, ConversionRate FROM DatedConversionRate WHERE IsoCode = ? ORDER BY StartDate", (code,)
        ).fetchall()
        assert periods[0][0] == "0001-01-01" and periods[-1][1] == "9999-12-31"
        assert all(a[1] == b[0] for a, b in zip(periods, periods[1:], strict=False))  # no gap, no overlap
        assert len({rate for _, _, rate in periods}) > 1


def test_twenty_thousand_orders() -> None:
    store = fresh_store()
    stats = generate(store, orders=20_000, seed=1, now=NOW)
    assert store.count("Order") == stats["Order"] == 20_000
    assert store.count("Account") == stats["Account"] == 5_000
    assert store.count("OrderItem") == stats["OrderItem"] > 55_000
    numbers = store.conn.execute('SELECT MIN(OrderNumber), MAX(OrderNumber) FROM "Order"').fetchone()
    assert numbers == ("00000100", "00020099")


# -- what the org holds ------------------------------------------------------------------------


def test_every_value_is_one_salesforce_accepts(org: tuple[Store, dict[str, int]]) -> None:
    store = org[0]
    for name, obj in store.schema.objects.items():
        for record in rows(store, name):
            for field in obj.fields:
                value = record[field.name]
                if value is not None and field.type not in ("boolean", "id", "reference"):
                    assert coerce_value(field, value) == value, (name, field.name, value)


def test_references_point_at_existing_records(org: tuple[Store, dict[str, int]]) -> None:
    store = org[0]
    for name, obj in store.schema.objects.items():
        for field in obj.fields:
            if field.type != "reference":
                continue
            for target in field.reference_to:
                dangling = store.conn.execute(
                    f'SELECT COUNT(*) FROM "{name}" r WHERE r."{field.name}" LIKE ? '
                    f'AND NOT EXISTS (SELECT 1 FROM "{target}" t WHERE t.Id = r."{field.name}")',
                    (store.schema.get(target).key_prefix + "%",),
                ).fetchone()[0]
                assert dangling == 0, (name, field.name)


def test_orders_are_numbered_in_creation_order(orders: list[dict]) -> None:
    by_number = sorted(orders, key=lambda o: o["OrderNumber"])
    assert [o["CreatedDate"] for o in by_number] == sorted(o["CreatedDate"] for o in orders)
    assert len({o["OrderNumber"] for o in orders}) == ORDERS


def test_stamps_are_ordered_and_in_the_past(org: tuple[Store, dict[str, int]]) -> None:
    store = org[0]
    now = NOW.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    for name in ("Account", "Contact", "Order", "OrderItem"):
        for record in rows(store, name):
            assert record["CreatedDate"] <= record["LastModifiedDate"] <= record["SystemModstamp"] <= now
    assert any(o["SystemModstamp"] > o["LastModifiedDate"] for o in rows(store, "Order"))


def test_draft_and_activated_orders(orders: list[dict], items_by_order: dict[str, list[dict]]) -> None:
    statuses = Counter((o["Status"], o["StatusCode"]) for o in orders)
    assert set(statuses) == {("Draft", "Draft"), ("Activated", "Activated")}
    assert 0.8 <= statuses[("Activated", "Activated")] / ORDERS <= 0.9
    for order in orders:
        if order["StatusCode"] == "Activated":
            assert items_by_order[order["Id"]], order["OrderNumber"]
            assert order["CreatedDate"] < order["ActivatedDate"] <= order["LastModifiedDate"]
            assert order["ActivatedById"]
        else:
            assert order["ActivatedDate"] is None


def test_some_orders_were_activated_more_than_two_years_ago(orders: list[dict]) -> None:
    old = [o for o in orders if o["ActivatedDate"] and o["ActivatedDate"] < TWO_YEARS_AGO]
    assert 0.05 * ORDERS <= len(old) <= 0.3 * ORDERS


def test_effective_date_is_near_the_activation(orders: list[dict]) -> None:
    activated = [o for o in orders if o["ActivatedDate"] and o["EffectiveDate"] <= NOW.date().isoformat()]
    for order in activated:
        gap = (
            datetime.fromisoformat(order["EffectiveDate"]).date()
            - datetime.fromisoformat(order["ActivatedDate"]).date()
        )
        assert abs(gap.days) <= 4, order["OrderNumber"]


def test_totals_are_consistent_with_items(orders: list[dict], items_by_order: dict[str, list[dict]]) -> None:
    for order in orders:
        items = items_by_order.get(order["Id"], [])
        assert order["TotalAmount"] == round(sum(i["TotalPrice"] for i in items), 2)
        for item in items:
            assert item["TotalPrice"] == round(item["Quantity"] * item["UnitPrice"], 2)
            assert item["ServiceDate"] == order["EffectiveDate"]


def test_zero_total_orders_have_products(orders: list[dict], items_by_order: dict[str, list[dict]]) -> None:
    zero = [o for o in orders if o["TotalAmount"] == 0 and items_by_order.get(o["Id"])]
    assert zero
    assert all(i["UnitPrice"] == 0 for o in zero for i in items_by_order[o["Id"]])


def test_account_hierarchies_up_to_three_levels(accounts: dict[str, dict]) -> None:
    def depth(account: dict) -> int:
        return 1 if account["ParentId"] is None else 1 + depth(accounts[account["ParentId"]])

    depths = Counter(depth(a) for a in accounts.values())
    assert depths[2] >= 2 and depths[3] >= 1 and max(depths) == 3
    child = next(a for a in accounts.values() if a["ParentId"])
    assert child["Name"].startswith(accounts[child["ParentId"]]["Name"] + " - ")


def test_multi_location_accounts(orders: list[dict]) -> None:
    addresses: dict[str, set] = defaultdict(set)
    for order in orders:
        if order["ShippingStreet"]:
            addresses[order["AccountId"]].add((order["ShippingStreet"], order["ShippingCity"]))
    assert any(len(places) >= 2 for places in addresses.values())


def test_orders_and_accounts_without_shipping(orders: list[dict], accounts: dict[str, dict]) -> None:
    shipping = ("ShippingStreet", "ShippingCity", "ShippingState", "ShippingPostalCode", "ShippingCountry")
    without = [o for o in orders if all(o[f] is None for f in shipping)]
    assert 0.1 * ORDERS <= len(without) <= 0.5 * ORDERS
    assert all(o["BillingStreet"] for o in without)  # billing to fall back on
    assert any(a["ShippingStreet"] is None for a in accounts.values())
    assert any(a["ShippingStreet"] and a["ShippingStreet"] != a["BillingStreet"] for a in accounts.values())


def test_customer_ids_on_some_accounts(accounts: dict[str, dict]) -> None:
    ids = [a["Customer_ID__c"] for a in accounts.values() if a["Customer_ID__c"]]
    assert 0.05 * len(accounts) <= len(ids) <= 0.3 * len(accounts)
    assert all(re.fullmatch(r"CUST-\d{6}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_contacts_belong_to_accounts(org: tuple[Store, dict[str, int]], accounts: dict[str, dict]) -> None:
    per_account = Counter(c["AccountId"] for c in rows(org[0], "Contact"))
    assert set(per_account) == set(accounts)


def test_products_in_the_standard_pricebook(org: tuple[Store, dict[str, int]]) -> None:
    store = org[0]
    (pricebook,) = rows(store, "Pricebook2")
    assert (pricebook["Name"], pricebook["IsStandard"]) == ("Standard Price Book", 1)
    products = rows(store, "Product2")
    assert all(p["ProductCode"] and p["Family"] for p in products)
    assert {e["Pricebook2Id"] for e in rows(store, "PricebookEntry")} == {pricebook["Id"]}


def test_order_fields_filled_as_in_an_org(orders: list[dict]) -> None:
    assert {o["CurrencyIsoCode"] for o in orders} >= {"USD", "EUR", "GBP", "CAD"}
    assert sum(o["PoNumber"] is not None for o in orders) > 0.4 * ORDERS
    assert sum(o["Type"] is not None for o in orders) > 0.8 * ORDERS
    assert any(o["Description"] and "\n" in o["Description"] for o in orders)


def test_card_fields(orders: list[dict]) -> None:
    with_card = [o for o in orders if o["Credit_Card_Number__c"]]
    assert 0.7 * ORDERS <= len(with_card) <= 0.9 * ORDERS
    for order in with_card:
        assert re.fullmatch(r"\d{16}", order["Credit_Card_Number__c"]) and luhn_valid(
            order["Credit_Card_Number__c"]
        )
        assert re.fullmatch(r"\d{3}", order["Credit_Card_CVV__c"])
        assert 1 <= int(order["Credit_Card_Expiration_Month__c"]) <= 12
        assert len(order["Credit_Card_Expiration_Month__c"]) == 2
        assert re.fullmatch(r"20\d{2}", order["Credit_Card_Expiration_Year__c"])


def test_service_numbers_group_products(items_by_order: dict[str, list[dict]]) -> None:
    shared = 0
    for items in items_by_order.values():
        counts = Counter(i["Service_Number__c"] for i in items if i["Service_Number__c"])
        shared += sum(1 for n in counts.values() if n >= 2)
        assert all(n >= 2 for n in counts.values())  # a service number is always shared
    numbers = {i["Service_Number__c"] for items in items_by_order.values() for i in items}
    assert shared > 0.1 * ORDERS
    assert None in numbers
    assert any(n and re.fullmatch(r"555-\d{4}", n) for n in numbers)
    assert any(n and not n.startswith("555-") for n in numbers)


def test_names_that_break_naive_code(accounts: dict[str, dict]) -> None:
    names = {a["Name"] for a in accounts.values()}
    assert set(SPECIAL_ACCOUNT_NAMES) <= names
    assert any("\\" in n for n in names) and any('"' in n for n in names) and any("'" in n for n in names)
    assert any(any("\u4e00" <= ch <= "\u9fff" for ch in n) for n in names)  # CJK
    assert any(any(ord(ch) > 0xFFFF for ch in n) for n in names)  # emoji


def test_dirty_orders_of_every_kind(orders: list[dict]) -> None:
    assert len(DIRTY_KINDS) * 3 <= round(ORDERS * 0.05)  # every kind appears several times

    def address(order: dict) -> str:
        return "Shipping" if order["ShippingStreet"] or order["ShippingCity"] else "Billing"

    def has(check: Callable[[dict, str], object]) -> bool:
        return any(check(o, address(o)) for o in orders)

    assert has(
        lambda o, p: (
            o[f"{p}Street"] and o[f"{p}Street"].strip() and o[f"{p}City"] is None and o[f"{p}PostalCode"]
        )
    )
    assert has(lambda o, p: o[f"{p}City"] and o[f"{p}PostalCode"] is None)
    assert has(lambda o, p: o[f"{p}Country"] in FREE_TEXT_COUNTRIES)
    far_future = (NOW + timedelta(days=5)).date().isoformat()  # beyond an activation's own +-3 days
    assert has(lambda o, p: o["EffectiveDate"] > far_future and o["StatusCode"] == "Activated")
    assert has(lambda o, p: o[f"{p}Street"] == "   ")
    assert has(lambda o, p: len(o[f"{p}Street"] or "") > 200)
    assert has(lambda o, p: o[f"{p}Street"] and o[f"{p}Street"].strip() and o[f"{p}Country"] is None)
    assert has(lambda o, p: o[f"{p}State"] and o[f"{p}State"].islower())


def test_dirty_share_scales_the_dirty_orders() -> None:
    clean, dirty = fresh_store(), fresh_store()
    generate(clean, orders=400, seed=2, now=NOW, dirty_share=0.0)
    generate(dirty, orders=400, seed=2, now=NOW, dirty_share=0.5)

    def blank_streets(store: Store) -> int:
        return store.conn.execute(
            "SELECT COUNT(*) FROM \"Order\" WHERE ShippingStreet = '   ' OR BillingStreet = '   '"
        ).fetchone()[0]

    assert blank_streets(clean) == 0
    assert blank_streets(dirty) >= 400 * 0.5 / len(DIRTY_KINDS) - 1


def test_the_generated_org_follows_the_stores_rules_afterwards() -> None:
    store = fresh_store()
    generate(store, orders=50, seed=4, now=NOW)
    activated = store.conn.execute(
        "SELECT Id FROM \"Order\" WHERE StatusCode = 'Activated' LIMIT 1"
    ).fetchone()[0]
    store.update("Order", activated, {"Status": "Imported"})
    assert store.get("Order", activated)["StatusCode"] == "Activated"
    account = store.get("Order", activated)["AccountId"]
    new_order = store.create(
        "Order", {"AccountId": account, "Status": "Draft", "EffectiveDate": "2026-06-01"}
    )
    assert store.get("Order", new_order)["OrderNumber"] == "00000150"


def test_a_reopened_generated_org_keeps_its_integration_user(tmp_path) -> None:
    store = Store(tmp_path / "org.db", clock=lambda: NOW)
    user_id = store.integration_user_id
    generate(store, orders=20, now=NOW)  # adds sales reps created long before the integration user
    store.conn.close()
    reopened = Store(tmp_path / "org.db", clock=lambda: NOW)
    assert reopened.integration_user_id == user_id
    assert reopened.count("User") == 4
