"""Card numbers and CVVs never reach the warehouse, staging, XCom, task logs, the External Orders
pages or error texts, nor do security codes typed with a card number or labelled as one.

Recognisable card values are seeded into the org's card fields and typed into every other kind of
field (the notes, the PO number, an Account name, fields read through the mappings, a country
that a quarantine message quotes), a full DAG run imports the orders (one of them with a
write-back that Salesforce rejects with a message quoting the card number), and every place the
run leaves text behind is scanned for them.
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa

# Well-known test card numbers, with CVVs.
SEEDED_CARDS = {"4111111111111111": "737", "5555555555554444": "6021", "378282246310005": "9173"}
CARD_FIELDS = ("Credit_Card_Number__c", "Credit_Card_CVV__c", "Credit_Card_Expiration_Month__c", "Credit_Card_Expiration_Year__c")


def card_number_pattern(number: str) -> re.Pattern[str]:
    """The number written plain, or grouped with spaces, dashes or a rich text field's no-break spaces."""
    return re.compile(r"(?:[ -]|&nbsp;)?".join(number))


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


# Card numbers typed where they do not belong, one kind of field each, as people write them:
# (object, field, text with the number, the number, the field the order's flag names).
MAPPINGS = {"order_field_mappings": {"ShippingName": "ship_to"}, "item_field_mappings": {"Description": "line_description"}}
TYPED = [
    ("Order", "Description", "Please charge 4012 8888 8888 1881 12/28 8362 for the install", "4012888888881881", "Description"),
    ("Order", "PoNumber", "PO 5105-1051-0510-5100, security code: 5207", "5105105105105100", "PoNumber"),
    ("Account", "Name", "Acme 6011000990139424 Ltd", "6011000990139424", "Account.Name"),
    ("Order", "ShippingName", "Attn 3714 496353 98431", "371449635398431", "ShippingName"),  # mapped, Amex grouping
    ("OrderItem", "Description", "serial 4000056655665556", "4000056655665556", "OrderItem"),  # mapped item field
    # as a rich text field holds it: pasted with no-break spaces, in a paragraph of its own
    ("Order", "Description", "<p>Card on file:</p><p>5425&nbsp;2334&nbsp;3010&nbsp;9903</p>", "5425233430109903", "Description"),
    ("Order", "BillingCountry", "4242424242424242", "4242424242424242", "BillingCountry"),  # echoed by a quarantine message
]
# Security codes typed with the numbers above: after a card number and its expiry date, and labelled.
TYPED_CODES = ["8362", "5207"]
NOT_A_CARD = "PO 4111111111111112 / +49 30 1234 5678 9012"  # fails Luhn / grouped as no card is: kept as typed


def type_card_numbers(wired, orders: list[str]) -> dict[str, str]:
    """Type each TYPED card number into its field of one of ``orders`` (and the not-a-card
    numbers into one more); returns {order id: the field its flag should name}."""
    store = wired.org.store
    flagged = {}
    with store.lock:
        for order_id, (sobject, field, text, _number, flag) in zip(orders, TYPED, strict=False):
            if sobject == "Order":
                record_id = order_id
            elif sobject == "Account":
                (record_id,) = store.conn.execute('SELECT AccountId FROM "Order" WHERE Id = ?', (order_id,)).fetchone()
            else:
                (record_id,) = store.conn.execute('SELECT Id FROM "OrderItem" WHERE OrderId = ? ORDER BY Id', (order_id,)).fetchone()
            store.update(sobject, record_id, {field: text})
            flagged[order_id] = flag
        store.update("Order", orders[len(TYPED)], {"PoNumber": NOT_A_CARD})
    return flagged


def test_card_numbers_anywhere_reach_no_table_xcom_log_page_or_error_text(wired_import, external_orders_pages, capfd, caplog):
    """Card numbers in the card fields and typed into every kind of other field: the run masks
    them before staging, flags the orders, X-es out the card fields of the imported and the
    quarantined orders, and no table, view, XCom, task log line or External Orders page holds one."""
    org = wired_import.org
    wired_import.set_config(**MAPPINGS)
    orders = importable_orders(wired_import, len(SEEDED_CARDS) + len(TYPED) + 1)
    seeded, typed_into = orders[: len(SEEDED_CARDS)], orders[len(SEEDED_CARDS) :]
    with org.store.lock:
        for order_id, (number, cvv) in zip(seeded, SEEDED_CARDS.items(), strict=True):
            org.store.update("Order", order_id, {"Credit_Card_Number__c": number, "Credit_Card_CVV__c": cvv})
    flagged = type_card_numbers(wired_import, typed_into)
    quarantined = typed_into[len(TYPED) - 1]  # its BillingCountry is a card number
    # Salesforce rejects one write-back with a message that quotes the card number
    rejected = seeded[0]
    org.admin.set_faults(
        fail_rows={rejected: ["FIELD_CUSTOM_VALIDATION_EXCEPTION", "Card 4111 1111 1111 1111 was declined: order stays open"]}
    )
    in_card_fields = {r["Credit_Card_Number__c"] for r in wired_import.org_rows('SELECT Credit_Card_Number__c FROM "Order"')} - {None}
    every_number = sorted(in_card_fields | {number for *_, number, _flag in TYPED})
    assert set(SEEDED_CARDS) <= set(every_number) and len(every_number) > 20

    capfd.readouterr()
    dag_run = wired_import.run_dag()
    out, err = capfd.readouterr()

    assert str(getattr(dag_run.state, "value", dag_run.state)) == "success"
    logs = out + err + caplog.text  # the task logs, whichever way logging is routed in this process
    tables = wired_import.warehouse_text()
    xcoms = wired_import.xcom_text(dag_run.run_id)
    pages = rendered_pages(external_orders_pages(wired_import.engine))
    # the run did what it should: the orders are loaded (one quarantined), the rejection is kept (masked)
    assert all(order_id in tables["external_orders"] for order_id in seeded + typed_into if order_id != quarantined)
    assert quarantined in tables["quarantined_orders"] and quarantined not in tables["external_orders"]
    assert "stg_orders" in tables and "stg_transformed_batches" in tables and "v_open_failures" in tables
    assert {key.split(".")[0] for key in xcoms} >= {"extract", "validate", "transform", "load", "write_back", "mask_card_fields", "report"}
    assert "Salesforce orders import" in logs and "Write-back of Order" in logs
    assert "Card [card ending 1111] was declined" in tables["writeback_outbox"]
    assert "Card [card ending 1111] was declined" in logs
    # the scanners do find card data where it is: in the org, in every field it was typed into
    org_text = str(wired_import.org_rows('SELECT * FROM "Order"'))
    assert leaks(org_text, list(SEEDED_CARDS), list(SEEDED_CARDS.values()))
    typed_numbers = sorted(number for *_, number, _flag in TYPED)
    org_text += str(wired_import.org_rows('SELECT * FROM "Account"')) + str(wired_import.org_rows('SELECT * FROM "OrderItem"'))
    assert sorted(leaks(org_text, typed_numbers, [])) == typed_numbers

    assert leaks(org_text, [], TYPED_CODES)
    cvvs = list(SEEDED_CARDS.values()) + TYPED_CODES
    for name, text in tables.items():
        assert not leaks(text, every_number, cvvs), f"card data in warehouse table {name}"
    for key, text in xcoms.items():
        assert not leaks(text, every_number, cvvs), f"card data in XCom {key}"
    assert not leaks(logs, every_number, cvvs), "card data in the task logs"
    for path, text in pages.items():
        assert not leaks(text, every_number, cvvs), f"card data on the page {path}"

    assert_masked_and_flagged(wired_import, flagged, quarantined, pages, xcoms)

    # and in Salesforce the card fields of the imported and of the quarantined orders are X-ed out
    after = {r["Id"]: r for r in wired_import.org_rows('SELECT Id, Status, Credit_Card_Number__c, Credit_Card_CVV__c FROM "Order"')}
    for order_id in [*seeded[1:], quarantined]:
        assert set(after[order_id]["Credit_Card_Number__c"] or "X") == {"X"}
        assert set(after[order_id]["Credit_Card_CVV__c"] or "X") == {"X"}
    assert after[quarantined]["Status"] == "Activated"  # X-ed out, not marked imported


def rendered_pages(client) -> dict[str, str]:
    """Every page of the External Orders app, every page of each list."""
    pages = {}
    for path, params in (("/", {}), ("/", {"masked": "1"}), ("/", {"failed": "1"}), ("/quarantine", {}), ("/runs", {})):
        number = 1
        while True:
            response = client.get(path, params={**params, "page": str(number)})
            assert response.status_code == 200
            pages[f"{path}?{params} page {number}"] = response.text
            if 'rel="next"' not in response.text:
                break
            number += 1
    # each listed order's story (its data, quarantine history, write-backs and their errors), and the config
    listed = sorted({n for text in list(pages.values()) for n in re.findall(r'data-order-number="([^"]+)"', text)})
    assert listed
    for order_number in listed:
        response = client.get("/order", params={"q": order_number})
        assert response.status_code == 200
        pages[f"/order?q={order_number}"] = response.text
    pages["/config"] = client.get("/config").text
    return pages


def assert_masked_and_flagged(wired, flagged: dict[str, str], quarantined: str, pages: dict[str, str], xcoms: dict[str, str]) -> None:
    """Each typed number was masked to its last four digits and its order flagged with the field;
    the numbers that are not card numbers were kept."""
    import json

    with wired.engine.connect() as conn:
        rows = {r["sf_order_id"]: r for r in conn.execute(sa.text("SELECT * FROM external_orders")).mappings()}
        items = conn.execute(sa.text("SELECT sf_order_id, metadata FROM external_order_items")).mappings().all()
        (held,) = conn.execute(sa.text("SELECT * FROM quarantined_orders WHERE sf_order_id = :id"), {"id": quarantined}).mappings()
        customers = conn.execute(sa.text("SELECT name FROM customers")).scalars().all()
    for order_id, field in flagged.items():
        if order_id == quarantined:
            continue
        row = rows[order_id]
        fields = json.loads(row["card_data_masked_fields"])
        assert row["card_data_masked"] and any(f == field or f.startswith(f"{field} ") for f in fields), (field, fields)
    by_field: dict[str, Any] = {}
    for order_id, field in flagged.items():
        by_field.setdefault(field, rows.get(order_id))  # (the first order of a field: the notes typed as plain text)
    assert by_field["Description"]["notes"] == "Please charge [card ending 1881] 12/28 [security code] for the install"
    assert "<p>Card on file:</p><p>[card ending 9903]</p>" in {row["notes"] for row in rows.values()}
    assert by_field["PoNumber"]["po_number"] == "PO [card ending 5100], security code: [security code]"
    assert "Acme [card ending 9424] Ltd" in customers and by_field["Account.Name"]["account_name"] == "Acme [card ending 9424] Ltd"
    assert json.loads(by_field["ShippingName"]["metadata"])["ship_to"] == "Attn [card ending 8431]"
    item_order = next(order_id for order_id, field in flagged.items() if field == "OrderItem")
    assert "serial [card ending 5556]" in [json.loads(i["metadata"])["line_description"] for i in items if i["sf_order_id"] == item_order]
    assert held["card_data_masked"] and json.loads(held["card_data_masked_fields"]) == ["BillingCountry"]
    assert "BillingCountry '[card ending 4242]'" in held["details"]
    assert NOT_A_CARD in {row["po_number"] for row in rows.values()}
    assert not any(row["card_data_masked"] for order_id, row in rows.items() if order_id not in flagged and "Acme" not in (row["account_name"] or ""))
    assert json.loads(xcoms["extract.return_value"])["card_data_masked"] >= len(flagged)
    badges = "".join(text for path, text in pages.items() if "masked" in path)
    assert badges.count("card data masked</span>") >= len(flagged) - 1 and "Acme [card ending 9424] Ltd" in badges


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


def test_a_failure_alert_never_carries_a_card_number_an_exception_quoted():
    """The failure alert leaves for e-mail and Slack with the exception's text: scanned like every
    text the import writes, whatever raised it."""
    from salesforce_orders.alerts import _reason

    reason = _reason({"exception": ValueError("Card 4111 1111 1111 1111 exp 12/27 737 was declined"), "reason": "see the log"})
    assert reason == "Card [card ending 1111] exp 12/27 [security code] was declined; see the log"
