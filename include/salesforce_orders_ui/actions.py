"""The warehouse side of "Retry failed write-backs now".

The write-back task retries ``FAILED`` outbox rows on its own, with a growing delay between runs,
and gives a record up (``DEAD``) after ``writeback_max_attempts``. Once the cause is fixed in
Salesforce, on-call wants them sent now: this makes every open failure due immediately, and gives
the records that were given up a fresh set of attempts. The run that sends them is an ordinary DAG
run, triggered through Airflow's API by the caller.

Rows abandoned because their order left Activated or was deleted stay as they are: writing
``Imported`` onto such an order would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from salesforce_orders.warehouse.definitions import OUTBOX_DEAD, OUTBOX_FAILED, Tables
from salesforce_orders.warehouse.writes import in_batches

from .queries import open_writeback_failures


@dataclass(frozen=True)
class RetryScheduled:
    """What ``schedule_failed_writebacks`` changed."""

    failed: int  # FAILED rows now due
    revived: int  # DEAD rows (attempts exhausted) back to FAILED, attempts reset, due

    @property
    def total(self) -> int:
        return self.failed + self.revived


def schedule_failed_writebacks(conn: sa.Connection, t: Tables, now: datetime | None = None) -> RetryScheduled:
    """Make every open write-back failure due at ``now`` (default: the current time)."""
    now = now or datetime.now(UTC)
    w = t.writeback_outbox
    open_failures = open_writeback_failures(t).subquery()
    rows = conn.execute(sa.select(open_failures.c.id, open_failures.c.state)).all()
    failed = [row.id for row in rows if row.state == OUTBOX_FAILED]
    dead = [row.id for row in rows if row.state == OUTBOX_DEAD]
    for batch in in_batches(failed):
        conn.execute(sa.update(w).where(w.c.id.in_(batch)).values(next_attempt_at=now, updated_at=now))
    for batch in in_batches(dead):
        conn.execute(
            sa.update(w).where(w.c.id.in_(batch)).values(state=OUTBOX_FAILED, attempts=0, next_attempt_at=now, updated_at=now)
        )
    return RetryScheduled(failed=len(failed), revived=len(dead))


__all__ = ["RetryScheduled", "schedule_failed_writebacks"]
