"""The sandbox's record store: ids, validation errors, Order rules, stamps, deletes, change tracking."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from salesforce_sandbox.errors import SalesforceError
from salesforce_sandbox.ids import checksum_suffix, is_valid_id, make_id, to_18
from salesforce_sandbox.schema import build_schema
from salesforce_sandbox.store import INTEGRATION_USERNAME, Store

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """A clock that stands still until told to move."""

    def __init__(self, now: datetime = START):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> Store:
    return Store(clock=clock)


class Org:
    """A minimal org built through the store's own create(): an account and a priced product."""

    def __init__(self, store: Store):
        self.store = store
        self.account = store.create("Account", {"Name": "Acme", "BillingCity": "Springfield"})
        self.pricebook = store.create("Pricebook2", {"Name": "Standard"})
        self.product = store.create("Product2", {"Name": "Widget", "ProductCode": "W-1"})
        self.entry = store.create(
            "PricebookEntry", {"Pricebook2Id": self.pricebook, "Product2Id": self.product, "UnitPrice": 10}
        )

    def order(self, **values: Any) -> str:
        return self.store.create(
            "Order",
            {
                "AccountId": self.account,
                "Status": "Draft",
                "EffectiveDate": "2026-03-01",
                "Pricebook2Id": self.pricebook,
                **values,
            },
        )

    def item(self, order_id: str, quantity: Any = 2, unit_price: Any = 9.99) -> str:
        return self.store.create(
            "OrderItem",
            {
                "OrderId": order_id,
                "PricebookEntryId": self.entry,
                "Quantity": quantity,
                "UnitPrice": unit_price,
            },
        )

    def activated_order(self) -> str:
        order_id = self.order()
        self.item(order_id)
        self.store.update("Order", order_id, {"Status": "Activated"})
        return order_id


@pytest.fixture
def org(store: Store) -> Org:
    return Org(store)


def fails(
    code: str,
    call: Any,
    *args: Any,
    status: int | None = None,
    fields: list[str] | None = None,
    **values: Any,
) -> SalesforceError:
    """Call ``call(*args, **values)``; it must raise a SalesforceError with this code (status, fields)."""
    with pytest.raises(SalesforceError) as caught:
        call(*args, **values)
    error = caught.value
    assert error.error_code == code, repr(error)
    if status is not None:
        assert error.status == status
    if fields is not None:
        assert error.fields == fields
    return error


def row(store: Store, sobject: str, record_id: str) -> dict:
    cursor = store.conn.execute(f'SELECT * FROM "{sobject}" WHERE Id = ?', (record_id,))
    return dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))


# -- ids -------------------------------------------------------------------------------------


def test_checksum_of_a_known_id() -> None:
    assert checksum_suffix("001A0000006Vm9r") == "IAC"
    assert to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"


def test_an_18_character_id_gets_its_case_back_from_the_suffix() -> None:
    assert to_18("001a0000006vm9riac") == "001A0000006Vm9rIAC"
    assert to_18("001A0000006VM9RIAC") == "001A0000006Vm9rIAC"


@pytest.mark.parametrize("value", ["001A0000006Vm9r", "001A0000006Vm9rIAC", make_id("801", 12345)])
def test_valid_ids(value: str) -> None:
    assert is_valid_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "001A0000006Vm9",  # 14 characters
        "001A0000006Vm9rIA",  # 17 characters
        "001A0000006Vm9r!AC",  # not alphanumeric
        "001A0000006Vm9rBAC",  # suffix marks the digit '0' as upper-case
        "001A0000006Vm9r9AC",  # '9' is not a suffix character
        "001Ä0000006Vm9rIAC",  # not ASCII
        None,
    ],
)
def test_invalid_ids(value: Any) -> None:
    assert not is_valid_id(value)
    with pytest.raises(ValueError):
        to_18(value)


def test_made_ids_carry_prefix_base62_counter_and_checksum() -> None:
    assert make_id("801", 1) == "801000000000001AAA"
    assert make_id("801", 61) == "80100000000000zAAA"
    assert make_id("801", 62) == "801000000000010AAA"
    assert make_id("001", 10) == "00100000000000AAAQ"  # upper-case 5th character of the last chunk: bit 4


def test_store_ids_are_18_characters_with_the_schema_prefix_and_sequential(store: Store) -> None:
    first = store.create("Account", {"Name": "A"})
    second = store.create("Account", {"Name": "B"})
    assert first == make_id("001", 1) and second == make_id("001", 2)
    assert store.create("Contact", {"LastName": "X"}).startswith("003")


def test_15_character_ids_are_accepted_everywhere(store: Store, org: Org) -> None:
    order_id = org.order(AccountId=org.account[:15])
    assert store.get("Order", order_id)["AccountId"] == org.account  # stored as 18
    store.update("Order", order_id[:15], {"Description": "x"})
    assert store.get("Order", order_id[:15])["Description"] == "x"
    store.delete("Order", order_id[:15])
    assert store.count("Order") == 0


def test_a_reopened_file_continues_ids_and_auto_numbers(tmp_path, clock: Clock) -> None:
    path = tmp_path / "org.db"
    first = Org(Store(path, clock=clock))
    first.order()
    first.store.conn.close()
    reopened = Store(path, clock=clock)
    assert reopened.count("User") == 1  # the integration user is not created twice
    again = reopened.create(
        "Order", {"AccountId": first.account, "Status": "Draft", "EffectiveDate": "2026-03-01"}
    )
    assert again == make_id("801", 2)
    assert reopened.get("Order", again)["OrderNumber"] == "00000101"
    assert reopened.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


# -- records and their shape -----------------------------------------------------------------


def test_an_integration_user_exists_and_owns_what_is_created(store: Store) -> None:
    user = store.get("User", store.integration_user_id)
    assert (user["Username"], user["Name"], user["IsActive"]) == (
        INTEGRATION_USERNAME,
        "Integration User",
        True,
    )
    account = store.get("Account", store.create("Account", {"Name": "A"}))
    assert (
        account["OwnerId"]
        == account["CreatedById"]
        == account["LastModifiedById"]
        == store.integration_user_id
    )


def test_get_answers_the_rest_shape_with_json_types_and_defaults(store: Store, org: Org) -> None:
    order_id = org.order()
    record = store.get("Order", order_id)
    assert record["attributes"] == {"type": "Order", "url": f"/services/data/v59.0/sobjects/Order/{order_id}"}
    assert set(record) == {"attributes"} | {f.name for f in store.schema.get("Order").fields}
    assert record["Id"] == order_id
    assert record["IsDeleted"] is False
    assert record["CurrencyIsoCode"] == "USD"  # picklist default
    assert record["TotalAmount"] == 0.0 and isinstance(record["TotalAmount"], float)
    assert re.fullmatch(r"2026-03-01T12:00:00\.\d{3}\+0000", record["CreatedDate"])
    product = store.get("Product2", org.product)
    assert product["IsActive"] is True  # checkbox default


def test_get_with_fields_answers_those_and_the_id(store: Store, org: Org) -> None:
    order_id = org.order()
    record = store.get("Order", order_id, ["status", "OrderNumber"])
    assert record == {
        "attributes": {"type": "Order", "url": f"/services/data/v59.0/sobjects/Order/{order_id}"},
        "Status": "Draft",
        "OrderNumber": "00000100",
        "Id": order_id,
    }
    fails("INVALID_FIELD", store.get, "Order", order_id, ["Nope__c"])


def test_field_names_are_case_insensitive_and_attributes_are_ignored(store: Store) -> None:
    account_id = store.create(
        "Account", {"attributes": {"type": "Account"}, "name": "lower", "billingcity": "X"}
    )
    record = store.get("Account", account_id)
    assert (record["Name"], record["BillingCity"]) == ("lower", "X")


def test_people_names_follow_first_and_last_name(store: Store) -> None:
    contact_id = store.create("Contact", {"FirstName": "Zoë", "LastName": "O'Brien"})
    assert store.get("Contact", contact_id)["Name"] == "Zoë O'Brien"
    store.update("Contact", contact_id, {"FirstName": None})
    assert store.get("Contact", contact_id)["Name"] == "O'Brien"


def test_pricebook_entry_takes_name_and_code_from_its_product(store: Store, org: Org) -> None:
    entry = store.get("PricebookEntry", org.entry)
    assert (entry["Name"], entry["ProductCode"], entry["UnitPrice"]) == ("Widget", "W-1", 10.0)


# -- errors ------------------------------------------------------------------------------------


def test_unknown_object(store: Store) -> None:
    error = fails("NOT_FOUND", store.create, "Nope__c", {"Name": "x"}, status=404)
    assert error.message == "The requested resource does not exist"
    fails("NOT_FOUND", store.get, "Nope__c", make_id("001", 1), status=404)
    fails("NOT_FOUND", store.count, "Nope__c", status=404)


def test_unknown_record(store: Store) -> None:
    missing = make_id("001", 999)
    fails("NOT_FOUND", store.get, "Account", missing, status=404)
    fails("NOT_FOUND", store.update, "Account", missing, {"Name": "x"}, status=404)
    fails("NOT_FOUND", store.delete, "Account", missing, status=404)
    account_id = store.create("Account", {"Name": "A"})
    fails("NOT_FOUND", store.get, "Contact", account_id, status=404)  # an id of another object


def test_malformed_record_id(store: Store) -> None:
    fails("NOT_FOUND", store.get, "Account", "not-an-id", status=404)
    error = fails(
        "MALFORMED_ID", store.update, "Account", "not-an-id", {"Name": "x"}, status=400, fields=["Id"]
    )
    assert error.message == "Account ID: id value of incorrect type: not-an-id"


def test_deleted_record(store: Store) -> None:
    account_id = store.create("Account", {"Name": "A"})
    store.delete("Account", account_id)
    for call, args in (
        (store.get, ("Account", account_id)),
        (store.update, ("Account", account_id, {"Name": "B"})),
        (store.delete, ("Account", account_id)),
    ):
        error = fails("ENTITY_IS_DELETED", call, *args)
        assert error.message == "entity is deleted"


def test_unknown_field(store: Store, org: Org) -> None:
    error = fails("INVALID_FIELD", org.order, **{"Bogus__c": 1})
    assert error.message == "No such column 'Bogus__c' on sobject of type Order"


def test_id_in_the_body(store: Store, org: Org) -> None:
    error = fails("INVALID_FIELD", store.create, "Account", {"Id": org.account, "Name": "x"})
    assert error.message == "The Id field should not be specified in the sobject data."
    other = store.create("Account", {"Name": "other"})
    fails("INVALID_FIELD", store.update, "Account", org.account, {"Id": other, "Name": "x"})
    store.update("Account", org.account, {"id": org.account[:15], "Name": "same id is fine"})
    assert store.get("Account", org.account)["Name"] == "same id is fine"


def test_read_only_fields(store: Store, org: Org) -> None:
    error = fails(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        org.order,
        TotalAmount=5,
        StatusCode="Draft",
        fields=["TotalAmount", "StatusCode"],
    )
    assert error.message.startswith(
        "Unable to create/update fields: TotalAmount, StatusCode. Please check the security settings of this field"
    )
    order_id = org.order()
    fails(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        store.update,
        "Order",
        order_id,
        {"OrderNumber": "1"},
        fields=["OrderNumber"],
    )
    item_id = org.item(order_id)
    fails(
        "INVALID_FIELD_FOR_INSERT_UPDATE",
        store.update,
        "OrderItem",
        item_id,
        {"OrderId": order_id},
        fields=["OrderId"],
    )


def test_required_fields(store: Store, org: Org) -> None:
    error = fails(
        "REQUIRED_FIELD_MISSING", store.create, "Order", {"Status": "Draft", "EffectiveDate": "2026-01-01"}
    )
    assert (error.message, error.fields) == ("Required fields are missing: [AccountId]", ["AccountId"])
    error = fails("REQUIRED_FIELD_MISSING", store.create, "Order", {"Status": "Draft", "AccountId": None})
    assert error.fields == ["AccountId", "EffectiveDate"]
    order_id = org.order()
    fails(
        "REQUIRED_FIELD_MISSING",
        store.update,
        "Order",
        order_id,
        {"EffectiveDate": None},
        fields=["EffectiveDate"],
    )
    fails("REQUIRED_FIELD_MISSING", store.update, "Account", org.account, {"Name": ""}, fields=["Name"])


def test_string_too_long(store: Store) -> None:
    city = "X" * 41
    error = fails(
        "STRING_TOO_LONG", store.create, "Account", {"Name": "A", "BillingCity": city}, fields=["BillingCity"]
    )
    assert error.message == f"Billing City: data value too large: {city} (max length=40)"
    store.create("Account", {"Name": "A", "BillingCity": "X" * 40})


def test_restricted_picklist_is_case_sensitive(store: Store, org: Org) -> None:
    error = fails("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", org.order, Status="draft", fields=["Status"])
    assert error.message == "Status: bad value for restricted picklist field: draft"
    fails("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", org.order, CurrencyIsoCode="CHF")


def test_unrestricted_picklist_takes_any_value(store: Store, org: Org) -> None:
    assert store.get("Order", org.order(Type="Something New"))["Type"] == "Something New"


@pytest.mark.parametrize(
    ("sobject", "field", "value"),
    [
        ("OrderItem", "Quantity", "abc"),
        ("OrderItem", "Quantity", True),
        ("OrderItem", "UnitPrice", "NaN"),
        ("Order", "EffectiveDate", "01/02/2026"),
        ("Order", "EffectiveDate", "2026-02-30"),
        ("Order", "ActivatedDate", "yesterday"),
        ("Order", "Description", {"nested": 1}),
        ("Product2", "IsActive", "yes"),
    ],
)
def test_values_of_the_wrong_type(store: Store, org: Org, sobject: str, field: str, value: Any) -> None:
    order_id = org.order()
    target = {"Order": order_id, "OrderItem": org.item(order_id), "Product2": org.product}[sobject]
    error = fails("JSON_PARSER_ERROR", store.update, sobject, target, {field: value}, fields=[field])
    assert "Cannot deserialize instance of" in error.message


def test_numbers_and_booleans_as_strings_are_accepted(store: Store, org: Org) -> None:
    order_id = org.order()
    item = store.get("OrderItem", org.item(order_id, quantity="3", unit_price="2.5"))
    assert (item["Quantity"], item["UnitPrice"], item["TotalPrice"]) == (3.0, 2.5, 7.5)
    store.update("Product2", org.product, {"IsActive": "false"})
    assert store.get("Product2", org.product)["IsActive"] is False


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2026-01-02T03:04:05Z", "2026-01-02T03:04:05.000+0000"),
        ("2026-01-02T03:04:05.25+01:00", "2026-01-02T02:04:05.250+0000"),
        ("2026-01-02T03:04:05.000+0000", "2026-01-02T03:04:05.000+0000"),
        ("2026-01-02T03:04:05-08:00", "2026-01-02T11:04:05.000+0000"),
        ("2026-01-02", "2026-01-02T00:00:00.000+0000"),
    ],
)
def test_datetimes_are_stored_in_utc(store: Store, org: Org, given: str, stored: str) -> None:
    assert store.get("Order", org.order(ActivatedDate=given))["ActivatedDate"] == stored


def test_empty_and_null_clear_a_nillable_field(store: Store, org: Org) -> None:
    store.update("Account", org.account, {"BillingCity": ""})
    assert store.get("Account", org.account)["BillingCity"] is None
    store.update("Account", org.account, {"BillingCity": "Y"})
    store.update("Account", org.account, {"BillingCity": None})
    assert store.get("Account", org.account)["BillingCity"] is None


def test_references_must_point_at_live_records_of_the_right_object(store: Store, org: Org) -> None:
    fails("INVALID_CROSS_REFERENCE_KEY", org.order, AccountId=make_id("001", 999), fields=["AccountId"])
    contact_id = store.create("Contact", {"LastName": "X"})
    error = fails("FIELD_INTEGRITY_EXCEPTION", org.order, AccountId=contact_id, fields=["AccountId"])
    assert error.message == f"Account: id value of incorrect type: {contact_id}"
    fails("MALFORMED_ID", org.order, AccountId="garbage", fields=["AccountId"])
    gone = store.create("Account", {"Name": "gone"})
    store.delete("Account", gone)
    fails("ENTITY_IS_DELETED", org.order, AccountId=gone, fields=["AccountId"])


def test_duplicate_values_on_unique_fields(store: Store) -> None:
    first = store.create("Account", {"Name": "A", "Customer_ID__c": "CUST-000001"})
    error = fails(
        "DUPLICATE_VALUE",
        store.create,
        "Account",
        {"Name": "B", "Customer_ID__c": "cust-000001"},
        fields=["Customer_ID__c"],
    )
    assert (
        error.message == f"duplicate value found: Customer_ID__c duplicates value on record with id: {first}"
    )
    store.update(
        "Account", first, {"Customer_ID__c": "CUST-000001", "Name": "A2"}
    )  # its own value is no clash
    second = store.create("Account", {"Name": "B"})
    fails("DUPLICATE_VALUE", store.update, "Account", second, {"Customer_ID__c": "CUST-000001"})


# -- Order rules -------------------------------------------------------------------------------


def test_an_order_is_created_only_in_draft(store: Store, org: Org) -> None:
    error = fails("FAILED_ACTIVATION", org.order, Status="Activated", status=400)
    assert error.message == "For a new or cloned order, choose Draft."
    fails("FAILED_ACTIVATION", org.order, Status="Imported")
    assert store.count("Order") == 0


def test_new_orders_are_numbered_from_00000100_and_in_draft(store: Store, org: Org) -> None:
    first, second = store.get("Order", org.order()), store.get("Order", org.order())
    assert (first["OrderNumber"], second["OrderNumber"]) == ("00000100", "00000101")
    assert (first["StatusCode"], first["TotalAmount"], first["ActivatedDate"]) == ("Draft", 0.0, None)


def test_contracts_are_numbered_too(store: Store, org: Org) -> None:
    contract = store.get("Contract", store.create("Contract", {"AccountId": org.account}))
    assert (contract["ContractNumber"], contract["Status"]) == ("00000100", "Draft")


def test_auto_numbers_are_never_reused(store: Store, org: Org) -> None:
    store.delete("Order", org.order())
    with pytest.raises(RuntimeError), store.transaction():
        org.order()  # 00000101, rolled back
        raise RuntimeError
    assert store.get("Order", org.order())["OrderNumber"] == "00000102"


def test_activation_needs_a_live_product(store: Store, org: Org) -> None:
    order_id = org.order()
    error = fails("FAILED_ACTIVATION", store.update, "Order", order_id, {"Status": "Activated"})
    assert error.message == "an order must include at least one product"
    store.delete("OrderItem", org.item(order_id))
    fails("FAILED_ACTIVATION", store.update, "Order", order_id, {"Status": "Activated"})


def test_activation_sets_status_code_activated_date_and_activated_by(
    store: Store, org: Org, clock: Clock
) -> None:
    order_id = org.order()
    org.item(order_id)
    clock.advance(minutes=5)
    store.update("Order", order_id, {"Status": "Activated"})
    order = store.get("Order", order_id)
    assert order["StatusCode"] == "Activated"
    assert order["ActivatedDate"] == order["SystemModstamp"] == "2026-03-01T12:05:00.000+0000"
    assert order["ActivatedById"] == store.integration_user_id


def test_imported_is_an_activated_status_and_keeps_the_activation(
    store: Store, org: Org, clock: Clock
) -> None:
    order_id = org.activated_order()
    activated = store.get("Order", order_id)["ActivatedDate"]
    clock.advance(hours=1)
    store.update("Order", order_id, {"Status": "Imported"})
    order = store.get("Order", order_id)
    assert (order["Status"], order["StatusCode"], order["ActivatedDate"]) == (
        "Imported",
        "Activated",
        activated,
    )


def test_back_to_draft_clears_the_activation(store: Store, org: Org) -> None:
    order_id = org.activated_order()
    store.update("Order", order_id, {"Status": "Draft"})
    order = store.get("Order", order_id)
    assert (order["StatusCode"], order["ActivatedDate"], order["ActivatedById"]) == ("Draft", None, None)
    store.update("Order", order_id, {"AccountId": store.create("Account", {"Name": "B"})})  # editable again


@pytest.mark.parametrize("field", ["AccountId", "Pricebook2Id", "ContractId"])
def test_an_activated_order_keeps_its_account_contract_and_pricebook(
    store: Store, org: Org, field: str
) -> None:
    order_id = org.activated_order()
    other = {
        "AccountId": lambda: store.create("Account", {"Name": "B"}),
        "Pricebook2Id": lambda: store.create("Pricebook2", {"Name": "Other"}),
        "ContractId": lambda: store.create("Contract", {"AccountId": org.account}),
    }[field]()
    error = fails(
        "FIELD_INTEGRITY_EXCEPTION", store.update, "Order", order_id, {field: other}, fields=[field]
    )
    assert "activated order" in error.message and field in error.message


def test_an_activated_order_takes_other_changes(store: Store, org: Org) -> None:
    order_id = org.activated_order()
    store.update(
        "Order",
        order_id,
        {"Description": "note", "Credit_Card_Number__c": "XXXXXXXXXXXX1111", "AccountId": org.account},
    )
    order = store.get("Order", order_id)
    assert (order["Description"], order["Credit_Card_Number__c"]) == ("note", "XXXXXXXXXXXX1111")


def test_an_activated_order_is_locked_against_deletes_and_product_changes(store: Store, org: Org) -> None:
    order_id = org.order()
    item_id = org.item(order_id)
    store.update("Order", order_id, {"Status": "Activated"})
    message = (
        "Unable to modify activated or superseded Order: cannot delete Order, or add or remove Order Products"
    )
    assert fails("ENTITY_IS_LOCKED", store.delete, "Order", order_id).message == message
    assert fails("ENTITY_IS_LOCKED", org.item, order_id).message == message
    assert fails("ENTITY_IS_LOCKED", store.delete, "OrderItem", item_id).message == message
    assert store.count("OrderItem") == 1


def test_order_products_derive_prices_numbers_and_totals(store: Store, org: Org) -> None:
    order_id = org.order()
    item = store.get("OrderItem", org.item(order_id, quantity=3, unit_price=9.99))
    assert item["Product2Id"] == org.product
    assert (item["ListPrice"], item["TotalPrice"], item["OrderItemNumber"]) == (10.0, 29.97, "0000000100")
    second = org.item(order_id, quantity=1, unit_price=0.03)
    assert store.get("Order", order_id)["TotalAmount"] == 30.0
    store.update("OrderItem", second, {"Quantity": 10})
    assert store.get("OrderItem", second)["TotalPrice"] == 0.3
    assert store.get("Order", order_id)["TotalAmount"] == 30.27
    store.delete("OrderItem", second)
    assert store.get("Order", order_id)["TotalAmount"] == 29.97


def test_an_order_product_must_come_from_the_orders_pricebook(store: Store, org: Org) -> None:
    order_id = org.order(Pricebook2Id=None)
    error = fails("FIELD_INTEGRITY_EXCEPTION", org.item, order_id, fields=["PricebookEntryId"])
    assert "pricebook" in error.message
    other_product = store.create("Product2", {"Name": "Other"})
    fails(
        "FIELD_INTEGRITY_EXCEPTION",
        store.create,
        "OrderItem",
        {
            "OrderId": org.order(),
            "PricebookEntryId": org.entry,
            "Product2Id": other_product,
            "Quantity": 1,
            "UnitPrice": 1,
        },
        fields=["Product2Id"],
    )


def test_a_status_missing_from_the_org_is_refused(store: Store, org: Org) -> None:
    imported = org.activated_order()
    store.update("Order", imported, {"Status": "Imported"})
    store.set_schema(build_schema(with_imported_status=False))
    fails(
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        store.update,
        "Order",
        org.activated_order(),
        {"Status": "Imported"},
    )
    assert store.get("Order", imported)["Status"] == "Imported"  # stored rows stay readable


# -- stamps ------------------------------------------------------------------------------------


def test_every_write_moves_the_stamps_even_when_the_clock_stands_still(store: Store, org: Org) -> None:
    order_id = org.order()
    created = store.get("Order", order_id)
    store.update("Order", order_id, {"Description": "a"})
    updated = store.get("Order", order_id)
    store.update("Order", order_id, {})  # a write without changes still counts
    again = store.get("Order", order_id)
    assert created["CreatedDate"] == updated["CreatedDate"] == again["CreatedDate"]
    assert created["SystemModstamp"] < updated["SystemModstamp"] < again["SystemModstamp"]
    assert updated["LastModifiedDate"] == updated["SystemModstamp"]
    assert again["SystemModstamp"][:19] == "2026-03-01T12:00:00"  # a millisecond apart, not seconds


def test_stamps_follow_the_clock(store: Store, clock: Clock) -> None:
    clock.advance(days=2, seconds=3.5)
    account = store.get("Account", store.create("Account", {"Name": "A"}))
    assert account["CreatedDate"] == account["SystemModstamp"] == "2026-03-03T12:00:03.500+0000"


def test_stamps_from_the_next_second_come_a_whole_second_later_without_waiting(store: Store, org: Org, clock: Clock) -> None:
    order_id = org.order()
    before = store.get("Order", order_id)["SystemModstamp"]
    second = store.stamps_from_next_second()
    store.update("Order", order_id, {"Description": "later"})
    after = store.get("Order", order_id)["SystemModstamp"]
    assert second == datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)  # the clock stood still
    assert before[:19] == "2026-03-01T12:00:00" and after == "2026-03-01T12:00:01.000+0000"
    clock.advance(seconds=5.25)  # a clock already past it wins
    store.update("Order", order_id, {})
    assert store.get("Order", order_id)["SystemModstamp"] == "2026-03-01T12:00:05.250+0000"


def test_writes_to_order_products_move_the_orders_stamps(store: Store, org: Org, clock: Clock) -> None:
    order_id = org.order()
    clock.advance(minutes=1)
    org.item(order_id)
    order = store.get("Order", order_id)
    assert order["SystemModstamp"] == order["LastModifiedDate"]
    assert order["SystemModstamp"] > order["CreatedDate"]


def test_stamps_keep_rising_after_a_reset(store: Store, org: Org) -> None:
    before = store.get("Account", org.account)["SystemModstamp"]
    store.reset()
    after = store.get("Account", store.create("Account", {"Name": "A"}))["SystemModstamp"]
    assert after > before


# -- deletes -----------------------------------------------------------------------------------


def test_delete_is_soft(store: Store, org: Org) -> None:
    order_id = org.order()
    store.delete("Order", order_id)
    assert row(store, "Order", order_id)["IsDeleted"] == 1
    assert store.count("Order") == 0 and store.count("Order", include_deleted=True) == 1


def test_deleting_an_order_deletes_its_products_and_keeps_its_amount(store: Store, org: Org) -> None:
    order_id = org.order()
    items = [org.item(order_id), org.item(order_id)]
    store.delete("Order", order_id)
    assert all(row(store, "OrderItem", i)["IsDeleted"] == 1 for i in items)
    assert row(store, "Order", order_id)["TotalAmount"] == round(2 * 2 * 9.99, 2)


def test_deleting_an_account_cascades_and_clears_child_accounts(store: Store, org: Org) -> None:
    contact = store.create("Contact", {"LastName": "X", "AccountId": org.account})
    order_id = org.order()
    child = store.create("Account", {"Name": "Child", "ParentId": org.account})
    child_stamp = store.get("Account", child)["SystemModstamp"]
    store.delete("Account", org.account)
    assert row(store, "Contact", contact)["IsDeleted"] == 1
    assert row(store, "Order", order_id)["IsDeleted"] == 1
    child_now = store.get("Account", child)
    assert child_now["ParentId"] is None and child_now["SystemModstamp"] > child_stamp


def test_a_failed_cascade_deletes_nothing(store: Store, org: Org) -> None:
    contact = store.create("Contact", {"LastName": "X", "AccountId": org.account})
    org.activated_order()
    fails("ENTITY_IS_LOCKED", store.delete, "Account", org.account)
    assert row(store, "Contact", contact)["IsDeleted"] == 0
    assert row(store, "Account", org.account)["IsDeleted"] == 0


# -- change tracking ---------------------------------------------------------------------------


def test_updated_lists_records_modified_in_the_window(store: Store, clock: Clock) -> None:
    early = store.create("Account", {"Name": "early"})
    clock.advance(minutes=10)
    late = store.create("Account", {"Name": "late"})
    gone = store.create("Account", {"Name": "gone"})
    store.delete("Account", gone)
    clock.advance(minutes=10, seconds=42)
    result = store.updated("Account", START + timedelta(minutes=5), START + timedelta(hours=1))
    assert result == {
        "ids": [late],
        "latestDateCovered": "2026-03-01T12:20:00.000+0000",
    }  # now, seconds dropped
    window = store.updated("Account", START, START + timedelta(minutes=5, seconds=59))
    assert window == {"ids": [early], "latestDateCovered": "2026-03-01T12:05:00.000+0000"}


def test_deleted_lists_records_deleted_in_the_window(store: Store, clock: Clock) -> None:
    store.create("Account", {"Name": "kept"})
    clock.advance(minutes=3)
    gone = store.create("Account", {"Name": "gone"})
    store.delete("Account", gone)
    clock.advance(minutes=30)
    result = store.deleted("Account", START, START + timedelta(hours=1))
    assert result == {
        "deletedRecords": [{"id": gone, "deletedDate": "2026-03-01T12:03:00.001+0000"}],
        "earliestDateAvailable": "2026-03-01T12:03:00.000+0000",
        "latestDateCovered": "2026-03-01T12:33:00.000+0000",
    }
    assert (
        store.deleted("Account", START + timedelta(minutes=4), START + timedelta(hours=1))["deletedRecords"]
        == []
    )


def test_replication_windows_are_checked(store: Store, clock: Clock) -> None:
    fails("INVALID_REPLICATION_DATE", store.updated, "Account", START, START)
    fails("INVALID_REPLICATION_DATE", store.updated, "Account", START, START + timedelta(seconds=30))
    fails("INVALID_REPLICATION_DATE", store.deleted, "Account", START - timedelta(days=31), START)
    assert store.updated("Account", START - timedelta(days=29), START)["ids"] == []


# -- upsert and external ids -------------------------------------------------------------------


def test_upsert_creates_then_updates(store: Store) -> None:
    account_id, created = store.upsert("Account", "Customer_ID__c", "CUST-000042", {"Name": "New"})
    assert created and store.get("Account", account_id)["Customer_ID__c"] == "CUST-000042"
    same_id, created = store.upsert("Account", "customer_id__c", "cust-000042", {"Name": "Renamed"})
    assert (same_id, created) == (account_id, False)
    assert store.get("Account", account_id)["Name"] == "Renamed"
    assert store.count("Account") == 1


def test_upsert_with_several_matches_answers_300(store: Store, clock: Clock) -> None:
    ids = store.new_ids("Account", 2)
    stamp = "2026-03-01T12:00:00.000+0000"
    audit = {"IsDeleted": 0, "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp}
    store.bulk_insert("Account", [{"Id": i, "Name": "dup", "Customer_ID__c": "CUST-1", **audit} for i in ids])
    error = fails(
        "MULTIPLE_RECORDS", store.upsert, "Account", "Customer_ID__c", "CUST-1", {"Name": "x"}, status=300
    )
    assert all(i in error.message for i in ids)
    fails("MULTIPLE_RECORDS", store.get_by_external_id, "Account", "Customer_ID__c", "CUST-1", status=300)


def test_upsert_needs_an_external_id_field(store: Store) -> None:
    fails("NOT_FOUND", store.upsert, "Account", "Name", "Acme", {}, status=404)


def test_get_by_external_id(store: Store, org: Org) -> None:
    store.update("Account", org.account, {"Customer_ID__c": "CUST-7"})
    assert store.get_by_external_id("Account", "Customer_ID__c", "CUST-7", ["Name"])["Name"] == "Acme"
    order_id = org.order()
    assert store.get_by_external_id("Order", "OrderNumber", "00000100")["Id"] == order_id
    fails("NOT_FOUND", store.get_by_external_id, "Account", "Customer_ID__c", "CUST-8", status=404)


# -- transactions, bulk path, reset ------------------------------------------------------------


def test_a_transaction_is_all_or_none(store: Store) -> None:
    with pytest.raises(SalesforceError), store.transaction():
        store.create("Account", {"Name": "kept only if all succeed"})
        store.create("Account", {"Name": None})
    assert store.count("Account", include_deleted=True) == 0


def test_transactions_nest(store: Store) -> None:
    with store.transaction():
        outer = store.create("Account", {"Name": "outer"})
        with pytest.raises(RuntimeError), store.transaction():
            store.create("Account", {"Name": "inner"})
            raise RuntimeError
    assert [store.get("Account", outer)["Name"]] == ["outer"]
    assert store.count("Account") == 1


def test_bulk_insert_and_recompute_totals(store: Store, org: Org) -> None:
    orders = [org.order(), org.order()]
    stamp = "2026-03-01T12:00:00.000+0000"
    audit = {"IsDeleted": 0, "CreatedDate": stamp, "LastModifiedDate": stamp, "SystemModstamp": stamp}
    rows = [
        {
            "Id": item_id,
            "OrderId": order_id,
            "PricebookEntryId": org.entry,
            "Quantity": 1.0,
            "UnitPrice": price,
            "TotalPrice": price,
            **audit,
        }
        for item_id, order_id, price in zip(
            store.new_ids("OrderItem", 3), [orders[0], orders[0], orders[1]], [1.25, 2.5, 4.0], strict=True
        )
    ]
    store.bulk_insert("OrderItem", rows)
    assert store.get("Order", orders[0])["TotalAmount"] == 0.0  # no rules on the bulk path
    store.recompute_order_totals([orders[0]])
    assert [store.get("Order", o)["TotalAmount"] for o in orders] == [3.75, 0.0]
    store.recompute_order_totals()
    assert store.get("Order", orders[1])["TotalAmount"] == 4.0
    fails("INVALID_FIELD", store.bulk_insert, "OrderItem", [{"Id": "x", "Bogus": 1}])


def test_reset_empties_the_org_but_keeps_an_integration_user(store: Store, org: Org) -> None:
    org.activated_order()
    store.reset()
    assert [
        store.count(name, include_deleted=True) for name in ("Account", "Order", "OrderItem", "Product2")
    ] == [0, 0, 0, 0]
    assert store.count("User") == 1
    assert store.get("User", store.integration_user_id)["Username"] == INTEGRATION_USERNAME
    assert Org(store).order() == make_id("801", 1)


# -- many updates at once (Bulk ingest, sObject Collections) -----------------------------------


def _scripted_org(store: Store) -> dict[str, str]:
    """Records the update script below works on, built the same way in any store."""
    org = Org(store)
    ids = {
        "a": store.create("Account", {"Name": "A", "Customer_ID__c": "CUST-1"}),
        "b": store.create("Account", {"Name": "B"}),
        "c": store.create("Account", {"Name": "C"}),
        "gone": store.create("Account", {"Name": "gone"}),
        "activated": org.activated_order(),
        "draft": org.order(),
        "empty": org.order(),
    }
    ids["item"] = org.item(ids["draft"])
    store.delete("Account", ids["gone"])
    return ids


def _update_script(ids: dict[str, str]) -> list[tuple[str, str, dict]]:
    """(object, id, values): every outcome an update can have, and updates that depend on earlier ones."""
    a, b, c = ids["a"], ids["b"], ids["c"]
    return [
        ("Account", b, {"Customer_ID__c": "cust-1"}),  # DUPLICATE_VALUE, case-insensitively
        ("Account", b, {"Customer_ID__c": "CUST-2"}),
        ("Account", c, {"Customer_ID__c": "Cust-2"}),  # DUPLICATE_VALUE with the update just before
        ("Account", a, {"Customer_ID__c": "CUST-3"}),  # frees CUST-1 ...
        ("Account", c, {"Customer_ID__c": "CUST-1"}),  # ... for the next one
        ("Account", ids["gone"], {"Name": "x"}),  # ENTITY_IS_DELETED
        ("Account", "garbage", {"Name": "x"}),  # MALFORMED_ID
        ("Account", make_id("001", 999), {"Name": "x"}),  # NOT_FOUND
        ("Account", ids["activated"], {"Name": "x"}),  # NOT_FOUND: an id of another object
        ("Account", a[:15], {"Name": ""}),  # REQUIRED_FIELD_MISSING
        ("Account", a, {"Bogus__c": 1}),  # INVALID_FIELD
        ("Account", a.lower(), {"Name": "A2"}),  # an 18-character id in any case
        ("Account", a, {"Name": "A3", "BillingCity": "X" * 41}),  # STRING_TOO_LONG: Name stays A2
        ("Account", a, {"ParentId": ids["gone"]}),  # ENTITY_IS_DELETED on the lookup
        ("Order", ids["activated"], {"Status": "Imported", "Credit_Card_Number__c": "XXXXXXXXXXXXXXXX"}),
        ("Order", ids["activated"], {"AccountId": b}),  # locked on an activated order
        ("Order", ids["draft"], {"Status": "Activated"}),
        ("Order", ids["empty"], {"Status": "Activated"}),  # FAILED_ACTIVATION: no products
        ("Order", ids["draft"], {"Status": "Draft"}),  # back to Draft clears the activation just set
        ("Order", ids["activated"], {"Status": "Nope"}),  # restricted picklist
        ("Order", ids["activated"], {"Status": "Imported"}),  # no change, the stamps still move
        ("OrderItem", ids["item"], {"Quantity": 5}),  # the order's total follows
    ]


def _outcome(error: SalesforceError | None) -> tuple | None:
    return None if error is None else (error.error_code, error.message, error.fields, error.status)


def _dump(store: Store) -> dict[str, list[tuple]]:
    tables = [*store.schema.objects, "_sandbox_sequences", "_sandbox_deleted_log"]
    return {t: store.conn.execute(f'SELECT * FROM "{t}" ORDER BY 1, 2').fetchall() for t in tables}


def test_update_each_gives_the_outcomes_and_rows_of_one_update_at_a_time(clock: Clock) -> None:
    one_by_one, together = Store(clock=clock), Store(clock=clock)
    ids = _scripted_org(one_by_one)
    assert _scripted_org(together) == ids
    script = _update_script(ids)

    expected = []
    for sobject, record_id, values in script:
        try:
            one_by_one.update(sobject, record_id, values)
            expected.append(None)
        except SalesforceError as exc:
            expected.append(_outcome(exc))
    got = []
    for sobject in ("Account", "Order", "OrderItem"):
        updates = [(record_id, values) for name, record_id, values in script if name == sobject]
        got += [_outcome(error) for error in together.update_each(sobject, updates)]

    assert got == expected
    assert [o and o[0] for o in got] == [
        "DUPLICATE_VALUE", None, "DUPLICATE_VALUE", None, None, "ENTITY_IS_DELETED", "MALFORMED_ID",
        "NOT_FOUND", "NOT_FOUND", "REQUIRED_FIELD_MISSING", "INVALID_FIELD", None, "STRING_TOO_LONG",
        "ENTITY_IS_DELETED", None, "FIELD_INTEGRITY_EXCEPTION", None, "FAILED_ACTIVATION", None,
        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", None, None,
    ]  # fmt: skip
    assert _dump(together) == _dump(one_by_one)
    assert together.get("Account", ids["a"])["Name"] == "A2"
    assert together.get("Account", ids["c"])["Customer_ID__c"] == "CUST-1"


def test_update_each_reads_the_targets_a_chunk_at_a_time(store: Store) -> None:
    accounts = [store.create("Account", {"Name": f"A{n}"}) for n in range(3)]
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    errors = store.update_each("Account", [(i, {"Customer_ID__c": f"C-{i}"}) for i in accounts * 2])
    store.conn.set_trace_callback(None)
    assert errors == [None] * 6
    reads = [s for s in statements if s.startswith('SELECT * FROM "Account"')]
    assert len(reads) == 1 and "IN (" in reads[0]
    assert [store.get("Account", i)["Customer_ID__c"] for i in accounts] == [f"C-{i}" for i in accounts]


def test_update_each_takes_only_live_records_of_its_object(store: Store, org: Org) -> None:
    (error,) = store.update_each("Account", [(org.entry, {"Name": "x"})])
    assert (error.error_code, error.status) == ("NOT_FOUND", 404)
    with pytest.raises(SalesforceError) as unknown:
        store.update_each("Bogus", [])
    assert unknown.value.error_code == "NOT_FOUND"


def test_case_insensitive_duplicates_are_found_through_an_index(store: Store) -> None:
    first = store.create("Account", {"Name": "A", "Customer_ID__c": "CUST-ABC-1"})
    second = store.create("Account", {"Name": "B"})
    error = fails("DUPLICATE_VALUE", store.update, "Account", second, {"Customer_ID__c": "cust-Abc-1"})
    assert error.message.endswith(first)
    plan = store.conn.execute(
        'EXPLAIN QUERY PLAN SELECT Id FROM "Account" WHERE "Customer_ID__c" = ? COLLATE NOCASE '
        "AND +IsDeleted = 0 AND Id IS NOT ? LIMIT 1",
        ("x", None),
    ).fetchall()
    assert "USING INDEX ix_Account_Customer_ID__c_nocase" in plan[0][-1]
    user_plan = store.conn.execute(
        'EXPLAIN QUERY PLAN SELECT Id FROM "User" WHERE "Username" = ? COLLATE NOCASE', ("x",)
    ).fetchall()
    assert "USING INDEX ix_User_Username_nocase" in user_plan[0][-1]


def test_an_existing_org_file_gets_the_case_insensitive_index(tmp_path, clock: Clock) -> None:
    path = tmp_path / "org.db"
    store = Store(path, clock=clock)
    store.conn.execute('DROP INDEX "ix_Account_Customer_ID__c_nocase"')
    store.conn.close()
    reopened = Store(path, clock=clock)
    names = {r[1] for r in reopened.conn.execute("PRAGMA index_list('Account')")}
    assert "ix_Account_Customer_ID__c_nocase" in names


# -- sequences: ids, auto-numbers and stamps across transactions and re-opens ------------------


def test_sequences_are_written_once_per_transaction(store: Store, org: Org) -> None:
    order_id = org.order()
    statements: list[str] = []
    store.conn.set_trace_callback(statements.append)
    with store.transaction():
        for n in range(20):
            store.update("Order", order_id, {"Description": str(n)})
    store.conn.set_trace_callback(None)
    assert len([s for s in statements if "_sandbox_sequences" in s]) == 1


def test_a_reopened_file_never_reissues_a_stamp_or_id(tmp_path, clock: Clock) -> None:
    path = tmp_path / "org.db"
    first = Store(path, clock=clock)
    account = first.create("Account", {"Name": "A"})
    errors = first.update_each("Account", [(account, {"Description": str(n)}) for n in range(50)])
    assert errors == [None] * 50
    last_stamp = first.get("Account", account)["SystemModstamp"]
    assert last_stamp > "2026-03-01T12:00:00.050+0000"  # the clock stood still: stamps ran ahead of it
    first.conn.close()

    reopened = Store(path, clock=clock)
    again = reopened.create("Account", {"Name": "B"})
    assert again == make_id("001", 2)
    assert reopened.get("Account", again)["SystemModstamp"] > last_stamp


def test_values_claimed_in_a_rolled_back_transaction_are_not_reused_after_a_reopen(
    tmp_path, clock: Clock
) -> None:
    path = tmp_path / "org.db"
    store = Store(path, clock=clock)
    with pytest.raises(RuntimeError), store.transaction():
        store.create("Account", {"Name": "rolled back"})
        raise RuntimeError
    assert store.create("Account", {"Name": "kept"}) == make_id("001", 2)
    store.conn.close()
    assert Store(path, clock=clock).create("Account", {"Name": "next"}) == make_id("001", 3)
