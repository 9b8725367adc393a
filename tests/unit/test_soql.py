"""SOQL building: quoting, literals, names, select lists and the window shapes."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from salesforce_orders.config import DEFAULT_CARD_FIELDS, EXAMPLE, ImportConfig, parse_config
from salesforce_orders.soql import (
    ExtractWindow,
    build_count_query,
    build_items_query,
    build_orders_bulk_query,
    build_orders_query,
    build_status_changes_query,
    field_name,
    item_fields,
    literal,
    order_fields,
    quote_string,
)

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LOOKBACK = NOW - timedelta(days=730)
INJECTION = "x' OR Name != '"
_UNESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\"}


def read_string_literal(text: str, start: int = 0) -> tuple[str, int]:
    """Read one SOQL string literal at ``text[start]`` as Salesforce would: (value, end index)."""
    assert text[start] == "'", f"no string literal at {start}: {text[start:]!r}"
    value, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            escaped = text[i + 1]
            assert escaped in _UNESCAPES, f"invalid escape \\{escaped}"
            value.append(_UNESCAPES[escaped])
            i += 2
        elif ch == "'":
            return "".join(value), i + 1
        else:
            value.append(ch)
            i += 1
    raise AssertionError(f"unterminated string literal in {text!r}")


def where_clause(query: str) -> str:
    """The text between WHERE and ORDER BY (or the end), string literals blanked out."""
    blanked, i = [], 0
    while i < len(query):
        if query[i] == "'":
            _, end = read_string_literal(query, i)
            blanked.append("''")
            i = end
        else:
            blanked.append(query[i])
            i += 1
    text = "".join(blanked)
    # The only WHERE is the outer query's: the item subquery has none.
    assert text.count(" WHERE ") == 1, query
    return text.split(" WHERE ", 1)[1].split(" ORDER BY ", 1)[0]


def window(**overrides: object) -> ExtractWindow:
    values = {"changed_from": NOW - timedelta(hours=1), "changed_to": NOW, "activated_since": LOOKBACK}
    return ExtractWindow(**{**values, **overrides})


# --- quoting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("plain", "'plain'"),
        ("O'Brien", r"'O\'Brien'"),
        ('say "hi"', r"""'say \"hi\"'"""),
        ("back\\slash", r"'back\\slash'"),
        ("line\nbreak", r"'line\nbreak'"),
        ("carriage\rreturn", r"'carriage\rreturn'"),
        ("tab\there", r"'tab\there'"),
        ("back\bspace", r"'back\bspace'"),
        ("form\ffeed", r"'form\ffeed'"),
        ("", "''"),
        ("100% _match_", "'100% _match_'"),
        ("Zoë ✓", "'Zoë ✓'"),
    ],
)
def test_quote_string_escapes(value: str, quoted: str) -> None:
    assert quote_string(value) == quoted


@pytest.mark.parametrize(
    "value",
    [INJECTION, "\\'", "\\", "'; DELETE FROM Order --", "a\\nb", "\\\\'\\", "'\n'\r\t\b\f\"\\"],
)
def test_quoted_strings_read_back_as_one_literal(value: str) -> None:
    quoted = quote_string(value)
    read, end = read_string_literal(quoted)
    assert (read, end) == (value, len(quoted))


def test_injection_attempt_is_a_single_quoted_value() -> None:
    assert quote_string(INJECTION) == r"'x\' OR Name != \''"


# --- literals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-42, "-42"),
        (2.5, "2.5"),
        (0.1, "0.1"),
        (1e20, "100000000000000000000"),
        (1e-7, "0.0000001"),
        (Decimal("19.990"), "19.990"),
        (date(2026, 1, 2), "2026-01-02"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05Z"),
        (datetime(2026, 1, 2, 4, 4, 5, 999999, tzinfo=timezone(timedelta(hours=1))), "2026-01-02T03:04:05Z"),
        (datetime(2026, 1, 1, 23, 0, 0, tzinfo=timezone(timedelta(hours=-5))), "2026-01-02T04:00:00Z"),
        ("O'Brien", r"'O\'Brien'"),
        (["a", "b'"], r"('a', 'b\'')"),
        ((1, 2), "(1, 2)"),
    ],
)
def test_literal(value: object, text: str) -> None:
    assert literal(value) == text


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 1, 2, 3, 4, 5), float("nan"), float("inf"), Decimal("NaN"), [], object(), {"a": 1}, b"x"],
)
def test_values_without_a_literal_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        literal(value)


def test_naive_datetime_error_says_why() -> None:
    with pytest.raises(ValueError, match="time zone"):
        literal(datetime(2026, 1, 2))


# --- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Id", "Customer_ID__c", "Account.Parent.Name", "A.B.C.D.E.F", "x" * 80])
def test_valid_field_names(name: str) -> None:
    assert field_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Name = 'x'",
        "Id)",
        "Account..Name",
        ".Name",
        "Name.",
        "1Field",
        "_Field",
        "A.B.C.D.E.F.G",
        "x" * 81,
        "Na me",
    ],
)
def test_invalid_field_names_are_refused_by_name(name: str) -> None:
    with pytest.raises(ValueError) as caught:
        field_name(name)
    assert repr(name) in str(caught.value)


# --- select lists ---------------------------------------------------------------------------


def test_order_fields_for_the_defaults() -> None:
    assert order_fields(ImportConfig()) == [
        "Id",
        "OrderNumber",
        "Status",
        "StatusCode",
        "Type",
        "EffectiveDate",
        "ActivatedDate",
        "TotalAmount",
        "CurrencyIsoCode",
        "BillingStreet",
        "BillingCity",
        "BillingState",
        "BillingPostalCode",
        "BillingCountry",
        "ShippingStreet",
        "ShippingCity",
        "ShippingState",
        "ShippingPostalCode",
        "ShippingCountry",
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
        "Account.Customer_ID__c",
        "Account.Parent.Customer_ID__c",
        "Account.BillingStreet",
        "Account.BillingCity",
        "Account.BillingState",
        "Account.BillingPostalCode",
        "Account.BillingCountry",
    ]


def test_item_fields_for_the_defaults() -> None:
    assert item_fields(ImportConfig()) == [
        "Id",
        "OrderId",
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
        "Service_Number__c",
    ]


def test_configured_fields_are_selected_once() -> None:
    config = parse_config(
        {
            "customer_id_field": "External_Key__c",
            "service_number_field": "Line_Number__c",
            "routing": {
                "rules": [
                    {"field": "type", "operator": "is_null", "destination": "work_order"},
                    {
                        "field": "Account.Type",
                        "operator": "equals",
                        "value": "Partner",
                        "destination": "request",
                    },
                ]
            },
            "order_field_mappings": {"PoNumber": "po", "Account.Type": "account_type", "Name": "name"},
            "item_field_mappings": {"Description": "line", "product2.name": "product"},
        }
    )
    orders = order_fields(config)
    assert "Account.External_Key__c" in orders and "Account.Parent.External_Key__c" in orders
    assert "Account.Customer_ID__c" not in orders
    assert orders[-2:] == ["Account.Type", "Name"]
    assert len({name.lower() for name in orders}) == len(orders)  # SOQL refuses a field selected twice
    items = item_fields(config)
    assert items[-2:] == ["Line_Number__c", "Description"]
    assert len({name.lower() for name in items}) == len(items)


CONFIGS = [
    ImportConfig(),
    parse_config(EXAMPLE),
    parse_config({"card_fields": ["Card_Token__c"], "order_field_mappings": {"Description": "d"}}),
    # Built without validation: the query builder must hold the line on its own.
    ImportConfig.model_construct(
        **{
            **dict(ImportConfig()),
            "card_fields": ("Card_Token__c",),
            "order_field_mappings": {
                "Credit_Card_Number__c": "a",
                "Card_Token__c": "b",
                "Account.Credit_Card_CVV__c": "c",
            },
            "item_field_mappings": {"Order.Credit_Card_Expiration_Year__c": "y", "Order.card_token__c": "t"},
        }
    ),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_card_fields_are_never_selected(config: ImportConfig) -> None:
    card = {name.lower() for name in (*DEFAULT_CARD_FIELDS, *config.card_fields)}
    queries = [
        build(config, window())
        for build in (build_orders_query, build_orders_bulk_query, build_items_query, build_count_query)
    ]
    selected = [*order_fields(config), *item_fields(config)]
    assert not [name for name in selected if name.rsplit(".", 1)[-1].lower() in card]
    for query in [*queries, build_status_changes_query(config.order_object, NOW)]:
        for name in card:
            assert name not in query.lower()


# --- window shapes --------------------------------------------------------------------------


def test_changed_window() -> None:
    query = build_orders_query(ImportConfig(), window())
    assert where_clause(query) == (
        "StatusCode = '' AND ActivatedDate >= 2024-01-03T03:04:05Z"
        " AND SystemModstamp >= 2026-01-02T02:04:05Z AND SystemModstamp < 2026-01-02T03:04:05Z"
    )
    assert "StatusCode = 'Activated'" in query
    assert query.endswith(" ORDER BY SystemModstamp, Id")


def test_first_run_window_has_only_the_lookback() -> None:
    query = build_orders_query(ImportConfig(), window(changed_from=None))
    assert where_clause(query) == (
        "StatusCode = '' AND ActivatedDate >= 2024-01-03T03:04:05Z AND SystemModstamp < 2026-01-02T03:04:05Z"
    )


def test_order_numbers_window() -> None:
    shape = window(changed_from=None, changed_to=None, order_numbers=("00000100", INJECTION))
    query = build_orders_query(ImportConfig(), shape)
    assert where_clause(query) == (
        "StatusCode = '' AND ActivatedDate >= 2024-01-03T03:04:05Z AND OrderNumber IN ('', '')"
    )
    assert r"OrderNumber IN ('00000100', 'x\' OR Name != \'')" in query
    assert "SystemModstamp >=" not in query


def test_order_ids_window() -> None:
    shape = window(changed_from=None, changed_to=None, order_ids=("801000000000001AAA", INJECTION))
    query = build_orders_query(ImportConfig(), shape)
    assert where_clause(query) == "StatusCode = '' AND ActivatedDate >= 2024-01-03T03:04:05Z AND Id IN ('', '')"
    assert r"Id IN ('801000000000001AAA', 'x\' OR Name != \'')" in query
    assert "SystemModstamp >=" not in query


def test_since_window_is_parenthesised() -> None:
    since = datetime(2025, 6, 1, tzinfo=UTC)
    query = build_orders_query(ImportConfig(), window(changed_from=None, since=since))
    assert where_clause(query) == (
        "StatusCode = '' AND ActivatedDate >= 2024-01-03T03:04:05Z"
        " AND (ActivatedDate >= 2025-06-01T00:00:00Z OR SystemModstamp >= 2025-06-01T00:00:00Z)"
        " AND SystemModstamp < 2026-01-02T03:04:05Z"
    )


def test_filter_value_is_quoted_not_pasted() -> None:
    config = parse_config({"filter_field": "Account.Type", "filter_value": INJECTION})
    query = build_orders_query(config, window())
    assert where_clause(query).endswith(" AND Account.Type = ''")
    assert query.count(r"'x\' OR Name != \''") == 1


@pytest.mark.parametrize(("value", "text"), [(3, "3"), (True, "true"), (2.5, "2.5")])
def test_filter_value_literals(value: object, text: str) -> None:
    config = parse_config({"filter_field": "Priority__c", "filter_value": value})
    assert where_clause(build_orders_query(config, window())).endswith(f" AND Priority__c = {text}")


def test_every_or_is_inside_parentheses() -> None:
    config = parse_config({"filter_field": "Type", "filter_value": "x OR y"})
    since = window(changed_from=None, since=NOW - timedelta(days=3))
    for query in (
        build_orders_query(config, since),
        build_orders_bulk_query(config, since),
        build_items_query(config, since),
        build_count_query(config, since),
        build_status_changes_query(config.order_object, NOW),
    ):
        depth = 0
        for token in re.findall(r"\(|\)|\bOR\b", where_clause(query)):
            depth += {"(": 1, ")": -1}.get(token, 0)
            assert token != "OR" or depth > 0, query
        assert depth == 0


def test_orders_query_reads_items_through_a_subquery() -> None:
    query = build_orders_query(ImportConfig(), window())
    subquery = "(SELECT " + ", ".join(item_fields(ImportConfig())) + " FROM OrderItems)"
    assert query.startswith(
        "SELECT " + ", ".join(order_fields(ImportConfig())) + ", " + subquery + " FROM Order WHERE "
    )


def test_bulk_orders_query_has_no_subquery() -> None:
    config = ImportConfig()
    rest = build_orders_query(config, window())
    conditions = rest.split(" FROM Order WHERE ", 1)[1].removesuffix(" ORDER BY SystemModstamp, Id")
    query = build_orders_bulk_query(config, window())
    assert query == "SELECT " + ", ".join(order_fields(config)) + " FROM Order WHERE " + conditions
    assert "(SELECT" not in query and "OrderItems" not in query


def test_items_query_selects_through_the_order() -> None:
    config = parse_config({"filter_field": "Type", "filter_value": "Renewal"})
    query = build_items_query(config, window(changed_from=None, since=NOW - timedelta(days=1)))
    assert query.startswith("SELECT " + ", ".join(item_fields(config)) + " FROM OrderItem WHERE ")
    assert where_clause(query) == (
        "Order.StatusCode = '' AND Order.ActivatedDate >= 2024-01-03T03:04:05Z"
        " AND (Order.ActivatedDate >= 2026-01-01T03:04:05Z OR Order.SystemModstamp >= 2026-01-01T03:04:05Z)"
        " AND Order.SystemModstamp < 2026-01-02T03:04:05Z AND Order.Type = ''"
    )


def test_count_query() -> None:
    query = build_count_query(ImportConfig(), window())
    assert query.startswith("SELECT COUNT() FROM Order WHERE StatusCode = 'Activated' AND ")
    assert "ORDER BY" not in query


def test_status_changes_query() -> None:
    query = build_status_changes_query(ImportConfig().order_object, datetime(2026, 1, 1, tzinfo=UTC))
    assert query == (
        "SELECT Id, OrderNumber, StatusCode, IsDeleted, SystemModstamp FROM Order"
        " WHERE SystemModstamp >= 2026-01-01T00:00:00Z AND (StatusCode != 'Activated' OR IsDeleted = true)"
        " ORDER BY SystemModstamp, Id"
    )


def test_configured_objects_are_used() -> None:
    config = parse_config(
        {
            "order_object": "Sales_Order__c",
            "order_item_object": "Sales_Line__c",
            "order_items_relationship": "Lines__r",
        }
    )
    assert " FROM Lines__r) FROM Sales_Order__c WHERE " in build_orders_query(config, window())
    assert " FROM Sales_Line__c WHERE " in build_items_query(config, window())
    assert build_count_query(config, window()).startswith("SELECT COUNT() FROM Sales_Order__c WHERE ")


def test_status_changes_need_an_aware_datetime() -> None:
    with pytest.raises(ValueError):
        build_status_changes_query(ImportConfig().order_object, datetime(2026, 1, 1))


# --- window validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"changed_from": datetime(2026, 1, 1)},
        {"activated_since": datetime(2024, 1, 1)},
        {"since": datetime(2025, 1, 1)},
        {"order_numbers": ("00000100",)},
        {"changed_from": NOW, "changed_to": NOW},
        {"changed_from": None, "changed_to": None, "order_numbers": ("",)},
    ],
)
def test_inconsistent_windows_are_refused(overrides: dict) -> None:
    with pytest.raises(ValueError, match="ExtractWindow"):
        window(**overrides)


def test_order_numbers_may_be_any_sequence() -> None:
    shape = window(changed_from=None, changed_to=None, order_numbers=["00000100"])
    assert shape.order_numbers == ("00000100",)
    assert hash(shape) == hash(window(changed_from=None, changed_to=None, order_numbers=("00000100",)))


# --- query errors: which configuration key put the refused name there ------------------


def refused(message: str, config: dict) -> tuple[str | None, tuple[str, ...]]:
    from salesforce_orders.soql import refused_name

    answer = refused_name(message, parse_config(config))
    return answer.name, answer.keys


def test_the_caret_points_at_the_whole_path_and_the_key_that_named_it() -> None:
    message = "\nSELECT Id, Account.Parent.Client__c FROM Order\n           ^\nERROR at Row:1:Column:12\nNo such column 'Client__c' on entity 'Account'."
    assert refused(message, {"customer_id_field": "Client__c"}) == ("Account.Parent.Client__c", ("customer_id_field",))


def test_an_exact_path_wins_over_a_name_it_ends_with() -> None:
    message = "\nSELECT Id, Account.Type FROM Order\n           ^\nERROR at Row:1:Column:12\nNo such column 'Type' on entity 'Account'."
    config = {
        "order_field_mappings": {"Type": "order_type"},
        "routing": {"rules": [{"field": "Account.Type", "operator": "is_null", "destination": "request"}]},
    }
    assert refused(message, config) == ("Account.Type", ("routing.rules[0].field",))


def test_without_a_caret_line_the_first_quoted_name_is_the_culprit() -> None:
    message = "No such column 'Region__c' on entity 'Order'. If you are attempting to use a custom field, ..."
    assert refused(message, {"order_field_mappings": {"Region__c": "region"}}) == ("Region__c", ("order_field_mappings.Region__c",))


def test_a_name_no_key_gave_is_named_without_a_key() -> None:
    message = "\nSELECT Id, PoNumber FROM Order\n           ^\nERROR at Row:1:Column:12\nNo such column 'PoNumber' on entity 'Order'."
    assert refused(message, {}) == ("PoNumber", ())


def test_the_ancestors_query_reads_an_account_and_five_levels_of_parents_with_ids_quoted():
    from salesforce_orders.soql import build_ancestors_query

    query = build_ancestors_query(ImportConfig(), ["001000000000001AAA", "001'x"])
    assert "Parent.Parent.Parent.Parent.Parent.ParentId" in query
    assert "Parent.Parent.Parent.Parent.Parent.Parent." not in query  # SOQL's limit: five levels
    assert query.endswith("FROM Account WHERE Id IN ('001000000000001AAA', '001\\'x') ORDER BY Id")
