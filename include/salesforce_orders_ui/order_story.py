"""One order's whole story, and "where is order X": the queries behind the view's order page.

An order is found by its OrderNumber or its Salesforce id, in the loaded orders, the quarantine,
the skipped orders and the outbox. Where it is, in words:

- *loaded*: in ``external_orders``, its newest version too;
- *loaded, no longer Activated*: in ``external_orders``, but set back to Draft or deleted in
  Salesforce since (``sf_state``): the row is the version last imported;
- *loaded, newest version refused*: in ``external_orders`` with ``newer_version_quarantined_at``:
  the row is the last version that passed, Salesforce's current one is in quarantine (also an order
  set back to Draft or deleted, then activated again and refused: its row still says it left; the
  same for one activated again and skipped, *loaded, newest version skipped*);
- *loaded, newest version skipped*: in ``external_orders``, but a later run skipped it (e.g. its
  total became zero under ``zero_total_policy: "skip"``): the row is the version before;
- *quarantined only*: refused by validation, never loaded;
- *skipped*: deliberately left out by the config (``skipped_orders``, e.g. a zero total), never loaded;
- *never seen*: in no table: a Draft order (only Activated ones are imported), or one activated
  before the lookback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from salesforce_orders.api_names import SALESFORCE_ID_PATTERN, case_safe_id
from salesforce_orders.card_masks import CARD_MASK_ACTION
from salesforce_orders.model import SF_ACTIVE
from salesforce_orders.warehouse.definitions import OUTBOX_DEAD, OUTBOX_FAILED, Tables

from .queries import MAX_SEARCH_LENGTH, ORDER_ID, search_text, sync_status

LOADED = "loaded"
NO_LONGER_ACTIVE = "loaded, no longer Activated"
NEWEST_REFUSED = "loaded, newest version refused"
NEWEST_SKIPPED = "loaded, newest version skipped"
QUARANTINED_ONLY = "quarantined only"
SKIPPED = "skipped"
NEVER_SEEN = "never seen"


@dataclass
class OrderStory:
    asked: str
    where: str
    order: dict[str, Any] | None = None
    items: list[dict[str, Any]] = field(default_factory=list)
    services: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    writebacks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def last_skip(self) -> dict[str, Any] | None:
        """The newest skip no load has released since: what keeps the order's newest version out."""
        open_skips = [s for s in self.skipped if s["released_at"] is None]
        return max(open_skips, key=lambda s: s["skipped_at"]) if open_skips else None

    @property
    def last_refusal(self) -> dict[str, Any] | None:
        """The newest refusal no load or status change has released since: what keeps the order's newest version out."""
        open_refusals = [q for q in self.quarantine if q["released_at"] is None]
        return max(open_refusals, key=lambda q: q["quarantined_at"]) if open_refusals else None

    @property
    def resync_conf(self) -> dict[str, list[str]]:
        """The conf of a run importing this order again: its OrderNumber when the warehouse knows it,
        else what was asked for: ``order_ids`` for a Salesforce Order id, ``order_numbers`` otherwise."""
        known = [(self.order or {}).get("order_number"), *(r["order_number"] for r in [*self.skipped, *self.quarantine])]
        number = next((n for n in known if n), None)
        if number:
            return {"order_numbers": [number]}
        if ORDER_ID.fullmatch(self.asked):
            return {"order_ids": [self.asked]}
        return {"order_numbers": [self.asked]}

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
        moments += [(f"skipped (run {s['run_id']}): {s['reason']}", s["skipped_at"]) for s in self.skipped]
        moments += [(f"released from skipped (run {s['run_id']})", s["released_at"]) for s in self.skipped if s["released_at"]]
        moments += [(f"released from quarantine (run {q['run_id']})", q["released_at"]) for q in self.quarantine if q["released_at"]]
        moments += [(f"write-back {w['action']}: {w['state']}", w["updated_at"]) for w in self.writebacks]
        return sorted((m for m in moments if m[1] is not None), key=lambda m: m[1])


def _as_stored_id(asked: str) -> str:
    """The id as the warehouse stores it (18 characters, as the API returns it) for a Salesforce id
    typed in its 15-character form (as Salesforce's UI and reports show it) or with its last 3
    characters in another case; anything else as it is."""
    if SALESFORCE_ID_PATTERN.fullmatch(asked):
        try:
            return case_safe_id(asked)
        except ValueError:  # 18 characters whose last 3 do not fit the first 15: no Salesforce id
            return asked
    return asked


def _order_ids(conn: sa.Connection, t: Tables, asked: str) -> list[str]:
    """The Salesforce ids an OrderNumber or id names, wherever the warehouse has seen them."""
    o, w = t.external_orders, t.writeback_outbox
    sf_id = _as_stored_id(asked)
    ids = conn.execute(sa.select(o.c.sf_order_id).where(sa.or_(o.c.order_number == asked, o.c.sf_order_id == sf_id))).scalars().all()
    for table in (t.quarantined_orders, t.skipped_orders):
        ids += conn.execute(
            sa.select(table.c.sf_order_id).where(sa.or_(table.c.order_number == asked, table.c.sf_order_id == sf_id)).distinct()
        ).scalars().all()
    ids += conn.execute(sa.select(w.c.sf_order_id).where(w.c.sf_order_id == sf_id).distinct()).scalars().all()
    return list(dict.fromkeys(ids))


def order_story(conn: sa.Connection, t: Tables, asked: str) -> OrderStory:
    asked = search_text(asked)[:MAX_SEARCH_LENGTH]
    ids = _order_ids(conn, t, asked) if asked else []
    if not ids:
        return OrderStory(asked, NEVER_SEEN)
    sf_order_id = ids[0]
    o, q, s, w = t.external_orders, t.quarantined_orders, t.skipped_orders, t.writeback_outbox
    order = conn.execute(sa.select(o).where(o.c.sf_order_id == sf_order_id)).mappings().first()
    story = OrderStory(asked, NEVER_SEEN)
    story.quarantine = [dict(r) for r in conn.execute(sa.select(q).where(q.c.sf_order_id == sf_order_id).order_by(q.c.id)).mappings()]
    story.skipped = [dict(r) for r in conn.execute(sa.select(s).where(s.c.sf_order_id == sf_order_id).order_by(s.c.id)).mappings()]
    story.writebacks = [
        dict(r) for r in conn.execute(
            sa.select(w).where(w.c.sf_order_id == sf_order_id, w.c.shipment_key.is_(None)).order_by(w.c.id)
        ).mappings()
    ]
    if order is not None:
        story.order = {**order, "sync_status": sync_status(order["lifecycle_state"], order["lifecycle_error"])}
        story.where = _where_loaded(order, story.last_skip, story.last_refusal)
        items = t.external_order_items
        story.items = [dict(r) for r in conn.execute(sa.select(items).where(items.c.sf_order_id == sf_order_id)
                                                     .order_by(items.c.service_key, items.c.sf_order_item_id)).mappings()]
        services = t.order_services
        story.services = [dict(r) for r in conn.execute(sa.select(services).where(services.c.sf_order_id == sf_order_id)
                                                        .order_by(services.c.service_key)).mappings()]
    elif story.quarantine or story.skipped:
        # Never loaded: refused or skipped, whichever a run did last (a skipped order whose total
        # was then corrected may be refused, and the other way round).
        last_refusal = max((r["quarantined_at"] for r in story.quarantine), default=None)
        last_skip = max((r["skipped_at"] for r in story.skipped), default=None)
        story.where = SKIPPED if _later(last_skip, last_refusal) else QUARANTINED_ONLY
    return story


def _later(a: datetime | None, b: datetime | None) -> bool:
    """Whether ``a`` is a moment after ``b`` (None: never)."""
    return a is not None and (b is None or a > b)


def _where_loaded(order: Any, last_skip: dict[str, Any] | None, last_refusal: dict[str, Any] | None = None) -> str:
    """Where a loaded order is: what Salesforce did since the row was imported tells first."""
    if order["sf_state"] != SF_ACTIVE:
        # Leaving Activated released its refusals and skips (load.mark_status_changes): one still
        # open and newer means it was activated again and that version refused or skipped. The row
        # keeps its sf_state until a version loads, but Salesforce has the order Activated again.
        refused_at = last_refusal["quarantined_at"] if last_refusal else None
        skipped_at = last_skip["skipped_at"] if last_skip else None
        if _later(refused_at, order["sf_state_changed_at"]) or _later(skipped_at, order["sf_state_changed_at"]):
            return NEWEST_SKIPPED if _later(skipped_at, refused_at) else NEWEST_REFUSED
        return NO_LONGER_ACTIVE
    # A version newer than the row's was skipped after the row was imported (a skip before it was released by its load).
    skipped_at = last_skip["skipped_at"] if last_skip else None
    if _later(skipped_at, order["last_imported_at"]) and _later(skipped_at, order["newer_version_quarantined_at"]):
        return NEWEST_SKIPPED
    return NEWEST_REFUSED if order["newer_version_quarantined_at"] else LOADED
