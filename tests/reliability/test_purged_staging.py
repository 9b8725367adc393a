"""A load cleared after its run's staging was purged refuses to load nothing.

Staging is kept ``retention_days`` and then purged by any run's report. A failed run whose load is
cleared later than that (a long weekend, a paused import) finds nothing of its orders staged: had
it loaded nothing and moved the watermark over the orders it had extracted, they would never be
read again. It fails instead, saying so, and the next run loads them.
"""

from __future__ import annotations

from datetime import timedelta

import pytest


def test_a_load_whose_staging_was_purged_fails_and_leaves_the_watermark_for_the_next_run(pipeline):
    from airflow.sdk.exceptions import AirflowFailException

    from salesforce_orders.staging import purge_staging
    from salesforce_orders.warehouse.types import utc_now

    p = pipeline
    run = p.run(until="transform")
    assert run.succeeded and run.results["transform"]["transformed"] > 0
    watermark = p.watermark()
    # days later, another run's report purges it (retention_days)
    assert purge_staging(p.engine, timedelta(days=3), schema=p.schema, now=utc_now() + timedelta(days=4)) > 0

    with pytest.raises(AirflowFailException, match=r"staged orders are gone .*the watermark was not moved"):
        p.stage("load", run)

    assert p.watermark() == watermark
    assert p.loaded_ids() == set()
    again = p.run()
    assert again.succeeded, again.error
    left_out = p.quarantined_ids() | {r["sf_order_id"] for r in p.query("SELECT sf_order_id FROM skipped_orders")}
    assert p.loaded_ids() | left_out == p.expected_order_ids() and p.loaded_ids()
    assert again.results["load"]["inserted"] == len(p.loaded_ids())  # the orders of the run whose load failed too


def test_a_load_whose_staging_was_purged_after_a_later_run_moved_the_watermark_loads_nothing_and_succeeds(pipeline):
    """The later run read the same orders (from the watermark this run never moved): nothing is lost,
    and the cleared load has nothing to do."""
    from salesforce_orders.staging import purge_staging
    from salesforce_orders.warehouse.types import utc_now

    p = pipeline
    run = p.run(until="transform")
    assert purge_staging(p.engine, timedelta(days=3), schema=p.schema, now=utc_now() + timedelta(days=4)) > 0
    later = p.run()
    assert later.succeeded, later.error
    watermark = p.watermark()

    loaded = p.stage("load", run)

    assert (loaded["inserted"], loaded["updated"]) == (0, 0)
    assert p.watermark() == watermark
