"""Shipments before anything is sent: the CLI a person adds one with, the config checked against the
org's describe, and the External Orders view's shipments table with each one's sync status."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from salesforce_orders.config import parse_config
from salesforce_orders.load import load_run
from salesforce_orders.schema_versions import create_all
from salesforce_orders.shipments import ShipmentConfigRefused, ShipmentSummary, check, targets_from_config
from salesforce_orders.warehouse import tables
from salesforce_orders.warehouse_cli import main
from salesforce_sandbox.schema import build_schema

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def warehouse(tmp_path, make_transformed):
    """A SQLite warehouse file holding two imported orders (order products 802…1 and 802…2, quantity 2)."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(url)
    create_all(engine)
    load_run(engine, "run-1", [[make_transformed(1, items=((1, "S1", 2.0, 10.0),)), make_transformed(2, items=((2, "S1", 2.0, 10.0),))]], watermark=None)
    yield engine, url
    engine.dispose()


def order_item(engine, n: int) -> tuple[str, str, str]:
    with engine.connect() as conn:
        row = conn.execute(sa.text(
            "SELECT o.sf_order_id, o.order_number, i.sf_order_item_id FROM external_orders o "
            "JOIN external_order_items i ON i.sf_order_id = o.sf_order_id ORDER BY o.sf_order_id LIMIT 1 OFFSET :n"
        ), {"n": n - 1}).one()
    return row.sf_order_id, row.order_number, row.sf_order_item_id


def add_shipment_cli(url: str, *args: str) -> int:
    return main(["add-shipment", "--url", url, "--schema", "", *args])


def test_a_person_adds_a_shipment_with_the_cli_and_the_same_key_again_changes_nothing(warehouse, capsys):
    engine, url = warehouse
    _, number, item = order_item(engine, 1)

    assert add_shipment_cli(url, "--key", "SHIP-CLI", "--order-number", number, "--carrier", "UPS", "--tracking-number", "1Z1",
                            "--shipped-date", "2026-03-01", "--line", f"{item}:1.5") == 0
    assert "Shipment 'SHIP-CLI' added" in capsys.readouterr().out
    assert add_shipment_cli(url, "--key", "SHIP-CLI", "--order-number", number, "--tracking-number", "CHANGED", "--line", f"{item}:1") == 0
    assert "already in" in capsys.readouterr().out
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT tracking_number FROM order_shipments")).scalars().all() == ["1Z1"]
        assert [str(q) for q in conn.execute(sa.select(tables(None).order_shipment_lines.c.quantity)).scalars()] == ["1.50"]

    # what cannot be stored is refused at once, naming the shipment, the line and the field
    assert add_shipment_cli(url, "--key", "SHIP-BAD", "--order-number", number, "--line", f"{item}:lots") == 2
    assert "shipment 'SHIP-BAD': line 1: quantity: 'lots' is not a number" in capsys.readouterr().err
    assert add_shipment_cli(url, "--key", "SHIP-DATE", "--order-number", number, "--shipped-date", "1 March", "--line", f"{item}:1") == 2
    assert "shipped_date: '1 March' is not a date (YYYY-MM-DD)" in capsys.readouterr().err


def test_a_card_number_pasted_into_a_refused_cell_is_not_echoed_by_the_error(warehouse, capsys):
    """A fulfilment export's columns mixed up: the payment's card number where the date, the quantity
    or an id belongs. The shipment is refused naming the field, the value shown masked as the import
    masks card numbers (the error goes to a terminal or an integration's log)."""
    engine, url = warehouse
    _, number, item = order_item(engine, 1)
    by_number = ("--order-number", number)
    for args in ((*by_number, "--shipped-date", "4111 1111 1111 1111", "--line", f"{item}:1"), (*by_number, "--line", f"{item}:4111 1111 1111 1111"),
                 ("--order-id", "4111111111111111", "--line", f"{item}:1"), (*by_number, "--line", "4111-1111-1111-1111:1")):
        assert add_shipment_cli(url, "--key", "SHIP-CARD", *args) == 2
        err = capsys.readouterr().err
        assert "shipment 'SHIP-CARD'" in err and "[card ending 1111]" in err and "4111" not in err, err


def test_quantities_are_checked_exactly_counting_earlier_shipments(warehouse):
    engine, url = warehouse
    order_id, _, item = order_item(engine, 1)
    for key, quantity in (("S-A", "0.7"), ("S-B", "1.3"), ("S-C", "0.01")):  # 0.7 + 1.3 fill the 2 ordered
        assert add_shipment_cli(url, "--key", key, "--order-id", order_id, "--carrier", "UPS", "--tracking-number", key,
                                "--shipped-date", "2026-03-01", "--line", f"{item}:{quantity}") == 0
    check(engine, tables(None), ShipmentSummary(), now=NOW)
    with engine.connect() as conn:
        states = dict(conn.execute(sa.text("SELECT shipment_key, state FROM order_shipments")).all())
        errors = conn.execute(sa.text("SELECT errors FROM order_shipments WHERE shipment_key = 'S-C'")).scalar_one()
    assert states == {"S-A": "VALID", "S-B": "VALID", "S-C": "INVALID"}
    assert "quantity: 0.01 more than the 0 left to ship of 2 ordered (2 in earlier shipments)" in str(errors)


def test_a_required_field_of_only_spaces_is_missing(warehouse):
    """A fulfilment export's blank cells: a carrier or tracking number of spaces is not sent (it
    would put an empty tracking number over the Order's, the latest shipment's fields written whole)."""
    engine, url = warehouse
    order_id, _, item = order_item(engine, 1)
    assert add_shipment_cli(url, "--key", "S-BLANK", "--order-id", order_id, "--carrier", "  ", "--tracking-number", " \t",
                            "--shipped-date", "2026-03-01", "--line", f"{item}:1") == 0
    check(engine, tables(None), ShipmentSummary(), now=NOW)
    with engine.connect() as conn:
        state, errors = conn.execute(sa.text("SELECT state, errors FROM order_shipments")).one()
    assert state == "INVALID"
    assert "carrier: required" in str(errors) and "tracking_number: required" in str(errors)


def describer(schema):
    def describe(name: str) -> dict:
        found = schema.get(name)
        if found is None:
            raise LookupError(f"NOT_FOUND: sobjects/{name}/describe")
        return found.describe()

    return describe


def test_the_targets_are_checked_against_the_orgs_describe_naming_every_key():
    org = describer(build_schema())
    good = parse_config({"shipments": {"enabled": True, "shipment_object": {"object": "Shipment"}}})
    targets = targets_from_config(good, org)
    assert targets.record is not None and targets.record.name == "Shipment"
    assert targets.order_fields["tracking_number"] == "Tracking_Number__c"

    wrong = parse_config({"shipments": {
        "enabled": True,
        "order_fields": {"tracking_number": "Tracking__c", "shipped_date": "TotalAmount"},
        "shipment_object": {"object": "Shipment", "order_field": "Provider", "external_id_field": "TrackingNumber"},
    }})
    with pytest.raises(ShipmentConfigRefused) as refused:
        targets_from_config(wrong, org)
    message = str(refused.value)
    assert "shipments.order_fields.tracking_number: the org's Order has no field 'Tracking__c'" in message
    assert "shipments.order_fields.shipped_date: Order.TotalAmount" in message
    assert "shipments.shipment_object.external_id_field: Shipment.TrackingNumber is not an external id field" in message
    assert "shipments.shipment_object.order_field: Shipment.Provider is not a lookup to Order" in message

    missing = parse_config({"shipments": {"enabled": True, "shipment_object": {"object": "Parcel__c"}}})
    with pytest.raises(ShipmentConfigRefused, match="shipments.shipment_object.object: the org has no object 'Parcel__c'"):
        targets_from_config(missing, org)


def test_the_view_shows_each_orders_shipments_with_their_sync_status(allowed, external_orders_pages, warehouse):
    engine, url = warehouse
    order_id, number, item = order_item(engine, 1)
    assert add_shipment_cli(url, "--key", "SHIP-OK", "--order-id", order_id, "--carrier", "UPS", "--tracking-number", "1Z9",
                            "--tracking-url", "https://track.example.com/1Z9", "--shipped-date", "2026-03-01", "--line", f"{item}:1") == 0
    assert add_shipment_cli(url, "--key", "SHIP-TOO-MANY", "--order-id", order_id, "--carrier", "UPS", "--tracking-number", "1Z8",
                            "--shipped-date", "2026-03-02", "--line", f"{item}:5") == 0
    check(engine, tables(None), ShipmentSummary(), now=NOW)

    page = external_orders_pages(engine).get("/", params={"q": number})
    assert page.status_code == 200
    shipments = page.text[page.text.index('<table id="shipments">'):]
    assert 'data-shipment-key="SHIP-OK"' in shipments and 'href="https://track.example.com/1Z9"' in shipments
    too_many = shipments[shipments.index('data-shipment-key="SHIP-TOO-MANY"'):]
    assert 'class="dot failed" title="invalid"' in too_many
    assert "more than the 1 left to ship of 2 ordered" in too_many
