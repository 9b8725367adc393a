"""Amounts are exact decimals from where they enter to the warehouse, never floats.

NUMERIC(18,2) holds 9,999,999,999,999,999.99 to the cent; a float keeps 15 to 17 significant
digits, so an amount like 99,999,999,999,999.99 comes back from a float as ...99.98. The sandbox
org keeps its amounts as doubles (like a float), so the staged record is given the amount after
the extract, as a real org's answer would carry it; from there on every stage runs as the DAG runs
it. On PostgreSQL the amount loads to the cent; a SQLite warehouse (doubles too) quarantines the
order with a message naming the field, instead of storing a rounded amount, and loads the rest.
Every amount stored is held to this, an item's ListPrice and its PricebookEntry.UnitPrice too.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
import sqlalchemy as sa

from salesforce_orders.warehouse import tables

BIG = Decimal("99999999999999.99")  # 16 significant digits: float(BIG) == 99999999999999.98...


def give_the_staged_order_an_amount(p, run, order_id: str, amount: Decimal) -> str:
    """The order's staged record and its first product carry ``amount`` (Quantity 1): returns the
    product's id. The other products of the order are removed from the staged run."""
    t = tables(p.schema)
    with p.engine.begin() as conn:
        record = conn.execute(sa.select(t.stg_orders.c.record).where(t.stg_orders.c.run_id == run.run_id, t.stg_orders.c.sf_order_id == order_id)).scalar_one()
        items = conn.execute(
            sa.select(t.stg_order_items.c.sf_order_item_id, t.stg_order_items.c.record)
            .where(t.stg_order_items.c.run_id == run.run_id, t.stg_order_items.c.sf_order_id == order_id)
            .order_by(t.stg_order_items.c.sf_order_item_id)
        ).all()
        kept, *others = items
        conn.execute(
            sa.update(t.stg_orders).where(t.stg_orders.c.run_id == run.run_id, t.stg_orders.c.sf_order_id == order_id)
            .values(record={**record, "TotalAmount": amount})
        )
        conn.execute(
            sa.update(t.stg_order_items).where(t.stg_order_items.c.run_id == run.run_id, t.stg_order_items.c.sf_order_item_id == kept.sf_order_item_id)
            .values(record={**kept.record, "Quantity": Decimal("1.00"), "UnitPrice": amount, "TotalPrice": amount, "ListPrice": amount})
        )
        for other in others:
            conn.execute(sa.delete(t.stg_order_items).where(t.stg_order_items.c.run_id == run.run_id, t.stg_order_items.c.sf_order_item_id == other.sf_order_item_id))
    return kept.sf_order_item_id


def give_the_staged_product(p, run, order_id: str, **fields) -> str:
    """The order's first staged product carries ``fields`` (by API name): returns its id."""
    t = tables(p.schema)
    items = t.stg_order_items
    with p.engine.begin() as conn:
        item_id, record = conn.execute(
            sa.select(items.c.sf_order_item_id, items.c.record)
            .where(items.c.run_id == run.run_id, items.c.sf_order_id == order_id)
            .order_by(items.c.sf_order_item_id).limit(1)
        ).one()
        conn.execute(
            sa.update(items).where(items.c.run_id == run.run_id, items.c.sf_order_item_id == item_id).values(record={**record, **fields})
        )
    return item_id


def finish(p, run) -> None:
    for stage in ("validate", "transform", "load", "mark_status_changes", "write_back"):
        p.stage(stage, run)


def test_an_amount_past_what_a_float_holds_loads_to_the_cent_or_is_refused_by_name(pipeline):
    p = pipeline
    run = p.run(until="extract")
    assert run.succeeded, run.error
    big, ordinary = sorted(p.expected_order_ids())[:2]
    item_id = give_the_staged_order_an_amount(p, run, big, BIG)
    staged = p.query("SELECT record FROM stg_orders WHERE run_id = :r AND sf_order_id = :o", r=run.run_id, o=big)[0]["record"]
    assert "99999999999999.99" in (staged if isinstance(staged, str) else str(staged))  # staged with every digit

    finish(p, run)

    assert ordinary in p.loaded_ids()  # the rest of the run loads either way
    if p.dialect == "postgresql":
        order = p.query("SELECT total_amount, corporate_amount FROM external_orders WHERE sf_order_id = :o", o=big)[0]
        assert order["total_amount"] == BIG and str(order["total_amount"]) == "99999999999999.99"
        item = p.query("SELECT quantity, unit_price, total_price FROM external_order_items WHERE sf_order_item_id = :i", i=item_id)[0]
        assert (item["unit_price"], item["total_price"], item["quantity"]) == (BIG, BIG, Decimal("1.00"))
        service = p.query("SELECT total_amount FROM order_services WHERE sf_order_id = :o", o=big)[0]
        assert service["total_amount"] == BIG
        # an analyst's sum keeps the cents too
        assert p.scalar("SELECT SUM(total_amount) FROM external_orders WHERE sf_order_id = :o", o=big) == BIG
        assert big not in p.quarantined_ids()
    else:
        assert big not in p.loaded_ids() and big in p.quarantined_ids()
        [refused] = p.query("SELECT failed_checks, details FROM quarantined_orders WHERE sf_order_id = :o AND released_at IS NULL", o=big)
        assert "amounts_storable" in str(refused["failed_checks"])
        message = str(refused["details"])
        assert "TotalAmount 99999999999999.99 has more digits than a SQLite warehouse keeps exactly" in message
        assert f"UnitPrice of OrderItem {item_id} 99999999999999.99" in message


@pytest.mark.parametrize("field", ["ListPrice", "PricebookEntry.UnitPrice"])
def test_a_list_price_the_warehouse_cannot_keep_exactly_quarantines_its_order_by_name(pipeline, field: str):
    """An item's ListPrice (external_order_items.list_price) and its price book entry's UnitPrice
    (products.list_price) are stored in the same NUMERIC(18,2) columns as its other amounts: held
    to the same promise, never stored rounded. (The sandbox will not let them be set: the staged
    product is given the value after the extract, as a real org's answer would carry it.)"""
    p = pipeline
    run = p.run(until="extract")
    assert run.succeeded, run.error
    odd, ordinary = sorted(p.expected_order_ids())[:2]
    # more decimals than the column keeps; on SQLite, more digits than its double keeps
    value = Decimal("100.005") if p.dialect == "postgresql" else BIG
    item_id = give_the_staged_product(p, run, odd, **{field: value})

    finish(p, run)

    assert odd in p.quarantined_ids() and odd not in p.loaded_ids()
    assert ordinary in p.loaded_ids()  # the rest of the run loads
    [refused] = p.query("SELECT failed_checks, details FROM quarantined_orders WHERE sf_order_id = :o AND released_at IS NULL", o=odd)
    assert "amounts_storable" in str(refused["failed_checks"])
    reason = "has more than 2 decimals" if p.dialect == "postgresql" else "has more digits than a SQLite warehouse keeps exactly"
    assert f"{field} of OrderItem {item_id} {value} {reason}" in str(refused["details"])
    assert not p.query("SELECT 1 FROM external_order_items WHERE sf_order_item_id = :i", i=item_id)
