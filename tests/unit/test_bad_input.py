"""Bad input: records, configuration and connections that are wrong in every way we know of.

Each case gets a clear error naming the record (quarantine, with the field and the value) or
the key (configuration) or the connection; nothing valid is lost with it: the bad records of
one run are validated, transformed and loaded together with valid ones, and every valid one is
in the warehouse afterwards, intact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from airflow.sdk.exceptions import AirflowFailException
from pydantic import BaseModel

from salesforce_orders.config import ConfigError, ImportConfig, parse_config
from salesforce_orders.warehouse import WarehouseConnectionError

RUN_ID = "manual__bad_input"
TODAY = date(2026, 3, 1)
VALID_ORDERS = 5

# ---------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------


def order_id(n: int) -> str:
    return f"801{n:012d}AAA"


def staged_order(n: int, **fields: Any) -> dict[str, Any]:
    """A valid staged order (flattened as the extract stages it), with ``fields`` changed."""
    record = {
        "Id": order_id(n),
        "OrderNumber": f"{n:08d}",
        "Status": "Activated",
        "StatusCode": "Activated",
        "Type": "New Service",
        "EffectiveDate": "2026-01-15",
        "ActivatedDate": "2026-01-16T10:00:00.000+0000",
        "TotalAmount": 100.0,
        "CurrencyIsoCode": "USD",
        "BillingStreet": "1 Main St",
        "BillingCity": "Springfield",
        "BillingState": "IL",
        "BillingPostalCode": "62701",
        "BillingCountry": "United States",
        "ShippingStreet": "9 Depot Rd",
        "ShippingCity": "Chicago",
        "ShippingState": "IL",
        "ShippingPostalCode": "60601",
        "ShippingCountry": "United States",
        "Description": "Ring twice",
        "PoNumber": f"PO-{n}",
        "CreatedDate": "2026-01-10T09:00:00.000+0000",
        "LastModifiedDate": "2026-01-16T10:00:00.000+0000",
        "SystemModstamp": "2026-01-16T10:00:00.000+0000",
        "AccountId": f"001{n:012d}AAA",
        "Account.Name": f"Account {n}",
        "Account.ParentId": None,
        "Account.Parent.Name": None,
        "Account.Customer_ID__c": None,
        "Account.Parent.Customer_ID__c": None,
    }
    record.update(fields)
    return record


def staged_item(n: int, position: int = 1, **fields: Any) -> dict[str, Any]:
    item = {
        "Id": f"802{n:010d}{position:02d}AAA",
        "OrderId": order_id(n),
        "Product2Id": "01t000000000001AAA",
        "Product2.ProductCode": "P-1",
        "Product2.Name": "Fibre 100",
        "Quantity": 1.0,
        "UnitPrice": 100.0,
        "TotalPrice": 100.0,
        "Service_Number__c": None,
    }
    item.update(fields)
    return item


@dataclass(frozen=True)
class RecordCase:
    order: dict[str, Any]
    items: list[dict[str, Any]]
    check: str | None = None  # the failed check expected; None: the order is valid and loaded
    names: tuple[str, ...] = ()  # what the quarantine message must name (field, value)


_BLANK_OPTIONAL = ("Type", "Description", "PoNumber", "BillingState", "CurrencyIsoCode",
                   *(f"Shipping{p}" for p in ("Street", "City", "State", "PostalCode", "Country")))
LONG_CITY = "Llanfairpwllgwyngyllgogerychwyrndrobwllllantysiliogogogoch"  # 58 characters; the field holds 40

RECORD_CASES: dict[str, RecordCase] = {
    # valid, however odd: loaded with every value intact
    "nulls in every optional field": RecordCase(
        staged_order(101, **dict.fromkeys(_BLANK_OPTIONAL), **{"Account.ParentId": None}),
        [staged_item(101, **{"Product2.ProductCode": None, "Service_Number__c": None})],
    ),
    "empty strings in optional fields": RecordCase(staged_order(102, **dict.fromkeys(_BLANK_OPTIONAL, "")), [staged_item(102)]),
    "non-ASCII and emoji": RecordCase(
        staged_order(103, **{"Account.Name": "Café Zoë 北京 🚀", "Description": "Bitte läuten 🔔", "ShippingCity": "München",
                             "ShippingCountry": "Germany", "ShippingState": None, "ShippingPostalCode": "80331"}),
        [staged_item(103, **{"Product2.Name": "Glasfaser ✨"})],
    ),
    "quotes and backslashes in names": RecordCase(
        staged_order(104, **{"Account.Name": 'O\'Brien "Quotes" \\ Backslash; --', "Description": "it's \"fine\" \\n"}),
        [staged_item(104, **{"Product2.Name": "12\" rack 'deluxe' \\ v2"})],
    ),
    "unknown picklist value": RecordCase(staged_order(105, Type="Mystery Type", CurrencyIsoCode="XTS"), [staged_item(105)]),
    # invalid: quarantined, the message names the field and the value
    "over-long value": RecordCase(staged_order(106, ShippingCity=LONG_CITY), [staged_item(106)], "field_lengths",
                                  ("ShippingCity", "58 characters")),
    "over-long account name": RecordCase(staged_order(107, **{"Account.Name": "A" * 300}), [staged_item(107)], "field_lengths",
                                         ("Account.Name", "300 characters")),
    "malformed effective date": RecordCase(staged_order(108, EffectiveDate="2026-13-45"), [staged_item(108)],
                                           "effective_date_valid", ("EffectiveDate", "2026-13-45")),
    "malformed activated date": RecordCase(staged_order(109, ActivatedDate="yesterday"), [staged_item(109)],
                                           "activated_date_valid", ("ActivatedDate", "yesterday")),
    "effective date far in the future": RecordCase(staged_order(110, EffectiveDate="2031-01-01"), [staged_item(110)],
                                                   "effective_date_valid", ("EffectiveDate", "2031-01-01")),
    "unknown status": RecordCase(staged_order(111, StatusCode="Shipped"), [staged_item(111)], "status_activated",
                                 ("StatusCode", "Shipped")),
    "negative quantity": RecordCase(staged_order(112, TotalAmount=-200.0), [staged_item(112, Quantity=-2.0, TotalPrice=-200.0)],
                                    "quantities_positive", ("Quantity", "-2.0", staged_item(112)["Id"])),
    "negative unit price": RecordCase(staged_order(113, TotalAmount=-5.0), [staged_item(113, UnitPrice=-5.0, TotalPrice=-5.0)],
                                      "unit_prices_non_negative", ("UnitPrice", "-5.0")),
    "total not matching products": RecordCase(staged_order(114, TotalAmount=150.0), [staged_item(114)],
                                              "total_matches_products", ("TotalAmount", "150.0", "100.0")),
    "missing total": RecordCase(staged_order(115, TotalAmount=None), [staged_item(115)], "total_non_negative",
                                ("TotalAmount is missing",)),
    "missing account": RecordCase(staged_order(116, AccountId=None, **{"Account.Name": None}), [staged_item(116)],
                                  "account_present", ("AccountId is missing",)),
    "account without a name": RecordCase(staged_order(117, **{"Account.Name": None}), [staged_item(117)], "account_present",
                                         ("Account.Name is missing",)),
    "missing order number": RecordCase(staged_order(118, OrderNumber=None), [staged_item(118)], "order_number_present",
                                       ("OrderNumber is missing",)),
    "no products": RecordCase(staged_order(119, TotalAmount=0.0), [], "has_products", ("no products",)),
    "unrecognisable country": RecordCase(staged_order(120, ShippingCountry="Atlantis"), [staged_item(120)], "country_resolvable",
                                         ("ShippingCountry", "Atlantis")),
    "incomplete service address": RecordCase(staged_order(121, ShippingCity=None, ShippingPostalCode=""), [staged_item(121)],
                                             "service_address_complete", ("ShippingCity", "ShippingPostalCode")),
    "duplicate order number": RecordCase(staged_order(122, OrderNumber="00000999"), [staged_item(122)], "order_number_unique",
                                         ("00000999",)),
    "duplicate order number, the other one": RecordCase(staged_order(123, OrderNumber="00000999"), [staged_item(123)],
                                                        "order_number_unique", ("00000999",)),
}


@dataclass
class LoadedRun:
    engine: sa.Engine
    validation: Any
    loaded: dict[str, dict[str, Any]]
    quarantined: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def loaded_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedRun]:
    """All record cases staged in one run with valid orders, then validated, transformed and loaded."""
    from salesforce_orders.load import load_run
    from salesforce_orders.quarantine import validate_run
    from salesforce_orders.schema_versions import create_all
    from salesforce_orders.staging import iter_staged, stage_items, stage_orders, stage_transformed
    from salesforce_orders.transform import transform_order
    from salesforce_orders.warehouse import create_sqlite_engine, tables

    engine = create_sqlite_engine(str(tmp_path_factory.mktemp("bad-input") / "warehouse.db"))
    create_all(engine)
    config = parse_config({"max_invalid_share": 1.0})
    orders = [staged_order(n) for n in range(1, VALID_ORDERS + 1)] + [case.order for case in RECORD_CASES.values()]
    items = [staged_item(n) for n in range(1, VALID_ORDERS + 1)] + [i for case in RECORD_CASES.values() for i in case.items]
    with engine.begin() as conn:
        stage_orders(conn, RUN_ID, orders)
        stage_items(conn, RUN_ID, items)
    validation = validate_run(engine, RUN_ID, config, today=TODAY)
    for chunk in iter_staged(engine, RUN_ID):
        records = [transform_order(o, i, config, instance_url="https://example.my.salesforce.com") for o, i in chunk]
        with engine.begin() as conn:
            stage_transformed(conn, RUN_ID, records)
    from salesforce_orders.staging import iter_transformed

    load_run(engine, RUN_ID, iter_transformed(engine, RUN_ID), watermark=None)
    t = tables(None)
    with engine.connect() as conn:
        loaded = {r["sf_order_id"]: dict(r) for r in conn.execute(sa.select(t.external_orders)).mappings()}
        quarantined = {r["sf_order_id"]: dict(r) for r in conn.execute(sa.select(t.quarantined_orders)).mappings()}
        for order in loaded.values():
            order["items"] = [
                dict(r) for r in conn.execute(
                    sa.select(t.external_order_items).where(t.external_order_items.c.sf_order_id == order["sf_order_id"])
                ).mappings()
            ]
    yield LoadedRun(engine, validation, loaded, quarantined)
    engine.dispose()


def test_every_valid_order_is_loaded_with_the_bad_ones_around(loaded_run):
    valid = {order_id(n) for n in range(1, VALID_ORDERS + 1)} | {c.order["Id"] for c in RECORD_CASES.values() if c.check is None}
    invalid = {c.order["Id"] for c in RECORD_CASES.values() if c.check is not None}
    assert set(loaded_run.loaded) == valid
    assert set(loaded_run.quarantined) == invalid
    assert loaded_run.validation.checked == len(valid) + len(invalid)


@pytest.mark.parametrize("case", [name for name, c in RECORD_CASES.items() if c.check is None])
def test_odd_but_valid_record_is_loaded_intact(loaded_run, case):
    record = RECORD_CASES[case]
    stored = loaded_run.loaded[record.order["Id"]]
    order = record.order
    blank = lambda value: value is None or not str(value).strip()  # noqa: E731
    assert stored["account_name"] == order["Account.Name"]
    assert stored["external_name"] == f"{order['OrderNumber']} {order['Account.Name']}"
    assert stored["notes"] == (None if blank(order["Description"]) else order["Description"])
    assert stored["order_type"] == (None if blank(order["Type"]) else order["Type"])
    assert stored["po_number"] == (None if blank(order["PoNumber"]) else order["PoNumber"])
    expected_source = "shipping" if not blank(order["ShippingStreet"]) else "billing"
    assert stored["service_address_source"] == expected_source
    assert stored["service_city"] == (order["ShippingCity"] if expected_source == "shipping" else order["BillingCity"])
    assert [i["product_name"] for i in stored["items"]] == [i["Product2.Name"] for i in record.items]
    assert stored["lifecycle_state"] == "READY" and stored["sf_state"] == "active"


@pytest.mark.parametrize("case", [name for name, c in RECORD_CASES.items() if c.check is not None])
def test_bad_record_is_quarantined_with_a_message_naming_field_and_value(loaded_run, case):
    record = RECORD_CASES[case]
    quarantined = loaded_run.quarantined[record.order["Id"]]
    assert record.check in quarantined["failed_checks"]
    assert quarantined["order_number"] == record.order["OrderNumber"]  # the record is named too
    message = quarantined["details"][record.check]
    for name in record.names:
        assert name in message, (name, message)


# ---------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------


def wrong_type(name: str) -> Any:
    """A value of the wrong JSON type for the key: a list where an object is wanted, else an object."""
    annotation = ImportConfig.model_fields[name].annotation
    wants_object = getattr(annotation, "__origin__", None) is dict or (
        isinstance(annotation, type) and issubclass(annotation, BaseModel)
    )
    return ["x"] if wants_object else {"x": 1}


def problems_of(raw: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)
    return dict(caught.value.problems)


@pytest.mark.parametrize("key", list(ImportConfig.model_fields))
def test_every_key_with_a_wrong_type_is_refused_naming_it(key):
    problems = problems_of({key: wrong_type(key)})
    assert [path for path in problems if path == key or path.startswith(f"{key}.") or path.startswith(f"{key}[")], problems
    assert all(message for message in problems.values())


WRONG_VALUES = {
    "lookback_days": (0, "must be at least 1"),
    "overlap_minutes": (-5, "must be at least 0"),
    "order_object": ("Order; DELETE", "not a valid Salesforce API name"),
    "filter_field": ("Type = 'x' OR Id", "not a valid Salesforce API name"),
    "order_prefix": ("SF-\n", "must not contain control characters"),
    "imported_status": ("   ", "must not be blank"),
    "card_fields": (["Credit Card"], "not a valid Salesforce API name"),
    "zero_total_policy": ("ignore", "must be"),
    "max_invalid_share": (1.5, "must be at most 1"),
    "writeback_max_attempts": (0, "must be at least 1"),
    "retention_days": (0, "must be at least 1"),
    "salesforce_conn_id": ("sales force", "not a valid Airflow connection id"),
    "warehouse_schema": ('public"; DROP TABLE customers; --', "not a valid identifier"),
    "extract_page_size": (50, "must be at least 200"),
    "api_budget_share": (-0.1, "must be at least 0"),
}


@pytest.mark.parametrize("key", list(WRONG_VALUES))
def test_key_with_a_wrong_value_is_refused_naming_it_and_the_value(key):
    value, message = WRONG_VALUES[key]
    with pytest.raises(ConfigError) as caught:
        parse_config({key: value, **({"filter_value": "x"} if key == "filter_field" else {})})
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"salesforce_orders_config: {key}")
    assert message in line
    shown = value[0] if isinstance(value, list) else value
    assert f"(got {shown!r})" in line or f"(got {json.dumps(shown)})" in line


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"lookback": 30}, "lookback"),
        ({"routing": {"rule": []}}, "routing.rule"),
        ({"write_back": {"mark_imported": True, "xout": True}}, "write_back.xout"),
    ],
)
def test_unknown_keys_are_refused_naming_them(raw, path):
    assert problems_of(raw)[path] == "unknown key"


def test_a_key_given_twice_in_the_variable_fails_the_run_without_retry_naming_it(connections, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", '{"lookback_days": 30, "lookback_days": 3650}')
    with pytest.raises(AirflowFailException, match=r"^salesforce_orders_config: lookback_days: duplicate key \(given 2 times\)"):
        extract()


def test_every_problem_is_reported_at_once():
    problems = problems_of({"lookback_days": "30", "warehouse_schema": "a b", "nope": 1})
    assert set(problems) == {"lookback_days", "warehouse_schema", "nope"}


def test_soql_injection_in_the_filter_value_is_accepted_as_a_value_and_quoted():
    from datetime import UTC, datetime

    from salesforce_orders.soql import ExtractWindow, build_orders_query

    config = parse_config({"filter_field": "Type", "filter_value": "x' OR Name != '"})
    soql = build_orders_query(config, ExtractWindow(None, None, datetime(2024, 1, 1, tzinfo=UTC)))
    assert "Type = 'x\\' OR Name != \\''" in soql


# ---------------------------------------------------------------------------------------
# Connections
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from salesforce_orders_local.airflow_env import configure
    from salesforce_sandbox.server import SandboxServer

    configure(Path(os.environ["AIRFLOW_HOME"]))  # missing connections are looked up in the metadata DB
    with SandboxServer(port=0, orders=20, seed=3, state_dir=tmp_path_factory.mktemp("sandbox")) as server:
        yield server


@pytest.fixture
def connections(small_org: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Working connections to the small org and a SQLite warehouse; tests break one of them."""
    from salesforce_orders_local.airflow_env import connection_env, sqlite_warehouse_connection

    def use(conn_id: str, connection: dict[str, Any] | None) -> None:
        for key, value in connection_env(conn_id, connection or {}).items():
            if connection is None:
                monkeypatch.delenv(key, raising=False)
            else:
                monkeypatch.setenv(key, value)

    use("salesforce_default", small_org.airflow_connection())
    use("orders_warehouse", sqlite_warehouse_connection(tmp_path / "warehouse.db"))
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps({}))
    use.org = small_org
    return use


def extract() -> dict[str, Any]:
    from salesforce_orders import stages

    return stages.extract(
        run_id=RUN_ID, dag_run_id=RUN_ID, run_type="manual", data_interval_start=None, data_interval_end=None, params={}
    )


def test_working_connections_extract(connections):
    assert extract()["extracted"] > 0


def test_missing_salesforce_connection_is_named(connections):
    from airflow.sdk.exceptions import AirflowNotFoundException

    connections("salesforce_default", None)
    with pytest.raises(AirflowNotFoundException, match="conn_id `salesforce_default` isn't defined"):
        extract()


def test_missing_warehouse_connection_is_named(connections):
    connections("orders_warehouse", None)
    with pytest.raises(WarehouseConnectionError, match="'orders_warehouse' is not defined"):
        extract()


def test_warehouse_connection_of_an_unsupported_type_is_named(connections):
    connections("orders_warehouse", {"conn_type": "mysql", "host": "localhost"})
    with pytest.raises(WarehouseConnectionError, match="'orders_warehouse' has conn_type 'mysql'"):
        extract()


def test_wrong_salesforce_credentials_fail_without_retry_naming_the_connection(connections):
    wrong = {**connections.org.airflow_connection(), "password": "not-the-password"}
    connections("salesforce_default", wrong)
    with pytest.raises(AirflowFailException, match=r"refused the login of Airflow connection 'salesforce_default'.*INVALID_LOGIN"):
        extract()


# Names valid in form that this org does not accept: (config, the key named, the name Salesforce pointed at).
WRONG_FOR_THE_ORG = {
    "unknown field in a mapping": ({"order_field_mappings": {"Region__c": "region"}}, "order_field_mappings.Region__c", "Region__c"),
    "unknown relationship": ({"order_field_mappings": {"Reseller__r.Name": "reseller"}}, "order_field_mappings['Reseller__r.Name']", "Reseller__r.Name"),
    "reserved word as the filter field": ({"filter_field": "Limit", "filter_value": "x"}, "filter_field", "Limit"),
    "unknown customer id field": ({"customer_id_field": "Client_Number__c"}, "customer_id_field", "Account.Client_Number__c"),
    "unknown routing field": (
        {"routing": {"rules": [{"field": "Account.Segment__c", "operator": "equals", "value": "SMB", "destination": "request"}]}},
        "routing.rules[0].field", "Account.Segment__c",
    ),
    "unknown order object": ({"order_object": "Orders"}, "order_object", "Orders"),
    "reserved word as the service number field, Bulk API": ({"service_number_field": "From", "bulk_threshold": 0}, "service_number_field", "From"),
    "unknown item field, Bulk API": ({"item_field_mappings": {"Colour__c": "colour"}, "bulk_threshold": 0}, "item_field_mappings.Colour__c", "Colour__c"),
}


@pytest.mark.parametrize("case", list(WRONG_FOR_THE_ORG))
def test_a_name_wrong_for_the_org_fails_at_its_first_query_naming_the_key_without_retry(connections, monkeypatch, case):
    config, key, name = WRONG_FOR_THE_ORG[case]
    monkeypatch.setenv("AIRFLOW_VAR_SALESFORCE_ORDERS_CONFIG", json.dumps(config))
    with pytest.raises(AirflowFailException) as caught:  # AirflowFailException: the task is not retried
        extract()
    message = str(caught.value)
    assert message.startswith("extract: Salesforce refused the query (")
    assert f"{key} in the salesforce_orders_config Variable names {name!r}" in message
    assert "Fix the key, then clear the task. Not retried." in message


def test_a_base_field_the_org_lacks_is_named_as_one_the_import_always_reads(connections, monkeypatch):
    from salesforce_orders import soql

    monkeypatch.setattr(soql, "_ORDER_BASE_FIELDS", (*soql._ORDER_BASE_FIELDS, "Delivery_Window__c"))
    with pytest.raises(AirflowFailException, match=r"'Delivery_Window__c' is a name the import always reads: check that the org has it"):
        extract()


@pytest.mark.parametrize("extra", ["login_url", "instance_url"])
def test_wrong_salesforce_url_fails_naming_the_connection(connections, extra, monkeypatch):
    from urllib3.util.retry import Retry

    from salesforce_orders.stages import SalesforceUnavailable

    monkeypatch.setattr(Retry, "get_backoff_time", lambda self: 0.0)  # the retries, without their waits
    connection = connections.org.airflow_connection()
    if extra == "instance_url":  # direct mode: a session id and the instance it belongs to
        connection["extra"]["session_id"] = connections.org.credentials["session_id"]
        del connection["password"]
    connection["extra"][extra] = "https://localhost:1"
    connections("salesforce_default", connection)
    with pytest.raises(SalesforceUnavailable, match=r"Salesforce \(Airflow connection 'salesforce_default'\) did not answer"):
        extract()
