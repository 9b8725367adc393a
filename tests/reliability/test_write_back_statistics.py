"""After the write-back PostgreSQL knows the outbox's new states: the report's retention purge of a
large run is then a hash join, not a nested loop over the whole outbox (minutes at 100k rows)."""

from __future__ import annotations

import pytest


@pytest.mark.postgres
def test_the_write_back_leaves_statistics_that_know_its_rows_are_done(postgres_pipeline):
    p = postgres_pipeline
    run = p.run(until="write_back")
    assert run.succeeded, run.error
    assert p.scalar("SELECT COUNT(*) FROM writeback_outbox WHERE state = 'PENDING'") == 0

    common = p.scalar(
        "SELECT most_common_vals::text FROM pg_stats WHERE schemaname = :s AND tablename = 'writeback_outbox' AND attname = 'state'",
        s=p.schema,
    )

    assert common is not None and "DONE" in common and "PENDING" not in common
