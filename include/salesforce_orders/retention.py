"""Retention: staged records and finished write-back rows are deleted after ``retention_days``.

Staging keeps each run's raw records (masked) for a few days, so a run can be looked into or a
task retried; the outbox keeps every write-back row it sent. Neither is needed for long, and both
grow with every run. The ``report`` task, which ends every run (a failed one too), purges them:
at most once an hour (a mark in ``sync_state``), each purge a few set-based deletes, and running
it twice deletes nothing more.

A finished outbox row is one written (``DONE``) before the cutoff, together with the older rows
for the same Salesforce record from the same source it superseded (done, failed or given up: the
import's rows by the import's, a shipment's by a shipment's). Rows waiting to be sent
and a record's newest failure (still shown as an open failure, still retried) stay: what the views,
the pages and the order lifecycles show is the same before and after a purge.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from .staging import purge_staging
from .warehouse.definitions import OUTBOX_DEAD, OUTBOX_DONE, OUTBOX_FAILED, tables
from .warehouse.types import parse_utc, utc_now
from .warehouse.views import same_source
from .warehouse.writes import upsert

log = logging.getLogger(__name__)

PURGED_KEY = "retention.purged_at"  # sync_state: when the last purge ran
PURGE_EVERY = timedelta(hours=1)


@dataclass(frozen=True)
class Purged:
    staged_rows: int
    outbox_rows: int


def purge_finished_outbox(conn: sa.Connection, schema: str | None, cutoff: datetime) -> int:
    """Delete the outbox rows finished before ``cutoff`` (see the module's doc); returns how many."""
    w = tables(schema).writeback_outbox
    done = w.alias("done")
    finished_by_an_old_write = (
        sa.select(done.c.id)
        .where(
            done.c.sf_object == w.c.sf_object,
            done.c.sf_record_id == w.c.sf_record_id,
            done.c.id >= w.c.id,
            done.c.state == OUTBOX_DONE,
            done.c.updated_at < cutoff,
            # Only a write from the same source supersedes a row, as in v_open_failures: a shipment's
            # write to an Order leaves the import's failure on it open, and the other way round.
            same_source(done, w),
        )
        .exists()
    )
    finished = w.c.state.in_([OUTBOX_DONE, OUTBOX_DEAD, OUTBOX_FAILED])
    return conn.execute(sa.delete(w).where(finished, finished_by_an_old_write)).rowcount


def purge_expired(
    engine: sa.Engine, retention: timedelta, *, schema: str | None = None, now: datetime | None = None
) -> Purged | None:
    """Delete what is older than ``retention``, unless a purge ran within the last hour (None then)."""
    now = now or utc_now()
    s = tables(schema).sync_state
    with engine.connect() as conn:
        last = conn.execute(sa.select(s.c.value).where(s.c.key == PURGED_KEY)).scalar()
    if last is not None and now - parse_utc(last) < PURGE_EVERY:
        return None
    cutoff = now - retention
    staged = purge_staging(engine, retention, schema=schema, now=now)
    with engine.begin() as conn:
        outbox = purge_finished_outbox(conn, schema, cutoff)
        upsert(conn, s, [{"key": PURGED_KEY, "value": now.isoformat(), "updated_at": now}], ["key"])
    log.info("Retention (%s): deleted %d staged rows and %d finished write-back rows from before %s", retention, staged, outbox, cutoff)
    return Purged(staged, outbox)


__all__ = ["PURGED_KEY", "PURGE_EVERY", "Purged", "purge_expired", "purge_finished_outbox"]
