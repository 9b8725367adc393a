"""The warehouse as analysts read it, reconciled with the org: amounts never added across
currencies, exact on SQLite and PostgreSQL, converted to the corporate currency with the org's own
rates; every SQL example of docs/warehouse.md run against the demo org.

The stages run as the DAG's tasks (``conftest.Pipeline``), against the sandbox org and a SQLite or
PostgreSQL warehouse.
"""

from __future__ import annotations

import re
from collections import defaultdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest

from salesforce_orders import stages
from salesforce_orders.shipments import add_shipment
from salesforce_orders.warehouse import tables
from salesforce_sandbox.schema import build_schema

DOCS = Path(__file__).resolve().parents[2] / "docs" / "warehouse.md"
CENT = Decimal("0.01")
DEMO_ORDERS, DEMO_SEED = 500, 7  # make run's org
MONEY_COLUMN = re.compile(r"amount|revenue|price")


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return DEMO_ORDERS, DEMO_SEED


@pytest.fixture
def imported(pipeline):
    # the demo's zero-total orders in skipped_orders; every version kept, for the "as of" examples
    pipeline.set_config(zero_total_policy="skip", history_mode=True)
    first = pipeline.run()
    assert first.succeeded, first.error
    return pipeline


def exact(value) -> Decimal:
    """A money value as read, as the exact decimal it shows; fails when it is not whole cents."""
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    assert amount == amount.quantize(CENT), f"{value!r} is not an exact amount"
    return amount.quantize(CENT)


def org_active_orders(p) -> list[dict]:
    """The org's Activated orders the warehouse holds as active, as Salesforce has them."""
    held = {r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM external_orders WHERE sf_state = 'active'")}
    rows = p.org_rows('SELECT Id, TotalAmount, CurrencyIsoCode, EffectiveDate FROM "Order" WHERE IsDeleted = 0')
    return [r for r in rows if r["Id"] in held]


def org_totals_by_currency(p) -> dict[str, tuple[int, Decimal]]:
    totals: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for order in org_active_orders(p):
        totals[order["CurrencyIsoCode"]][0] += 1
        totals[order["CurrencyIsoCode"]][1] += Decimal(repr(order["TotalAmount"]))
    return {currency: (count, amount) for currency, (count, amount) in totals.items()}


def org_corporate_amount(p, order: dict) -> tuple[str, Decimal, Decimal]:
    """What the org's own rates make of an order's total: (corporate currency, rate, amount)."""
    (corporate,) = p.org_rows("SELECT IsoCode FROM CurrencyType WHERE IsCorporate = 1")
    dated = p.org_rows(
        "SELECT ConversionRate FROM DatedConversionRate WHERE IsoCode = ? AND StartDate <= ? AND ? < NextStartDate",
        order["CurrencyIsoCode"], order["EffectiveDate"], order["EffectiveDate"],
    )
    current = p.org_rows("SELECT ConversionRate FROM CurrencyType WHERE IsoCode = ?", order["CurrencyIsoCode"])
    rate = Decimal(repr((dated or current)[0]["ConversionRate"]))
    amount = (Decimal(repr(order["TotalAmount"])) / rate).quantize(CENT, ROUND_HALF_UP)
    return corporate["IsoCode"], rate, amount


# ---------------------------------------------------------------------------------------
# currencies
# ---------------------------------------------------------------------------------------


def test_customer_totals_are_per_currency_and_add_up_to_the_orgs_totals_per_currency(imported):
    p = imported
    expected = org_totals_by_currency(p)
    assert len(expected) > 1, "the demo org has several currencies"
    top_level: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for row in p.query("SELECT * FROM v_orders_by_customer WHERE parent_customer_id IS NULL AND currency IS NOT NULL"):
        top_level[row["currency"]][0] += row["orders_including_children"]
        top_level[row["currency"]][1] += exact(row["amount_including_children"])
    assert {c: tuple(v) for c, v in top_level.items()} == expected
    # a customer group with orders in several currencies has a row for each
    mixed = p.query(
        "SELECT customer_id FROM v_orders_by_customer WHERE currency IS NOT NULL "
        "GROUP BY customer_id HAVING COUNT(DISTINCT currency) > 1"
    )
    assert mixed, "the demo org has customer groups with orders in several currencies"


def test_each_order_is_converted_with_the_orgs_rate_of_its_date_and_keeps_the_rate(imported):
    p = imported
    stored = {r["sf_order_id"]: r for r in p.query("SELECT * FROM external_orders WHERE sf_state = 'active'")}
    orders = org_active_orders(p)
    assert orders
    for order in orders:
        corporate, rate, amount = org_corporate_amount(p, order)
        row = stored[order["Id"]]
        assert (row["corporate_currency"], Decimal(repr(float(row["conversion_rate"]))), exact(row["corporate_amount"])) == (
            corporate, rate, amount
        ), order["Id"]
    # dated rates differ from the current ones: the rate of the order's period was used
    current = {r["IsoCode"]: r["ConversionRate"] for r in p.org_rows("SELECT IsoCode, ConversionRate FROM CurrencyType")}
    assert any(float(r["conversion_rate"]) != current[r["currency"]] for r in stored.values())
    rates = p.query("SELECT source, COUNT(*) AS n FROM currency_rates GROUP BY source ORDER BY source")
    assert [(r["source"], r["n"]) for r in rates] == [
        ("CurrencyType", p.org_rows("SELECT COUNT(*) AS n FROM CurrencyType")[0]["n"]),
        ("DatedConversionRate", p.org_rows("SELECT COUNT(*) AS n FROM DatedConversionRate")[0]["n"]),
    ]


def test_a_single_currency_org_keeps_every_amount_as_it_is_at_rate_one(pipeline):
    """The org's data as it is, served as an org without multi-currency serves it: no rates, no
    ``CurrencyIsoCode`` on its records. (Without the rates alone, the org still multi-currency, the
    run fails: ``test_single_currency_org.py``.)"""
    p = pipeline
    schema = p.org.store.schema
    p.org.store.set_schema(build_schema(multi_currency=False))
    try:
        run = p.run()
    finally:
        p.org.store.set_schema(schema)
    assert run.succeeded, run.error
    rows = p.query("SELECT currency, corporate_currency, conversion_rate, total_amount, corporate_amount FROM external_orders")
    assert rows
    for row in rows:
        assert (row["corporate_currency"], float(row["conversion_rate"]), exact(row["corporate_amount"])) == (
            row["currency"], 1.0, exact(row["total_amount"])
        )
    assert p.scalar("SELECT COUNT(*) FROM currency_rates") == 0


# ---------------------------------------------------------------------------------------
# exact money
# ---------------------------------------------------------------------------------------


def test_amounts_read_through_the_tables_are_decimals_equal_to_salesforces(imported):
    import sqlalchemy as sa

    from salesforce_orders.warehouse import tables

    p = imported
    t = tables(p.schema)
    with p.engine.connect() as conn:
        orders = {r.sf_order_id: r for r in conn.execute(sa.select(t.external_orders))}
        items = list(conn.execute(sa.select(t.external_order_items)))
    org = {r["Id"]: r for r in p.org_rows('SELECT Id, TotalAmount FROM "Order"')}
    for order_id, row in orders.items():
        assert isinstance(row.total_amount, Decimal)
        assert row.total_amount == Decimal(repr(org[order_id]["TotalAmount"])), order_id
    org_items = {r["Id"]: r for r in p.org_rows("SELECT Id, Quantity, UnitPrice, TotalPrice FROM OrderItem")}
    for item in items:
        source = org_items[item.sf_order_item_id]
        assert (item.quantity, item.unit_price, item.total_price) == tuple(
            Decimal(repr(source[name])) for name in ("Quantity", "UnitPrice", "TotalPrice")
        )
        assert all(isinstance(v, Decimal) for v in (item.quantity, item.unit_price, item.total_price))


def doc_examples(dialect: str) -> list[str]:
    """The SELECTs of docs/warehouse.md's SQL blocks this database runs: those marked
    ``(PostgreSQL)`` or ``(SQLite)`` in their comment on that database only."""
    blocks = re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.S)
    examples = []
    for block in blocks:
        for statement in block.split(";"):
            comments = " ".join(line for line in statement.splitlines() if line.strip().startswith("--"))
            code = "\n".join(line for line in statement.splitlines() if not line.strip().startswith("--")).strip()
            if not code.upper().startswith(("SELECT", "WITH")):
                continue  # grants and the like
            other = "(SQLite)" if dialect == "postgresql" else "(PostgreSQL)"
            if other in comments:
                continue
            examples.append(code)
    return examples


def test_every_sql_example_of_the_docs_returns_rows_and_exact_amounts(imported):
    p = imported
    # what some examples are about: an order that left Activated, a write-back that failed (the newest
    # row of its record: an older one is superseded, not open), a card
    # number typed into an order's notes
    left, noted = [r["sf_order_id"] for r in sorted(p.query("SELECT sf_order_id FROM external_orders"), key=lambda r: r["sf_order_id"])[:2]]
    p.org_update("Order", left, Status="Draft")
    p.org_update("Order", noted, Description="paid by card 4111 1111 1111 1111, exp 12/29")
    p.execute("UPDATE writeback_outbox SET state = 'DEAD', last_error_code = 'FIELD_CUSTOM_VALIDATION_EXCEPTION' "
              "WHERE id = (SELECT MAX(id) FROM writeback_outbox WHERE sf_object = 'Order' AND sf_order_id NOT IN (:left, :noted))",
              left=left, noted=noted)
    second = p.run()
    assert second.succeeded, second.error
    # and a shipment that names an order never imported, found invalid by the shipments DAG's check
    with p.engine.begin() as conn:
        add_shipment(conn, tables(p.schema), {"shipment_key": "SHIP-NOWHERE", "order_number": "NOT-AN-ORDER", "tracking_number": "1Z9"},
                     [{"sf_order_item_id": "802000000000000AAA", "quantity": 1}])
    stages.send_shipments(run_id="shipments__docs_examples")

    examples = doc_examples(p.dialect)
    assert len(examples) >= 12
    for sql in examples:
        rows = p.query(sql)
        assert rows, f"no rows from:\n{sql}"
        for row in rows:
            for column, value in row.items():
                if MONEY_COLUMN.search(column) and value is not None:
                    exact(value)

    # the documented per-currency totals are the org's, to the cent
    (per_currency,) = [sql for sql in examples if "GROUP BY currency, corporate_currency" in sql]
    got = {r["currency"]: (r["orders"], exact(r["amount"])) for r in p.query(per_currency)}
    assert got == org_totals_by_currency(p)


def test_the_retention_purge_keeps_a_given_up_write_back_that_a_shipment_wrote_the_same_order_after(pipeline):
    """The purge deletes rows a newer DONE row superseded, and only a row of the same source supersedes
    one (v_open_failures): a shipment's write to an Order, once past retention_days, takes neither the
    import's given-up write on it out of v_open_failures nor its "Retry failed write-backs now"."""
    from datetime import timedelta

    from salesforce_orders.retention import purge_expired
    from salesforce_orders.warehouse.types import utc_now

    p = pipeline
    run, rejected = p.given_up_write_then_a_shipment_to_its_order()
    assert p.scalar("SELECT state FROM writeback_outbox WHERE shipment_key = 'SHIP-1' AND sf_object = 'Order'") == "DONE"
    open_failures = "SELECT outbox_id, sf_order_id, state, last_error_code FROM v_open_failures ORDER BY outbox_id"
    before = p.query(open_failures)
    assert [(f["sf_order_id"], f["state"]) for f in before] == [(rejected, "DEAD")]

    purged = purge_expired(p.engine, timedelta(days=3), schema=p.schema, now=utc_now() + timedelta(days=4))

    assert purged is not None and purged.outbox_rows > 0  # the DONE rows went
    assert p.query(open_failures) == before
    assert p.scalar("SELECT lifecycle_state FROM external_orders WHERE sf_order_id = :o", o=rejected) == "FAILED"
