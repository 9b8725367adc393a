"""Order change events as the import sees them: which orders changed, whether the change is the
import's own write-back, and where the subscription has got to (kept in the warehouse).

Nothing of an event's payload is kept beyond its ``ChangeEventHeader``: the Order's fields (card
fields among them) are decoded by the Avro reader and dropped here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from .schema_versions import create_all
from .warehouse.definitions import tables
from .warehouse.types import utc_now
from .warehouse.writes import upsert

REPLAY_KEY = "events.replay_id:{topic}"  # sync_state: the last replay id whose events were handed on
# Change types whose record ids are Orders to import again (GAP_* events carry ids too: Salesforce
# could not send the fields, the ids are still right).
_ORDER_CHANGE_TYPES = {"CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE"}
# Salesforce's overflow event: one transaction changed more records than it sends events for (over
# 100,000); it names none of them. Orders changed, unknown which: the run reads every change.
OVERFLOW = "GAP_OVERFLOW"


@dataclass(frozen=True)
class OrderChange:
    change_type: str
    order_ids: tuple[str, ...]
    origin: str
    commit_user: str

    @property
    def names_the_orders(self) -> bool:
        """False for an overflow event: Orders changed, and it does not say which."""
        return self.change_type != OVERFLOW


def order_change(payload: Mapping[str, Any]) -> OrderChange | None:
    """The header of a decoded change event; None for anything that is no change of Orders. An
    overflow event (GAP_OVERFLOW) is one, naming none (``names_the_orders`` is False)."""
    header = payload.get("ChangeEventHeader") or {}
    change_type = str(header.get("changeType", ""))
    if change_type not in _ORDER_CHANGE_TYPES and change_type != OVERFLOW:
        return None
    return OrderChange(change_type, tuple(header.get("recordIds") or ()), header.get("changeOrigin") or "",
                       header.get("commitUser") or "")


def is_echo(change: OrderChange, echo_client: str) -> bool:
    """Whether the change came from the import's own calls (``changeOrigin`` names its client)."""
    client = change.origin.rpartition(";client=")[2] if ";client=" in change.origin else ""
    return client == echo_client


class ReplayStore:
    """The subscription's replay id in the warehouse's ``sync_state`` (one row per topic)."""

    def __init__(self, engine: sa.Engine, schema: str | None, topic: str):
        self.engine = engine
        self.schema = schema
        self.key = REPLAY_KEY.format(topic=topic)
        create_all(engine, schema)

    def load(self) -> bytes | None:
        state = tables(self.schema).sync_state
        with self.engine.connect() as conn:
            value = conn.execute(sa.select(state.c.value).where(state.c.key == self.key)).scalar()
        return bytes.fromhex(value) if value else None

    def save(self, replay_id: bytes | None) -> None:
        """Remember ``replay_id`` (None forgets it: the next subscription starts at the latest)."""
        row = {"key": self.key, "value": replay_id.hex() if replay_id else None, "updated_at": utc_now()}
        with self.engine.begin() as conn:
            upsert(conn, tables(self.schema).sync_state, [row], ["key"])
