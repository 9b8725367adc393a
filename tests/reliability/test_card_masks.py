"""Card fields of orders the import sets aside (quarantined, skipped, back to Draft: see
test_faults.py) are X-ed out in Salesforce by a write-back of their own, whether or not the
import succeeds, once per change of the order, unless the config says not to."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from salesforce_orders.config import DEFAULT_CARD_FIELDS
from salesforce_orders.warehouse import tables, utc_now
from tests.security.test_card_data import importable_orders

CARD_FIELDS = ("Credit_Card_Number__c", "Credit_Card_CVV__c")


def org_orders(p, order_ids) -> dict[str, dict]:
    marks = ", ".join("?" for _ in order_ids)
    rows = p.org_rows(f'SELECT Id, Status, {", ".join(CARD_FIELDS)} FROM "Order" WHERE Id IN ({marks})', *order_ids)
    return {row["Id"]: row for row in rows}


def with_card_data(orders: dict[str, dict], order_ids) -> set[str]:
    """Of these orders (as ``org_orders`` read them), those whose card number field held digits."""
    return {order_id for order_id in order_ids if (orders[order_id]["Credit_Card_Number__c"] or "X").strip("X")}


def assert_x_ed_out_and_status_kept(p, order_ids, status="Activated"):
    for row in org_orders(p, sorted(order_ids)).values():
        assert all(set(row[name] or "X") == {"X"} for name in CARD_FIELDS), row
        assert row["Status"] == status, row


def test_quarantined_orders_are_x_ed_out_even_when_the_run_fails(pipeline):
    p = pipeline
    p.set_config(max_invalid_share=0.0)  # any invalid order fails the validation, before any load
    before = org_orders(p, sorted(p.expected_order_ids()))

    run = p.run()

    assert run.failed_stage == "validate"
    quarantined = p.quarantined_ids()
    assert quarantined and with_card_data(before, quarantined) and not p.loaded_ids()
    assert run.results["mask_card_fields"]["written"] == len(quarantined)
    assert_x_ed_out_and_status_kept(p, quarantined)
    assert run.report["written_back"] == len(quarantined)
    rows = p.order_outbox_rows(sorted(quarantined))
    assert {(row["action"], row["state"]) for row in rows} == {("x_out_card", "DONE")}
    assert all(set(row["fields"]) == set(DEFAULT_CARD_FIELDS) for row in rows)


def test_a_masked_order_is_not_masked_again_until_it_changes(sqlite_pipeline):
    p = sqlite_pipeline
    p.set_config(max_invalid_share=0.0)
    p.run()
    quarantined = sorted(p.quarantined_ids())
    assert len(p.order_outbox_rows(quarantined)) == len(quarantined)

    # Our write changed the orders: the next run reads them again, and leaves them be.
    again = p.run()
    assert again.results["extract"]["extracted"] >= len(quarantined)
    assert again.results["mask_card_fields"]["attempted"] == 0
    assert len(p.order_outbox_rows(quarantined)) == len(quarantined)

    # An hour after its mask was written, someone types a card number into one of them again.
    retyped = quarantined[0]
    outbox = tables(p.schema).writeback_outbox
    with p.engine.begin() as conn:
        conn.execute(sa.update(outbox).where(outbox.c.sf_record_id == retyped).values(updated_at=utc_now() - timedelta(hours=1)))
    p.org_update("Order", retyped, Credit_Card_Number__c="4111111111111111")
    third = p.run()
    assert third.results["mask_card_fields"]["written"] == 1
    assert_x_ed_out_and_status_kept(p, [retyped])


def test_skipped_zero_total_orders_are_x_ed_out_and_not_marked_imported(sqlite_pipeline):
    p = sqlite_pipeline
    p.set_config(zero_total_policy="skip")

    run = p.run()

    assert run.succeeded, run.error
    skipped = {row["sf_record_id"] for row in p.query("SELECT sf_record_id FROM writeback_outbox WHERE action = 'x_out_card'")}
    skipped -= p.loaded_ids() | p.quarantined_ids()
    assert len(skipped) == run.results["transform"]["skipped"] > 0
    assert_x_ed_out_and_status_kept(p, skipped)


def test_the_config_can_leave_them_alone(sqlite_pipeline):
    p = sqlite_pipeline
    p.set_config(max_invalid_share=0.0, write_back={"x_out_card_fields_not_imported": False})
    before = org_orders(p, sorted(p.expected_order_ids()))

    run = p.run()

    quarantined = p.quarantined_ids()
    assert quarantined and with_card_data(before, quarantined)
    assert run.results["mask_card_fields"]["attempted"] == 0 and p.order_outbox_rows(sorted(quarantined)) == []
    assert org_orders(p, sorted(quarantined)) == {order_id: before[order_id] for order_id in quarantined}


_AS_ASCII_DIGITS = str.maketrans("０１２３４５６７８９", "0123456789")


def assert_masked_everywhere(p, order_id: str, flagged_fields: list[str]) -> None:
    """The typed card numbers are in no table or view (staging included); the order is flagged."""
    (row,) = p.query("SELECT notes, card_data_masked, card_data_masked_fields FROM external_orders WHERE sf_order_id = :id", id=order_id)
    assert row["notes"] == "card: [card ending 1881], exp 12/27"
    assert row["card_data_masked"] in (True, 1)
    fields = row["card_data_masked_fields"]
    assert (fields if isinstance(fields, list) else json.loads(fields)) == flagged_fields
    assert p.scalar("SELECT COUNT(*) AS n FROM external_orders WHERE card_data_masked") == 1
    inspector = sa.inspect(p.engine)
    names = inspector.get_table_names(schema=p.schema) + inspector.get_view_names(schema=p.schema)
    assert "stg_orders" in names and "stg_order_items" in names
    for name in names:
        # (a tab is written \t in JSON: taken out with the other separators; full-width digits read as ASCII)
        text = re.sub(r"[\s.-]|\\t", "", json.dumps(p.query(f"SELECT * FROM {name}"), default=str, ensure_ascii=False))
        text = text.translate(_AS_ASCII_DIGITS)
        assert "4012888888881881" not in text and "5105105105105100" not in text and "378282246310005" not in text, name


def assert_typed_card_numbers_masked(p, path: str, **config) -> None:
    """A card number typed into an order's notes and into one of its products' description (mapped):
    after a run extracting by ``path``, neither is in any table or view, the order is flagged with both.
    (One pasted with its no-break spaces, one from a spreadsheet's cells, with tabs; and one typed
    into the PO number by a Japanese input method: full-width digits, ideographic spaces.)"""
    p.set_config(item_field_mappings={"Description": "line_description"}, **config)
    order_id = sorted(p.expected_order_ids())[0]
    p.org_update(
        "Order", order_id, Description="card: 4012\u00a08888\u00a08888\u00a01881, exp 12/27", PoNumber="カード ３７８２\u3000８２２４６３\u3000１０００５"
    )
    (item,) = p.org_rows('SELECT Id FROM "OrderItem" WHERE OrderId = ? ORDER BY Id LIMIT 1', order_id)
    p.org_update("OrderItem", item["Id"], Description="paid by 5105\t1051\t0510\t5100")

    run = p.run()

    assert run.succeeded, run.error
    assert run.results["extract"]["path"] == path and run.results["extract"]["card_data_masked"] == 1
    assert_masked_everywhere(p, order_id, ["Description", "PoNumber", f"OrderItem {item['Id']}.Description"])
    assert p.scalar("SELECT po_number FROM external_orders WHERE sf_order_id = :id", id=order_id) == "カード [card ending 0005]"


def test_typed_card_numbers_are_masked_before_staging_and_flagged(pipeline):
    """REST extraction, on SQLite and PostgreSQL (JSONB)."""
    assert_typed_card_numbers_masked(pipeline, "rest")


def test_bulk_extraction_masks_orders_and_their_products_too(sqlite_pipeline):
    """Bulk API 2.0 reads products in a job of their own: masked and flagged all the same."""
    assert_typed_card_numbers_masked(sqlite_pipeline, "bulk", bulk_threshold=0)


@pytest.mark.parametrize("path", ["rest", "bulk"])
def test_a_card_number_typed_into_a_number_field_is_masked_and_its_order_quarantined_naming_the_field(sqlite_pipeline, path):
    """The API sends a Number or Currency field as a number, not as text: a card number typed into
    one (an item's quantity, its unit price read through a mapping too) is masked all the same. The
    order cannot be loaded without its amounts, so it is quarantined, the message naming the item and
    the field, never the number; no table or view (staging included) holds the number."""
    p = sqlite_pipeline
    p.set_config(item_field_mappings={"UnitPrice": "unit_price_as_typed"}, bulk_threshold=0 if path == "bulk" else 100_000)
    orders = sorted(p.expected_order_ids())[:2]
    items = [p.org_rows('SELECT Id FROM "OrderItem" WHERE OrderId = ? ORDER BY Id LIMIT 1', order)[0]["Id"] for order in orders]
    p.org_update("OrderItem", items[0], Quantity=4111111111111111)
    p.org_update("OrderItem", items[1], UnitPrice=5555555555554444)

    run = p.run()

    assert run.succeeded, run.error
    assert run.results["extract"]["path"] == path and run.results["extract"]["card_data_masked"] == 2
    rows = {row["sf_order_id"]: row for row in p.query("SELECT * FROM quarantined_orders WHERE card_data_masked")}
    assert set(rows) == set(orders)
    assert f"OrderItem {items[0]} Quantity '[card ending 1111]'" in rows[orders[0]]["details"]
    assert f"OrderItem {items[1]} UnitPrice '[card ending 4444]'" in rows[orders[1]]["details"]
    assert f"OrderItem {items[1]}.UnitPrice" in rows[orders[1]]["card_data_masked_fields"]
    inspector = sa.inspect(p.engine)
    for name in inspector.get_table_names() + inspector.get_view_names():
        text = json.dumps(p.query(f"SELECT * FROM {name}"), default=str)
        assert "4111111111111111" not in text and "5555555555554444" not in text, name


# Card numbers hidden as people and their tools write them: characters nobody sees between the
# digits (a NUL, which storage drops, would join them), dashes a word processor types, a group a
# line with blank lines between (Windows line ends), a space on both sides of each line break; a
# security code in brackets. (field, typed, the number, what the stored value must read)
HIDDEN = [
    ("Description", "card 4111\x001111\x001111\x001111 (737)", "4111111111111111", "card [card ending 1111] ([security code])"),
    ("PoNumber", "PO 5555\u20135555\u20135555\u20134444", "5555555555554444", "PO [card ending 4444]"),
    ("ShippingName", "Attn 4000 \r\n 0566 \r\n 5566 \r\n 5556", "4000056655665556", "Attn [card ending 5556]"),
    ("Description", "Card:\r\n6011\r\n\r\n0009\r\n\r\n9013\r\n\r\n9424", "6011000990139424", "Card:\r\n[card ending 9424]"),
    ("PoNumber", "PO 3714\u200b496353\u200b98431", "371449635398431", "PO [card ending 8431]"),
]
USPS = "USPS 9400 7720 4056 0865 6907 07"  # a tracking number printed in fours: no card inside it


def test_card_numbers_hidden_by_invisible_characters_other_dashes_or_line_breaks_are_masked_everywhere(pipeline, external_orders_pages):
    """A whole run: none of the numbers is in any table or view (staging included) or on the
    External Orders pages, each order is flagged, the stored values read as masked; a USPS
    tracking number in a PO number is kept as typed and flags nothing."""
    p = pipeline
    p.set_config(order_field_mappings={"ShippingName": "ship_to"})
    orders = importable_orders(p, len(HIDDEN) + 1)
    for order_id, (field, typed, _number, _stored) in zip(orders, HIDDEN, strict=False):
        p.org_update("Order", order_id, **{field: typed})
    p.org_update("Order", orders[-1], PoNumber=USPS)

    run = p.run()

    assert run.succeeded, run.error
    loaded = {r["sf_order_id"]: r for r in p.query("SELECT * FROM external_orders")}
    assert set(orders) <= set(loaded)
    for order_id, (field, _typed, _number, stored) in zip(orders, HIDDEN, strict=False):
        row = loaded[order_id]
        column = {"Description": "notes", "PoNumber": "po_number"}.get(field)
        value = row[column] if column else (row["metadata"] if isinstance(row["metadata"], dict) else json.loads(row["metadata"]))["ship_to"]
        assert value == stored, (field, value)
        assert row["card_data_masked"] in (True, 1)
    assert loaded[orders[-1]]["po_number"] == USPS and loaded[orders[-1]]["card_data_masked"] in (False, 0)
    inspector = sa.inspect(p.engine)
    # every value as stored, written out as it is (JSON would escape a NUL into digits of its own)
    texts = {
        name: "\n".join(str(value) for row in p.query(f"SELECT * FROM {name}") for value in row.values())
        for name in inspector.get_table_names(schema=p.schema) + inspector.get_view_names(schema=p.schema)
    }
    assert "stg_orders" in texts and "external_orders" in texts
    client = external_orders_pages(p.engine, p.schema)
    for order_id in orders:
        number = loaded[order_id]["order_number"]
        texts[f"page of {number}"] = client.get("/order", params={"q": number}).text
    for where, text in texts.items():
        digits = re.sub(r"\D", "", text)
        assert not [number for _field, _typed, number, _stored in HIDDEN if number in digits], where
        assert "(737)" not in text, where
