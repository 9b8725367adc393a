"""Card numbers and CVVs never reach the warehouse, staging, XCom, task logs or error texts.

Recognisable card values are seeded into the org, a full DAG run imports the orders (one of them
with a write-back that Salesforce rejects with a message quoting the card number), and every
place the run leaves text behind is scanned for them.
"""

from __future__ import annotations

import re

# Well-known test card numbers, with CVVs.
SEEDED_CARDS = {"4111111111111111": "737", "5555555555554444": "6021", "378282246310005": "9173"}
CARD_FIELDS = ("Credit_Card_Number__c", "Credit_Card_CVV__c", "Credit_Card_Expiration_Month__c", "Credit_Card_Expiration_Year__c")


def card_number_pattern(number: str) -> re.Pattern[str]:
    """The number written plain, or grouped with spaces or dashes."""
    return re.compile(r"[ -]?".join(number))


def cvv_pattern(cvv: str) -> re.Pattern[str]:
    """The CVV as a number of its own (not the digits inside a timestamp, an id or an amount)."""
    return re.compile(rf"(?<![\w.:-]){cvv}(?![\w.:])")


def leaks(text: str, numbers: list[str], cvvs: list[str]) -> list[str]:
    found = [n for n in numbers if card_number_pattern(n).search(text)]
    return found + [f"CVV {c}" for c in cvvs if cvv_pattern(c).search(text)]


def importable_orders(wired, count: int) -> list[str]:
    """Activated orders in the lookback that pass validation (complete shipping address)."""
    rows = wired.org_rows(
        "SELECT Id FROM \"Order\" WHERE StatusCode = 'Activated' AND IsDeleted = 0 "
        "AND ActivatedDate >= strftime('%Y-%m-%dT%H:%M:%S', 'now', '-700 days') "
        "AND ShippingStreet != '' AND ShippingCity != '' AND ShippingPostalCode != '' AND ShippingCountry != '' "
        "ORDER BY OrderNumber"
    )
    return [r["Id"] for r in rows[:count]]


def test_seeded_card_data_reaches_no_table_xcom_log_or_error_text(wired_import, capfd, caplog):
    org = wired_import.org
    seeded = importable_orders(wired_import, len(SEEDED_CARDS))
    assert len(seeded) == len(SEEDED_CARDS)
    with org.store.lock:
        for order_id, (number, cvv) in zip(seeded, SEEDED_CARDS.items(), strict=True):
            org.store.update("Order", order_id, {"Credit_Card_Number__c": number, "Credit_Card_CVV__c": cvv})
    # Salesforce rejects one write-back with a message that quotes the card number
    rejected = seeded[0]
    org.admin.set_faults(
        fail_rows={rejected: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "Card 4111 1111 1111 1111 was declined: order stays open"]}
    )
    every_number = sorted({r["Credit_Card_Number__c"] for r in wired_import.org_rows('SELECT Credit_Card_Number__c FROM "Order"')} - {None})
    assert set(SEEDED_CARDS) <= set(every_number) and len(every_number) > 20

    capfd.readouterr()
    dag_run = wired_import.run_dag()
    out, err = capfd.readouterr()

    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    logs = out + err + caplog.text  # the task logs, whichever way logging is routed in this process
    tables = wired_import.warehouse_text()
    xcoms = wired_import.xcom_text(dag_run.run_id)
    # the run did what it should: the seeded orders are loaded, the rejection is kept (redacted)
    assert all(order_id in tables["external_orders"] for order_id in seeded)
    assert "stg_orders" in tables and "stg_transformed_batches" in tables and "v_open_failures" in tables
    assert {key.split(".")[0] for key in xcoms} >= {"extract", "validate", "transform", "load", "write_back", "report"}
    assert "Salesforce orders import" in logs and "Write-back of Order" in logs
    assert "Card [card ending 1111] was declined" in tables["writeback_outbox"]
    assert "Card [card ending 1111] was declined" in logs
    # the scanners do find card data where it is: in the org
    org_text = str(wired_import.org_rows('SELECT * FROM "Order"'))
    assert leaks(org_text, list(SEEDED_CARDS), list(SEEDED_CARDS.values()))

    cvvs = list(SEEDED_CARDS.values())
    for name, text in tables.items():
        assert not leaks(text, every_number, cvvs), f"card data in warehouse table {name}"
    for key, text in xcoms.items():
        assert not leaks(text, every_number, cvvs), f"card data in XCom {key}"
    assert not leaks(logs, every_number, cvvs), "card data in the task logs"

    # and in Salesforce the card fields of the imported orders are X-ed out
    after = {r["Id"]: r for r in wired_import.org_rows('SELECT Id, Credit_Card_Number__c, Credit_Card_CVV__c FROM "Order"')}
    for order_id in seeded[1:]:
        assert set(after[order_id]["Credit_Card_Number__c"]) == {"X"}
        assert set(after[order_id]["Credit_Card_CVV__c"]) == {"X"}


def test_card_fields_are_never_selected():
    from datetime import UTC, datetime

    from salesforce_orders.config import parse_config
    from salesforce_orders.soql import (
        ExtractWindow,
        build_items_query,
        build_orders_bulk_query,
        build_orders_query,
    )

    config = parse_config({"order_field_mappings": {"PoNumber": "po_number"}})
    window = ExtractWindow(None, None, datetime(2024, 1, 1, tzinfo=UTC))
    for soql in (build_orders_query(config, window), build_orders_bulk_query(config, window), build_items_query(config, window)):
        assert not [name for name in CARD_FIELDS if name.lower() in soql.lower()], soql
