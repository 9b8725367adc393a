"""History mode (config ``history_mode``): every version of an order and of its products, with the
period each was the warehouse's, so "as of" queries give what the warehouse held at a moment; off
by default.

The stages run as the DAG's tasks (``conftest.Pipeline``), against the sandbox org and a SQLite or
PostgreSQL warehouse.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal


def as_utc(value) -> datetime:
    value = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def money(value) -> Decimal:
    """An amount as read through plain SQL (a float on SQLite) as the exact decimal it shows."""
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def as_of(p, moment: datetime) -> dict[str, dict]:
    """Each order as the warehouse held it at ``moment``, with its products' ids and total."""
    versions = {
        v["sf_order_id"]: {**v, "items": {}}
        for v in p.query("SELECT * FROM external_order_versions")
        if as_utc(v["valid_from"]) <= moment and (v["valid_to"] is None or as_utc(v["valid_to"]) > moment)
    }
    for item in p.query("SELECT * FROM external_order_item_versions"):
        version = versions.get(item["sf_order_id"])
        if version is not None and as_utc(item["valid_from"]) == as_utc(version["valid_from"]):
            version["items"][item["sf_order_item_id"]] = money(item["total_price"])
    return versions


def test_history_is_off_by_default(pipeline):
    run = pipeline.run()
    assert run.succeeded, run.error
    assert pipeline.scalar("SELECT COUNT(*) FROM external_order_versions") == 0
    assert pipeline.scalar("SELECT COUNT(*) FROM external_order_item_versions") == 0


def test_every_version_of_an_order_and_its_products_is_kept_for_as_of_queries(pipeline):
    p = pipeline
    p.set_config(overlap_minutes=0)
    first = p.run()  # history off: the orders are there, no versions yet
    assert first.succeeded, first.error
    p.set_config(overlap_minutes=0, history_mode=True)
    seeded = p.run()
    assert seeded.succeeded, seeded.error
    active = {r["sf_order_id"]: r for r in p.query("SELECT * FROM external_orders WHERE sf_state = 'active'")}
    current = {r["sf_order_id"]: r for r in p.query("SELECT * FROM external_order_versions WHERE is_current")}
    assert set(current) == set(active)
    for order_id, version in current.items():  # valid from the order's last load
        assert as_utc(version["valid_from"]) == as_utc(active[order_id]["last_imported_at"])
    before = datetime.now(UTC)
    items = {r["sf_order_id"]: r["n"] for r in p.query(
        "SELECT sf_order_id, COUNT(*) AS n FROM external_order_items WHERE NOT is_deleted GROUP BY sf_order_id")}
    changed, drafted = [o for o in sorted(items) if items[o] > 1][:2]
    held_before = as_of(p, before)
    assert len(held_before[changed]["items"]) == items[changed]

    removed = p.remove_order_product(changed)
    p.org_update("Order", drafted, Status="Draft")
    run = p.run()
    assert run.succeeded, run.error
    after = datetime.now(UTC)

    versions = p.query("SELECT * FROM external_order_versions WHERE sf_order_id = :o ORDER BY valid_from", o=changed)
    assert [v["is_current"] for v in versions] == [False, True]
    assert as_utc(versions[0]["valid_to"]) == as_utc(versions[1]["valid_from"]) and versions[1]["valid_to"] is None
    org_total = p.org_rows('SELECT TotalAmount FROM "Order" WHERE Id = ?', changed)[0]["TotalAmount"]
    assert money(versions[1]["total_amount"]) == Decimal(repr(org_total)) != money(versions[0]["total_amount"])
    # as of before the change: the old version with every product; as of now: the new one without the removed
    assert as_of(p, before)[changed]["items"] == held_before[changed]["items"] and removed in held_before[changed]["items"]
    now_held = as_of(p, after)
    assert set(now_held[changed]["items"]) == set(held_before[changed]["items"]) - {removed}
    assert sum(now_held[changed]["items"].values()) == money(versions[1]["total_amount"])
    # the order set back to Draft: its version ended, none is current
    assert drafted in held_before and drafted not in now_held
    assert p.scalar("SELECT COUNT(*) FROM external_order_versions WHERE sf_order_id = :o AND is_current", o=drafted) == 0
    # every other order: one version, still current
    others = set(active) - {changed, drafted}
    assert {o for o, v in now_held.items() if o in others and as_utc(v["valid_from"]) == as_utc(held_before[o]["valid_from"])} == others


def test_history_switched_off_and_on_again_ends_the_version_the_order_moved_past_meanwhile(pipeline):
    """Runs with history mode off load newer versions without versioning them: switched on again,
    the current version is the order as the warehouse holds it now (valid from its last load), the
    old one ends there, and its products follow."""
    p = pipeline
    p.set_config(history_mode=True)
    assert p.run().succeeded
    order = p.scalar("SELECT MIN(sf_order_id) FROM external_orders")
    p.set_config(history_mode=False)
    p.org_update("Order", order, PoNumber="PO-CHANGED-WHILE-OFF")
    assert p.run().succeeded
    p.set_config(history_mode=True)

    assert p.run().succeeded

    held = p.query("SELECT po_number, last_imported_at FROM external_orders WHERE sf_order_id = :o", o=order)[0]
    versions = p.query(
        "SELECT po_number, is_current, valid_from, valid_to FROM external_order_versions WHERE sf_order_id = :o ORDER BY valid_from", o=order
    )
    assert [(v["po_number"], bool(v["is_current"])) for v in versions][-1] == ("PO-CHANGED-WHILE-OFF", True)
    assert len(versions) == 2 and as_utc(versions[0]["valid_to"]) == as_utc(versions[1]["valid_from"]) == as_utc(held["last_imported_at"])
    assert as_of(p, datetime.now(UTC))[order]["po_number"] == "PO-CHANGED-WHILE-OFF"
    current_items = p.scalar("SELECT COUNT(*) FROM external_order_item_versions WHERE sf_order_id = :o AND is_current", o=order)
    assert current_items == p.scalar("SELECT COUNT(*) FROM external_order_items WHERE sf_order_id = :o AND NOT is_deleted", o=order)
