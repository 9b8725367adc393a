"""Every order the import leaves out can be found: each Activated order of the lookback is loaded,
quarantined or skipped (zero total under the ``skip`` policy), each with a row; the first run
records its real lower bound (the lookback date); the documented reconciliation query gives the
org's figures per currency.

The stages run as the DAG's tasks (``conftest.Pipeline``), against the sandbox org and a SQLite or
PostgreSQL warehouse.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

CENT = Decimal("0.01")
RECONCILIATION = "Reconciliation with Salesforce: the lookback's Activated orders by outcome and currency"


def org_orders(p, ids: set[str]) -> list[dict]:
    rows = p.org_rows('SELECT Id, TotalAmount, CurrencyIsoCode FROM "Order" WHERE IsDeleted = 0')
    return [r for r in rows if r["Id"] in ids]


def totals(orders: list[dict]) -> dict[str, tuple[int, Decimal]]:
    by_currency: dict[str, list] = defaultdict(lambda: [0, Decimal(0)])
    for order in orders:
        by_currency[order["CurrencyIsoCode"]][0] += 1
        by_currency[order["CurrencyIsoCode"]][1] += Decimal(repr(order["TotalAmount"]))
    return {c: (n, amount.quantize(CENT)) for c, (n, amount) in by_currency.items()}


def test_every_activated_order_of_the_lookback_is_loaded_quarantined_or_skipped_with_a_row_each(pipeline):
    p = pipeline
    p.set_config(zero_total_policy="skip")
    before = datetime.now(UTC)

    run = p.run()

    assert run.succeeded, run.error
    loaded = {r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM external_orders")}
    quarantined = p.quarantined_ids()
    skipped_rows = p.query("SELECT * FROM skipped_orders")
    skipped = {r["sf_order_id"] for r in skipped_rows}
    assert skipped, "the demo org has zero-total orders"
    assert len(skipped_rows) == len(skipped) == run.report["skipped"]
    assert not (loaded & quarantined) and not (loaded & skipped) and not (quarantined & skipped)
    assert loaded | quarantined | skipped == p.expected_order_ids()
    org = {r["Id"]: r for r in org_orders(p, skipped)}
    for row in skipped_rows:
        source = org[row["sf_order_id"]]
        assert row["reason"] == "zero total" and row["released_at"] is None
        assert (row["total_amount"], row["currency"]) == (Decimal(repr(source["TotalAmount"])), source["CurrencyIsoCode"])
        assert row["order_number"] and row["account_name"]

    # the first run read back to the lookback date, and says so
    window_start = p.scalar("SELECT window_start FROM import_runs WHERE run_id = :r", r=run.run_id)
    assert window_start is not None
    window_start = window_start if isinstance(window_start, datetime) else datetime.fromisoformat(window_start)
    lookback = before - timedelta(days=730)
    assert abs(window_start.replace(tzinfo=UTC) - lookback) < timedelta(minutes=5)

    # the documented reconciliation: loaded and skipped per currency are the org's, quarantined counted
    got: dict[str, dict] = defaultdict(dict)
    for row in p.query(p.documented_query(RECONCILIATION)):
        got[row["outcome"]][row["currency"]] = (row["orders"], None if row["amount"] is None else Decimal(row["amount"]).quantize(CENT))
    assert got["loaded"] == totals(org_orders(p, loaded))
    assert got["skipped"] == totals(org_orders(p, skipped))
    assert got["quarantined"] == {None: (len(quarantined), None)}

    # an order imported once its total is no longer zero: its skip is over
    order_id = sorted(skipped)[0]
    p.set_config(zero_total_policy="import")
    resync = p.run({"order_numbers": [p.scalar("SELECT order_number FROM skipped_orders WHERE sf_order_id = :o", o=order_id)]})
    assert resync.succeeded, resync.error
    assert p.scalar("SELECT released_at FROM skipped_orders WHERE sf_order_id = :o", o=order_id) is not None
    assert order_id in {r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM external_orders")}


def test_an_order_set_back_to_draft_then_activated_again_and_refused_is_counted_once_as_quarantined(pipeline, external_orders_pages):
    """A loaded order set back to Draft (its row ``deactivated``), then activated again with data the
    validation refuses, is Activated in Salesforce and refused: the reconciliation counts it once, as
    quarantined (its row still says ``deactivated`` until a version loads), and the view's story and
    Orders tab say its newest version was refused, not that it is no longer Activated."""
    p = pipeline
    p.set_config(overlap_minutes=0)
    assert p.run().succeeded
    order = sorted(p.loaded_ids())[0]
    number = p.scalar("SELECT order_number FROM external_orders WHERE sf_order_id = :o", o=order)
    p.org_update("Order", order, Status="Draft")
    assert p.run().succeeded
    assert p.scalar("SELECT sf_state FROM external_orders WHERE sf_order_id = :o", o=order) == "deactivated"

    p.org_update("Order", order, ShippingCountry="Atlantis")  # no country: refused (country_resolvable)
    p.org_update("Order", order, Status="Activated")
    run = p.run()

    assert run.succeeded, run.error
    assert order in p.quarantined_ids() and order in p.expected_order_ids()
    got = {(r["outcome"], r["currency"]): r["orders"] for r in p.query(p.documented_query(RECONCILIATION))}
    assert got[("quarantined", None)] == len(p.quarantined_ids() - {
        r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM external_orders WHERE sf_state = 'active'")
    })
    assert sum(got.values()) == len(p.expected_order_ids())
    pages = external_orders_pages(p.engine, p.schema)
    story = pages.get("/order", params={"q": number}).text
    assert story.split('data-where="', 1)[1].split('"', 1)[0] == "loaded, newest version refused"
    assert "is Activated again there" in story
    row = pages.get("/", params={"q": number}).text.split(f'data-order-number="{number}"', 1)[1].split("</tr>", 1)[0]
    assert "newest version refused" in row and "back to Draft in Salesforce" not in row


def test_an_order_set_back_to_draft_then_activated_again_with_a_zero_total_is_skipped_and_counted_once(pipeline, external_orders_pages):
    """Under ``zero_total_policy: skip``, an order whose row says it left Activated counts as not
    imported: activated again with a zero total it is skipped, counted once (as skipped), and the
    view says its newest version was skipped, not that it is no longer Activated."""
    p = pipeline
    p.set_config(overlap_minutes=0, zero_total_policy="skip")
    assert p.run().succeeded
    order = sorted(p.loaded_ids())[0]
    number = p.scalar("SELECT order_number FROM external_orders WHERE sf_order_id = :o", o=order)
    p.org_update("Order", order, Status="Draft")
    assert p.run().succeeded
    for item in p.org_rows("SELECT Id FROM OrderItem WHERE OrderId = ? AND IsDeleted = 0", order):
        p.org_update("OrderItem", item["Id"], UnitPrice=0)
    p.org_update("Order", order, Status="Activated")
    run = p.run()

    assert run.succeeded, run.error
    assert p.scalar("SELECT sf_state FROM external_orders WHERE sf_order_id = :o", o=order) == "deactivated"
    assert p.scalar("SELECT COUNT(*) FROM skipped_orders WHERE sf_order_id = :o AND released_at IS NULL", o=order) == 1
    assert sum(r["orders"] for r in p.query(p.documented_query(RECONCILIATION))) == len(p.expected_order_ids())
    pages = external_orders_pages(p.engine, p.schema)
    story = pages.get("/order", params={"q": number}).text
    assert story.split('data-where="', 1)[1].split('"', 1)[0] == "loaded, newest version skipped"
    row = pages.get("/", params={"q": number}).text.split(f'data-order-number="{number}"', 1)[1].split("</tr>", 1)[0]
    assert "newest version skipped" in row and "back to Draft in Salesforce" not in row
