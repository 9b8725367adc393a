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
