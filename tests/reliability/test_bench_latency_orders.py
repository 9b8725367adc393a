"""``make bench-latency`` activates only orders the import accepts: in its org (generated with
``ORG_OPTIONS``), every order ``orders_to_activate`` may pick is loaded once activated, none
quarantined or skipped; an activation the import refused would keep the bench waiting for a
COMPLETE that never comes."""

from __future__ import annotations

import pytest

from salesforce_orders_local.bench_latency import ORG_OPTIONS, orders_to_activate


@pytest.fixture(scope="module")
def org_size() -> tuple[int, int]:
    return 20, 7  # the first reset of the org, before each test's own


@pytest.mark.parametrize(("orders", "seed"), [(20, 7), (20, 1), (20, 3), (200, 7)])
def test_every_order_the_bench_may_activate_is_imported(sqlite_pipeline, orders: int, seed: int) -> None:
    org = sqlite_pipeline.org
    org.admin.reset(orders=orders, seed=seed, **ORG_OPTIONS)
    drafts = org.store.activatable_order_ids(orders)
    chosen = orders_to_activate(org.store, len(drafts))
    assert chosen
    for order_id in chosen:
        sqlite_pipeline.org_update("Order", order_id, Status="Activated")

    outcome = sqlite_pipeline.run()

    assert outcome.succeeded, outcome.error
    assert set(chosen) <= sqlite_pipeline.loaded_ids()
    assert not set(chosen) & sqlite_pipeline.quarantined_ids()
    assert not sqlite_pipeline.scalar("SELECT COUNT(*) FROM skipped_orders")
