"""The Variable's schema: defaults, strict types, ranges, names and the error messages."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from salesforce_orders.config import (
    EXAMPLE,
    VARIABLE_NAME,
    ConfigError,
    ImportConfig,
    load_config,
    parse_config,
)
from salesforce_sandbox.schema import CARD_FIELDS, build_schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def problems_of(raw: str | dict) -> dict[str, str]:
    """{path: message} of the ConfigError that parsing ``raw`` raises."""
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return dict(caught.value.problems)


def test_variable_name() -> None:
    assert VARIABLE_NAME == "salesforce_orders_config"


@pytest.mark.parametrize("raw", [None, "", "   ", "{}", {}])
def test_nothing_set_gives_the_defaults(raw: str | dict | None) -> None:
    assert parse_config(raw) == ImportConfig()


def test_defaults() -> None:
    config = ImportConfig()
    assert config.model_dump() == {
        "enabled": True,
        "lookback_days": 730,
        "overlap_minutes": 10,
        "order_object": "Order",
        "order_item_object": "OrderItem",
        "order_items_relationship": "OrderItems",
        "filter_field": None,
        "filter_value": None,
        "order_prefix": "",
        "imported_status": "Imported",
        "customer_id_field": "Customer_ID__c",
        "assigned_customer_id_prefix": "SF-",
        "card_fields": (
            "Credit_Card_Number__c",
            "Credit_Card_CVV__c",
            "Credit_Card_Expiration_Month__c",
            "Credit_Card_Expiration_Year__c",
        ),
        "service_number_field": "Service_Number__c",
        "routing": {"rules": (), "default_destination": "request"},
        "order_field_mappings": {},
        "item_field_mappings": {},
        "zero_total_policy": "import",
        "history_mode": False,
        "import_notes": True,
        "write_back": {"mark_imported": True, "set_customer_id": True, "x_out_card_fields": True, "x_out_card_fields_not_imported": True},
        "shipments": {
            "enabled": False,
            "order_fields": {"tracking_number": "Tracking_Number__c", "carrier": "Carrier__c", "shipped_date": "Shipped_Date__c"},
            "order_item_field": "Shipment_Details__c",
            "shipment_object": None,
        },
        "max_invalid_share": 0.25,
        "invalid_share_min_orders": 20,
        "writeback_max_attempts": 5,
        "retention_days": 3,
        "salesforce_conn_id": "salesforce_default",
        "warehouse_conn_id": "orders_warehouse",
        "warehouse_schema": None,
        "extract_page_size": 2000,
        "chunk_size": 2000,
        "transform_partitions": 2,
        "transform_partition_min_orders": 5000,
        "bulk_threshold": 50000,
        "bulk_writeback_threshold": 2000,
        "api_budget_share": 0.5,
        "notifications": {"email": None, "slack": None, "no_success_after_minutes": 120},
        "events": {"enabled": False, "topic": "/data/OrderChangeEvent", "window_seconds": 2.0,
                   "echo_client": "salesforce-orders-import", "pubsub_endpoint": None},
    }
    assert not config.notifications.enabled  # alerts are off until a channel is set


def test_defaults_name_the_sandbox_orgs_objects_and_fields() -> None:
    schema = build_schema()
    config = ImportConfig()
    order = schema.get(config.order_object)
    item = schema.get(config.order_item_object)
    account = schema.get("Account")
    assert order is not None and item is not None and account is not None
    assert order.child_relationship(config.order_items_relationship).child_object == item.name
    assert account.field(config.customer_id_field) is not None
    assert item.field(config.service_number_field) is not None
    assert set(config.card_fields) == set(CARD_FIELDS)
    assert "Imported" in [value.value for value in order.field("Status").picklist]


def test_the_example_sets_every_key_and_is_valid() -> None:
    assert set(EXAMPLE) == set(ImportConfig.model_fields)
    config = parse_config(EXAMPLE)
    assert config.routing.rules[0].value == ("New Service", "Add-On")
    assert config.order_field_mappings == {"PoNumber": "po_number", "Account.AccountNumber": "account_number"}


def test_json_text_and_dict_give_the_same_config() -> None:
    assert parse_config(json.dumps(EXAMPLE)) == parse_config(EXAMPLE)


def test_config_is_frozen() -> None:
    config = ImportConfig()
    with pytest.raises(ValidationError):
        config.lookback_days = 5  # type: ignore[misc]


def test_docs_show_the_example_and_every_key() -> None:
    text = DOCS.read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S)
    assert block, "docs/configuration.md has no JSON example"
    assert json.loads(block.group(1)) == EXAMPLE
    nested = {f"routing.{key}" for key in ("rules", "default_destination")} | {
        f"write_back.{key}" for key in ("mark_imported", "set_customer_id", "x_out_card_fields", "x_out_card_fields_not_imported")
    } | {f"shipments.{key}" for key in ("enabled", "order_fields", "order_item_field", "shipment_object")} | {f"notifications.{key}" for key in ("email", "email.to", "email.smtp_conn_id", "email.from_email", "slack",
                                               "slack.slack_webhook_conn_id", "no_success_after_minutes")} | {
        f"events.{key}" for key in ("enabled", "topic", "window_seconds", "echo_client", "pubsub_endpoint")}
    for key in {*ImportConfig.model_fields, *nested}:
        assert f"`{key}`" in text, f"{key} is not documented"
    assert f"airflow variables set {VARIABLE_NAME}" in text
    assert "AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG" in text


# --- error messages --------------------------------------------------------------------


@pytest.mark.parametrize(("events", "path", "message"), [
    ({"topic": "OrderChangeEvent"}, "events.topic", "not a Pub/Sub topic"),
    ({"window_seconds": 0}, "events.window_seconds", ""),
    ({"echo_client": "a client"}, "events.echo_client", "letters, digits"),
    ({"pubsub_endpoint": "not a host\nX-Evil: 1"}, "events.pubsub_endpoint", "host:port"),
    ({"pubsub_endpoint": "https://api.pubsub.salesforce.com"}, "events.pubsub_endpoint", "host:port"),
    ({"pubsub_endpoint": "api.pubsub.salesforce.com:70000"}, "events.pubsub_endpoint", "host:port"),
])
def test_events_section_is_checked(events: dict, path: str, message: str) -> None:
    problems = problems_of({"events": events})
    assert list(problems) == [path]
    assert message in problems[path]


def test_error_message_names_the_variable_the_path_and_the_value() -> None:
    raw = {"routing": {"rules": [{"field": "Type", "operator": "equals", "value": "x", "destination": "x"}]}}
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    assert str(caught.value) == (
        "salesforce_orders_config: routing.rules[0].destination: must be 'work_order' or 'request' (got 'x')"
    )
    assert isinstance(caught.value, ValueError)


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"lookback_days": 0, "enabled": "yes", "bogus": 1, "write_back": {"later": True}})
    assert set(problems) == {"lookback_days", "enabled", "bogus", "write_back.later"}


WRONG_TYPES = [
    ("enabled", "true", "must be true or false"),
    ("enabled", 1, "must be true or false"),
    ("lookback_days", "730", "must be a whole number"),
    ("lookback_days", 7.5, "must be a whole number"),
    ("lookback_days", True, "must be a whole number"),
    ("overlap_minutes", None, "must be a whole number"),
    ("order_object", 5, "must be a string"),
    ("order_item_object", ["OrderItem"], "must be a string"),
    ("order_items_relationship", None, "must be a string"),
    ("filter_field", 3, "must be a string"),
    ("order_prefix", 1, "must be a string"),
    ("imported_status", False, "must be a string"),
    ("customer_id_field", {}, "must be a string"),
    ("assigned_customer_id_prefix", 7, "must be a string"),
    ("card_fields", "Credit_Card_Number__c", "must be a list"),
    ("service_number_field", 1, "must be a string"),
    ("routing", [], "must be an object"),
    ("order_field_mappings", ["PoNumber"], "must be an object"),
    ("item_field_mappings", "x", "must be an object"),
    ("zero_total_policy", "drop", "must be 'import' or 'skip'"),
    ("history_mode", "yes", "must be true or false"),
    ("import_notes", "no", "must be true or false"),
    ("write_back", True, "must be an object"),
    ("shipments", "on", "must be an object"),
    ("max_invalid_share", "0.2", "must be a number"),
    ("invalid_share_min_orders", "20", "must be a whole number"),
    ("writeback_max_attempts", 2.0, "must be a whole number"),
    ("retention_days", "3", "must be a whole number"),
    ("salesforce_conn_id", 1, "must be a string"),
    ("warehouse_conn_id", None, "must be a string"),
    ("warehouse_schema", 1, "must be a string"),
    ("extract_page_size", "2000", "must be a whole number"),
    ("chunk_size", [1], "must be a whole number"),
    ("transform_partitions", "2", "must be a whole number"),
    ("transform_partition_min_orders", 5000.0, "must be a whole number"),
    ("bulk_threshold", 1e5, "must be a whole number"),
    ("bulk_writeback_threshold", False, "must be a whole number"),
    ("api_budget_share", True, "must be a number"),
    ("notifications", "slack", "must be an object"),
    ("events", True, "must be an object"),
]


@pytest.mark.parametrize(("key", "value", "message"), WRONG_TYPES)
def test_wrong_type(key: str, value: object, message: str) -> None:
    problems = problems_of({key: value})
    assert list(problems) == [key]
    assert problems[key].startswith(message)


def test_every_key_has_a_wrong_type_case() -> None:
    # filter_value takes any single value: its checks are in the filter tests below.
    assert {key for key, _, _ in WRONG_TYPES} == set(ImportConfig.model_fields) - {"filter_value"}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lookback_days", 0, "must be at least 1"),
        ("lookback_days", 3651, "must be at most 3650"),
        ("retention_days", 0, "must be at least 1"),
        ("overlap_minutes", -1, "must be at least 0"),
        ("overlap_minutes", 1441, "must be at most 1440"),
        ("max_invalid_share", -0.01, "must be at least 0"),
        ("max_invalid_share", 1.5, "must be at most 1"),
        ("invalid_share_min_orders", -1, "must be at least 0"),
        ("writeback_max_attempts", 0, "must be at least 1"),
        ("writeback_max_attempts", 51, "must be at most 50"),
        ("extract_page_size", 199, "must be at least 200"),
        ("extract_page_size", 2001, "must be at most 2000"),
        ("chunk_size", 99, "must be at least 100"),
        ("chunk_size", 50001, "must be at most 50000"),
        ("transform_partitions", 0, "must be at least 1"),
        ("transform_partitions", 65, "must be at most 64"),
        ("transform_partition_min_orders", 0, "must be at least 1"),
        ("bulk_threshold", -1, "must be at least 0"),
        ("bulk_writeback_threshold", -1, "must be at least 0"),
        ("api_budget_share", 2, "must be at most 1"),
        ("order_prefix", "P" * 41, "must be at most 40 characters"),
        ("imported_status", "S" * 41, "must be at most 40 characters"),
        ("assigned_customer_id_prefix", "P" * 23, "must be at most 22 characters"),
    ],
)
def test_out_of_range(key: str, value: object, message: str) -> None:
    problems = problems_of({key: value})
    assert list(problems) == [key]
    assert problems[key].startswith(f"{message} (got ")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lookback_days", 1),
        ("lookback_days", 3650),
        ("overlap_minutes", 0),
        ("max_invalid_share", 0),
        ("max_invalid_share", 1),
        ("extract_page_size", 200),
        ("chunk_size", 50000),
        ("transform_partitions", 1),
        ("transform_partitions", 64),
        ("api_budget_share", 0.5),
    ],
)
def test_range_bounds_are_inclusive(key: str, value: object) -> None:
    assert getattr(parse_config({key: value}), key) == value


def test_unknown_top_level_key() -> None:
    assert problems_of({"lookback": 30}) == {"lookback": "unknown key"}


def test_unknown_nested_keys() -> None:
    raw = {
        "write_back": {"mark_imported": False, "sync_tracking": True},
        "routing": {
            "rules": [{"field": "Type", "operator": "is_null", "destination": "request", "priority": 1}]
        },
    }
    assert problems_of(raw) == {
        "write_back.sync_tracking": "unknown key",
        "routing.rules[0].priority": "unknown key",
    }


def test_a_key_given_twice_is_refused_naming_it_at_any_depth() -> None:
    raw = (
        '{"lookback_days": 30, "enabled": true, "lookback_days": 40, "lookback_days": 50,'
        ' "routing": {"rules": [{"field": "Type", "operator": "is_null", "field": "Type", "destination": "request"}]},'
        ' "order_field_mappings": {"Account.Name": "account", "Account.Name": "name"}}'
    )
    assert problems_of(raw) == {
        "lookback_days": "duplicate key (given 3 times): keep one",
        "routing.rules[0].field": "duplicate key (given 2 times): keep one",
        "order_field_mappings['Account.Name']": "duplicate key (given 2 times): keep one",
    }
    with pytest.raises(ConfigError, match=r"^salesforce_orders_config: lookback_days: duplicate key"):
        parse_config(raw)


def test_the_same_key_in_different_objects_is_no_duplicate() -> None:
    raw = '{"write_back": {"mark_imported": true}, "notifications": {"email": {"to": ["a@example.com"]}}, "enabled": true}'
    assert parse_config(raw).write_back.mark_imported is True


def test_not_json() -> None:
    problems = problems_of('{"enabled": true,')
    assert list(problems) == [""]
    assert problems[""].startswith("not valid JSON")
    with pytest.raises(ConfigError, match=r"^salesforce_orders_config: not valid JSON"):
        parse_config("{")


def test_nan_is_not_a_number() -> None:
    assert problems_of('{"max_invalid_share": NaN}') == {"": "not valid JSON: NaN is not a number"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('{"lookback_days": ' + "1" * 5000 + "}", "Exceeds the limit (4300 digits)"),
        ("[" * 100_000, "nested too deeply"),
    ],
    ids=["a number of 5,000 digits", "100,000 levels of nesting"],
)
def test_json_python_cannot_read_is_a_config_error_not_a_traceback(raw: str, message: str) -> None:
    problems = problems_of(raw)
    assert list(problems) == [""] and message in problems[""]


@pytest.mark.parametrize("prefix", ["SF\u0085-", "SF\u2028", "SF\u009f"])
def test_an_order_prefix_with_a_unicode_control_or_line_separator_is_refused(prefix: str) -> None:
    assert "control characters" in problems_of({"order_prefix": prefix})["order_prefix"]


@pytest.mark.parametrize("raw", ["[1, 2]", '"text"', "7"])
def test_top_level_must_be_an_object(raw: str) -> None:
    assert list(problems_of(raw)) == [""]


# --- filter ---------------------------------------------------------------------------


def test_filter_field_without_value() -> None:
    assert problems_of({"filter_field": "Type"}) == {"filter_value": "required when filter_field is set"}


def test_filter_value_without_field() -> None:
    assert problems_of({"filter_value": "x"}) == {
        "filter_value": "set filter_field too, or remove filter_value (got 'x')"
    }


@pytest.mark.parametrize("value", ["New Service", 3, 2.5, True, False])
def test_filter_value_types(value: object) -> None:
    config = parse_config({"filter_field": "Type", "filter_value": value})
    assert config.filter_value == value


@pytest.mark.parametrize("value", [["a"], {"a": 1}])
def test_filter_value_must_be_a_single_value(value: object) -> None:
    assert problems_of({"filter_field": "Type", "filter_value": value})["filter_value"].startswith(
        "must be a string, a number or true/false"
    )


def test_injection_in_filter_value_is_kept_as_data() -> None:
    # Values are quoted when the query is built (see test_soql), so any text is a valid value.
    config = parse_config({"filter_field": "Type", "filter_value": "x' OR Name != '"})
    assert config.filter_value == "x' OR Name != '"


def test_filter_field_may_be_a_relationship_path() -> None:
    assert (
        parse_config({"filter_field": "Account.Type", "filter_value": "Partner"}).filter_field
        == "Account.Type"
    )


# --- names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("filter_field", "Name = 'x' OR Id"),
        ("filter_field", "Type)"),
        ("filter_field", "Account..Name"),
        ("order_object", "Order WHERE Id != null"),
        ("order_object", "Account.Order"),
        ("order_item_object", "Order_Item__c;"),
        ("order_items_relationship", "(SELECT Id FROM OrderItems)"),
        ("customer_id_field", "Customer ID"),
        ("customer_id_field", "Parent.Customer_ID__c"),
        ("service_number_field", "_Service"),
        ("service_number_field", "1Service"),
        ("service_number_field", "S" * 81),
    ],
)
def test_invalid_api_names_are_rejected(key: str, value: str) -> None:
    message = problems_of({key: value, **({"filter_value": 1} if key == "filter_field" else {})})[key]
    assert message.startswith("not a valid Salesforce")


def test_api_name_length_limit() -> None:
    assert parse_config({"service_number_field": "S" * 80}).service_number_field == "S" * 80


def test_invalid_card_field_name() -> None:
    problems = problems_of({"card_fields": ["Credit_Card_Number__c", "Card Number"]})
    assert list(problems) == ["card_fields[1]"]


def test_injection_in_routing_field_is_rejected() -> None:
    raw = {
        "routing": {
            "rules": [{"field": "Type = 'x') OR (Id", "operator": "is_null", "destination": "request"}]
        }
    }
    assert problems_of(raw)["routing.rules[0].field"].startswith("not a valid Salesforce API name")


def test_mapping_keys_are_api_paths_and_values_identifiers() -> None:
    raw = {
        "order_field_mappings": {
            "Po Number": "po",
            "PoNumber": "po number",
            "Account.AccountNumber": "account_number",
        }
    }
    problems = problems_of(raw)
    assert problems["order_field_mappings['Po Number']"].startswith("not a valid Salesforce API name")
    assert problems["order_field_mappings.PoNumber"].startswith("not a valid identifier")
    assert len(problems) == 2


def test_mapping_values_must_be_strings() -> None:
    assert problems_of({"item_field_mappings": {"Description": 5}}) == {
        "item_field_mappings.Description": "must be a string (got 5)"
    }


def test_two_fields_cannot_share_a_metadata_key() -> None:
    problems = problems_of({"item_field_mappings": {"Description": "text", "Product2.Description": "text"}})
    assert problems == {
        "item_field_mappings['Product2.Description']": "metadata key 'text' is already mapped from 'Description'"
    }


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (
            {"order_field_mappings": {"Credit_Card_Number__c": "card"}},
            "order_field_mappings.Credit_Card_Number__c",
        ),
        (
            {"item_field_mappings": {"Order.credit_card_cvv__c": "cvv"}},
            "item_field_mappings['Order.credit_card_cvv__c']",
        ),
        (
            {
                "routing": {
                    "rules": [
                        {
                            "field": "Credit_Card_Expiration_Year__c",
                            "operator": "not_null",
                            "destination": "request",
                        }
                    ]
                }
            },
            "routing.rules[0].field",
        ),
        ({"filter_field": "Credit_Card_Number__c", "filter_value": "4111"}, "filter_field"),
        # the customer id is read from the Account, its parent and every ancestor (a CVV is no card
        # number to the scanner: it would be stored as the customer's key)
        ({"customer_id_field": "Credit_Card_CVV__c"}, "customer_id_field"),
        (
            {"card_fields": ["Secret__c"], "order_field_mappings": {"Secret__c": "s"}},
            "order_field_mappings.Secret__c",
        ),
    ],
)
def test_card_fields_cannot_be_read_through_any_key(raw: dict, path: str) -> None:
    problems = problems_of(raw)
    assert list(problems) == [path]
    assert "card field" in problems[path]


@pytest.mark.parametrize("schema", ["public; DROP TABLE orders", "1analytics", 'a"b', "a-b", "", "x" * 64])
def test_bad_warehouse_schema(schema: str) -> None:
    assert problems_of({"warehouse_schema": schema})["warehouse_schema"].startswith("not a valid identifier")


def test_good_warehouse_schema() -> None:
    assert parse_config({"warehouse_schema": "analytics_2"}).warehouse_schema == "analytics_2"


@pytest.mark.parametrize("conn_id", ["sales force", "sf;drop", "", "x/y"])
def test_bad_connection_ids(conn_id: str) -> None:
    assert problems_of({"salesforce_conn_id": conn_id})["salesforce_conn_id"].startswith(
        "not a valid Airflow connection id"
    )


@pytest.mark.parametrize(
    ("key", "value"), [("imported_status", "  "), ("imported_status", "Imp\norted"), ("order_prefix", "A\tB")]
)
def test_texts_must_be_plain(key: str, value: str) -> None:
    assert key in problems_of({key: value})


# --- routing --------------------------------------------------------------------------


def _rule(**overrides: object) -> dict:
    return {"routing": {"rules": [{"field": "Type", "destination": "work_order", **overrides}]}}


@pytest.mark.parametrize(
    ("operator", "value", "stored"),
    [
        ("equals", "New Service", "New Service"),
        ("equals", 5, 5),
        ("equals", False, False),
        ("in", ["New Service", "Change"], ("New Service", "Change")),
        ("contains", "Serv", "Serv"),
        ("starts_with", "New", "New"),
        ("is_null", None, None),
        ("not_null", None, None),
    ],
)
def test_valid_rules(operator: str, value: object, stored: object) -> None:
    raw = _rule(operator=operator, **({"value": value} if value is not None else {}))
    [rule] = parse_config(raw).routing.rules
    assert (rule.operator, rule.value) == (operator, stored)


@pytest.mark.parametrize(
    ("operator", "value", "message"),
    [
        ("equals", None, "operator 'equals' needs a string, a number or true/false"),
        ("equals", ["a"], "operator 'equals' needs a string, a number or true/false"),
        ("in", "a", "operator 'in' needs a non-empty list"),
        ("in", [], "operator 'in' needs a non-empty list"),
        ("in", [["a"]], "operator 'in' needs strings, numbers or true/false"),
        ("contains", "", "operator 'contains' needs a non-empty string"),
        ("starts_with", 5, "operator 'starts_with' needs a non-empty string"),
        ("is_null", "x", "operator 'is_null' takes no value"),
    ],
)
def test_rule_value_must_fit_the_operator(operator: str, value: object, message: str) -> None:
    raw = _rule(operator=operator, value=value)
    assert problems_of(raw)["routing.rules[0].value"].startswith(message)


def test_unknown_operator() -> None:
    problems = problems_of(_rule(operator="like", value="x"))
    assert list(problems) == ["routing.rules[0].operator"]
    assert problems["routing.rules[0].operator"].startswith("must be 'equals', 'in', 'contains'")


def test_rule_without_field_or_destination() -> None:
    raw = {"routing": {"rules": [{"operator": "is_null"}]}}
    assert problems_of(raw) == {
        "routing.rules[0].field": "required",
        "routing.rules[0].destination": "required",
    }


def test_bad_default_destination() -> None:
    assert problems_of({"routing": {"default_destination": "queue"}}) == {
        "routing.default_destination": "must be 'work_order' or 'request' (got 'queue')"
    }


# --- reading the Variable ---------------------------------------------------------------


# --- notifications ---------------------------------------------------------------------


def test_notifications_with_both_channels() -> None:
    config = parse_config({"notifications": {"email": {"to": ["a@example.com", "b@example.org"]}, "slack": {}}})
    assert config.notifications.enabled
    assert config.notifications.email.to == ("a@example.com", "b@example.org")
    assert config.notifications.email.smtp_conn_id == "smtp_default"
    assert config.notifications.email.from_email is None
    assert config.notifications.slack.slack_webhook_conn_id == "slack_default"


@pytest.mark.parametrize(
    ("notifications", "path", "message"),
    [
        ({"email": {}}, "notifications.email.to", "required"),
        ({"email": {"to": []}}, "notifications.email.to", "needs at least one address"),
        ({"email": {"to": "a@example.com"}}, "notifications.email.to", "must be a list"),
        ({"email": {"to": ["a@example.com", "oncall"]}}, "notifications.email.to[1]", "not an e-mail address (got 'oncall')"),
        ({"email": {"to": ["a@example.com"], "from_email": "x"}}, "notifications.email.from_email", "not an e-mail address"),
        ({"email": {"to": ["a@example.com"], "smtp_conn_id": "smtp default"}}, "notifications.email.smtp_conn_id", "not a valid Airflow connection id"),
        ({"slack": {"channel": "#orders"}}, "notifications.slack.channel", "unknown key"),
        ({"pager": {}}, "notifications.pager", "unknown key"),
        ({"no_success_after_minutes": 14}, "notifications.no_success_after_minutes", "must be at least 15"),
        ({"no_success_after_minutes": "2h"}, "notifications.no_success_after_minutes", "must be a whole number"),
    ],
)
def test_bad_notifications(notifications: dict, path: str, message: str) -> None:
    problems = problems_of({"notifications": notifications})
    assert list(problems) == [path]
    assert problems[path].startswith(message)


def test_load_config_reads_the_variable_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({"lookback_days": 30}))
    assert load_config().lookback_days == 30


def test_load_config_without_the_variable_gives_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import Variable

    calls = []

    def fake_get(key: str, default: object = None, **kwargs: object) -> object:
        calls.append((key, default))
        return default

    monkeypatch.setattr(Variable, "get", staticmethod(fake_get))
    assert load_config() == ImportConfig()
    assert calls == [(VARIABLE_NAME, None)]


def test_load_config_raises_on_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", '{"lookback_days": -1}')
    with pytest.raises(ConfigError, match="lookback_days"):
        load_config()


def test_importing_the_config_does_not_touch_airflow() -> None:
    code = "import sys, salesforce_orders.config; print(any(m.startswith('airflow') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
