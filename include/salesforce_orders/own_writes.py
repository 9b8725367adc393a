"""Our own writes in Salesforce, so that the next extract does not read them back (no echo).

Every write-back moves the ``SystemModstamp`` of each order it writes: without this, the run after
an import of 100k orders would extract all 100k again, only to find them unchanged. A write-back
therefore keeps a record of what it wrote, and the next extract leaves out the orders whose last
change is that write, and nothing else:

1. Just before each batch is sent, the write-back asks which of the batch's orders someone else
   changed since the import read them (``SystemModstamp`` past the stamp the warehouse holds).
   Those are *re-read*: our write would hide their change behind the integration user's name.
2. After the last batch, it reads back the orders last modified by the integration user since it
   started (one query). Its span runs from its start to the highest stamp read back: every order
   last modified by us inside it is one of ours, or named in ``reread`` (an order written by the
   integration user elsewhere, or one found changed in step 1).
3. The next extract's window leaves out orders last modified by the integration user inside a
   span, except those named in ``reread`` (``soql._not_own_writes``).

Someone else's edit after our write names its user as ``LastModifiedById``: it is read. A write
by the integration user after the read-back has a stamp at or past the span's end: it is read.
What cannot be told apart is an edit landing between step 1's query and the batch's own write
(the same instant for Salesforce as for us: no API offers a conditional bulk update), and writes
by other software logged in as the integration user (the import's user is its own, as
docs/configuration.md asks). A write-back that finds more than ``MAX_REREAD`` orders to re-read
records nothing: the next run then reads all of them back, as it always did; so do spans beyond
what one query can name.

The spans live in ``sync_state`` (one JSON value): at most ``MAX_SPANS``, the newest; a span
whose end the watermark passed long ago cannot meet an incremental window and is dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

OWN_WRITES_KEY = "orders.own_writes"
# Ids named in the window's IN list, all spans together: the REST query travels in a GET's URL,
# which Salesforce takes up to 16,384 characters (an id, quoted and %-encoded, is some 27).
MAX_REREAD = 200
MAX_SPANS = 10
KEEP_BEHIND_WATERMARK = timedelta(days=1)


def parse_stamp(value: Any) -> datetime:
    from .runs import parse_watermark

    return value if isinstance(value, datetime) else parse_watermark(str(value))


@dataclass(frozen=True)
class OwnWrites:
    """One write-back's span: orders last modified by ``user_id`` with start <= stamp < end are ours."""

    user_id: str
    start: datetime
    end: datetime
    reread: tuple[str, ...] = ()
    run_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id, "start": self.start.isoformat(), "end": self.end.isoformat(),
            "reread": list(self.reread), "run_id": self.run_id,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> OwnWrites:
        return cls(value["user_id"], parse_stamp(value["start"]), parse_stamp(value["end"]), tuple(value.get("reread") or ()), value.get("run_id"))


def span_of(
    user_id: str, started: datetime, read_back: Iterable[tuple[str, Any]], written: set[str], *, run_id: str | None = None
) -> OwnWrites | None:
    """The span of a write-back that started at ``started`` and wrote the orders ``written``, from
    the read-back ``(Id, SystemModstamp)`` of every order last modified by the integration user
    since; None when nothing of ours is in it or too many orders need re-reading."""
    stamps: dict[str, datetime] = {record_id: parse_stamp(stamp) for record_id, stamp in read_back}
    if not stamps or not (written & stamps.keys()):
        return None
    reread = sorted(stamps.keys() - written)
    if len(reread) > MAX_REREAD:
        return None
    # Exclusive end: the orders at the highest stamp are read again (a write of ours in the same
    # second, on an org that keeps whole seconds, must not hide a later one).
    return OwnWrites(user_id, started, max(stamps.values()), tuple(reread), run_id)


def stored(conn: sa.Connection, sync_state: sa.Table) -> list[OwnWrites]:
    value = conn.execute(sa.select(sync_state.c.value).where(sync_state.c.key == OWN_WRITES_KEY)).scalar()
    return [OwnWrites.from_dict(item) for item in json.loads(value)] if value else []


def current(engine: sa.Engine, sync_state: sa.Table) -> tuple[OwnWrites, ...]:
    """The spans an extract leaves out: the newest, as many as name at most ``MAX_REREAD`` orders to
    read again together (an older span left aside only means its orders are read again)."""
    with engine.connect() as conn:
        spans = stored(conn, sync_state)
    kept: list[OwnWrites] = []
    for span in reversed(spans):
        if sum(len(s.reread) for s in kept) + len(span.reread) > MAX_REREAD:
            break
        kept.append(span)
    return tuple(reversed(kept))


def remember(engine: sa.Engine, sync_state: sa.Table, span: OwnWrites, *, watermark: str | None, now: datetime) -> None:
    """Add a write-back's span to the stored ones; drop those no incremental window can reach."""
    from .warehouse.writes import upsert

    horizon = parse_stamp(watermark) - KEEP_BEHIND_WATERMARK if watermark else None
    with engine.begin() as conn:
        conn.execute(sa.select(sync_state.c.key).where(sync_state.c.key == OWN_WRITES_KEY).with_for_update())
        spans = [s for s in stored(conn, sync_state) if horizon is None or s.end >= horizon] + [span]
        value = json.dumps([s.as_dict() for s in spans[-MAX_SPANS:]])
        upsert(conn, sync_state, [{"key": OWN_WRITES_KEY, "value": value, "updated_at": now}], ["key"])
