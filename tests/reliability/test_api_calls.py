"""The import's API calls by kind, pinned: independent REST reads go out together in Composite
calls (one API call each) rather than a call a read."""

from __future__ import annotations

from typing import Any

from salesforce_orders.salesforce import SalesforceOrdersHook


def calls_by_kind(p: Any) -> dict[str, int]:
    return p.org.admin.stats()["calls"]


def spent(p: Any, before: dict[str, int]) -> dict[str, int]:
    """The calls by kind since ``before`` (logins left out)."""
    return {kind: n - before[kind] for kind, n in calls_by_kind(p).items() if n != before[kind] and kind not in ("auth", "total")}


def test_independent_reads_take_one_composite_call(sqlite_pipeline, monkeypatch):
    p = sqlite_pipeline
    composite_calls: list[str] = []  # the hook's calls to composite: reads together, and collection writes
    call = SalesforceOrdersHook.call

    def noted(self: SalesforceOrdersHook, method: str, path: str, **kwargs: Any) -> Any:
        if path.startswith("composite"):
            composite_calls.append(f"{method} {path}")
        return call(self, method, path, **kwargs)

    monkeypatch.setattr(SalesforceOrdersHook, "call", noted)
    before = calls_by_kind(p)

    run = p.run(until="extract")

    # the count with the two currency-rate queries: one call; then the orders' REST pages and the
    # one query of the ancestors (a query alone is a plain call)
    assert composite_calls == ["POST composite"]
    assert spent(p, before) == {"composite": 1, "query": 2, "query_more": 1}
    assert run.results["extract"]["api_calls"] == 4

    run = p.run(until="mark_status_changes")
    composite_calls.clear()
    before = calls_by_kind(p)

    p.stage("write_back", run)

    reads, writes = composite_calls.count("POST composite"), composite_calls.count("PATCH composite/sobjects")
    assert writes > 1 and reads + writes == len(composite_calls)
    # the Order describe with the status-category check, then each round's Orders and Accounts
    # checks: one call each; the REST query left is the read-back of our own writes
    assert reads == 1 + writes
    assert spent(p, before) == {"composite": reads + writes, "query": 1}
