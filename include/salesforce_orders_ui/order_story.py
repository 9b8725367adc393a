"""One order's whole story, and "where is order X": the queries behind the view's order page.

An order is found by its OrderNumber or its Salesforce id, in the loaded orders, the quarantine
and the outbox. Where it is, in words:

- *loaded*: in ``external_orders``, its newest version too;
- *loaded, newest version refused*: in ``external_orders`` with ``newer_version_quarantined_at``:
  the row is the last version that passed, Salesforce's current one is in quarantine;
- *quarantined only*: refused by validation, never loaded;
- *never seen*: in no table: a Draft order (only Activated ones are imported), one activated
  before the lookback, or one the zero-total policy skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from salesforce_orders.card_masks import CARD_MASK_ACTION
from salesforce_orders.warehouse.definitions import OUTBOX_DEAD, OUTBOX_FAILED, Tables

from .queries import MAX_SEARCH_LENGTH, sync_status

LOADED = "loaded"
NEWEST_REFUSED = "loaded, newest version refused"
QUARANTINED_ONLY = "quarantined only"
NEVER_SEEN = "never seen"


@dataclass
class OrderStory:
    asked: str
    where: str
    order: dict[str, Any] | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    writebacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def card_data_left_in_salesforce(self) -> list[dict[str, Any]]:
        """Failed or given-up write-backs that were to X out the card fields: the card data is still in Salesforce."""
        return [w for w in self.writebacks if CARD_MASK_ACTION in w["action"].split("+") and w["state"] in (OUTBOX_FAILED, OUTBOX_DEAD)]

    @property
    def lifecycle(self) -> list[tuple[str, Any]]:
        """The order's moments, oldest first: created and activated in Salesforce, imported, refused, changed state."""
        moments: list[tuple[str, Any]] = []
        if self.order:
            o = self.order
            moments += [("created in Salesforce", o["sf_created_at"]), ("activated in Salesforce", o["activated_at"]),
                        ("first imported", o["first_imported_at"]), ("last imported", o["last_imported_at"])]
            if o["sf_state"] != "active":
                moments.append((f"{'set back to Draft' if o['sf_state'] == 'deactivated' else 'deleted'} in Salesforce", o["sf_state_changed_at"]))
            if o["newer_version_quarantined_at"]:
                moments.append(("newest version refused by validation", o["newer_version_quarantined_at"]))
        moments += [(f"quarantined (run {q['run_id']})", q["quarantined_at"]) for q in self.quarantine]
        moments += [(f"released from quarantine (run {q['run_id']})", q["released_at"]) for q in self.quarantine if q["released_at"]]
        moments += [(f"write-back {w['action']}: {w['state']}", w["updated_at"]) for w in self.writebacks]
        return sorted((m for m in moments if m[1] is not None), key=lambda m: m[1])


def _order_ids(conn: sa.Connection, t: Tables, asked: str) -> list[str]:
    """The Salesforce ids an OrderNumber or id names, wherever the warehouse has seen them."""
    o, q, w = t.external_orders, t.quarantined_orders, t.writeback_outbox
    ids = conn.execute(sa.select(o.c.sf_order_id).where(sa.or_(o.c.order_number == asked, o.c.sf_order_id == asked))).scalars().all()
    ids += conn.execute(
        sa.select(q.c.sf_order_id).where(sa.or_(q.c.order_number == asked, q.c.sf_order_id == asked)).distinct()
    ).scalars().all()
    ids += conn.execute(sa.select(w.c.sf_order_id).where(w.c.sf_order_id == asked).distinct()).scalars().all()
    return list(dict.fromkeys(ids))


def order_story(conn: sa.Connection, t: Tables, asked: str) -> OrderStory:
    asked = asked.strip()[:MAX_SEARCH_LENGTH]
    ids = _order_ids(conn, t, asked) if asked else []
    if not ids:
        return OrderStory(asked, NEVER_SEEN)
    sf_order_id = ids[0]
    o, q, w = t.external_orders, t.quarantined_orders, t.writeback_outbox
    order = conn.execute(sa.select(o).where(o.c.sf_order_id == sf_order_id)).mappings().first()
    story = OrderStory(asked, NEVER_SEEN)
    story.quarantine = [dict(r) for r in conn.execute(sa.select(q).where(q.c.sf_order_id == sf_order_id).order_by(q.c.id)).mappings()]
    story.writebacks = [
        dict(r) for r in conn.execute(
            sa.select(w).where(w.c.sf_order_id == sf_order_id, w.c.shipment_key.is_(None)).order_by(w.c.id)
        ).mappings()
    ]
    if order is not None:
        story.order = {**order, "sync_status": sync_status(order["lifecycle_state"], order["lifecycle_error"])}
        story.where = NEWEST_REFUSED if order["newer_version_quarantined_at"] else LOADED
        items = t.external_order_items
        story.items = [dict(r) for r in conn.execute(sa.select(items).where(items.c.sf_order_id == sf_order_id)
                                                     .order_by(items.c.service_key, items.c.sf_order_item_id)).mappings()]
        services = t.order_services
        story.services = [dict(r) for r in conn.execute(sa.select(services).where(services.c.sf_order_id == sf_order_id)
                                                        .order_by(services.c.service_key)).mappings()]
    elif story.quarantine:
        story.where = QUARANTINED_ONLY
    return story
