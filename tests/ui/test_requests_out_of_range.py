"""Requests with values the warehouse cannot take as they are, on SQLite and PostgreSQL: the last day
there is, a page number past any integer, a NUL in a search. Each gets a page saying what it
shows, never a server error (the test client raises one)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from salesforce_orders.load import load_run, record_quarantine
from salesforce_orders.warehouse import tables

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HUGE_PAGES = ["999999999999999999", "99999999999999999999999"]  # past PostgreSQL's bigint; past SQLite's integer too


@pytest.fixture
def client(created_warehouse, make_transformed, external_orders_pages):
    """The pages on a warehouse with orders 1 and 2 loaded, order 9 quarantined and one import run."""
    w = created_warehouse
    load_run(w.engine, "run-1", [[make_transformed(1), make_transformed(2)]], schema=w.schema, watermark=None, now=NOW)
    with w.engine.begin() as conn:
        record_quarantine(conn, "run-1", [{"sf_order_id": "801000000000009AAA", "order_number": "00000009", "account_name": "Acme",
                                           "failed_checks": ["account_present"], "details": {"account_present": "AccountId is empty"}}],
                          schema=w.schema, now=NOW)
        conn.execute(sa.insert(tables(w.schema).import_runs).values(run_id="run-1", dag_run_id="run-1", status="success", started_at=NOW))
    return external_orders_pages(w.engine, w.schema)


def shown(client, path: str, **params: str) -> str:
    page = client.get(path, params=params)
    assert page.status_code == 200
    return page.text


def test_imported_to_the_last_day_there_is_bounds_nothing(client):
    text = shown(client, "/", imported_to="9999-12-31")
    assert 'data-order-number="00000001"' in text and 'data-order-number="00000002"' in text
    assert '<div class="problems">' not in text
    assert 'data-order-number="00000001"' not in shown(client, "/", imported_from="9999-12-31", imported_to="9999-12-31")


@pytest.mark.parametrize("number", HUGE_PAGES)
@pytest.mark.parametrize(("path", "row"), [("/", 'data-order-number="00000001"'), ("/quarantine", 'data-order-number="00000009"'),
                                           ("/runs", 'data-run-id="run-1"')])
def test_a_page_past_the_last_shows_the_last_and_says_so(client, path, row, number):
    text = shown(client, path, page=number)
    assert row in text and "page 1 of 1" in text
    assert f"There is no page {number}: the list has 1 page, this is the last." in text
    assert 'id="past-last-page"' not in shown(client, path, page="1")


@pytest.mark.parametrize(("path", "q", "found", "not_found"), [
    ("/", "00000001\x00", 'data-order-number="00000001"', 'data-order-number="00000002"'),
    ("/", "\x00", 'data-order-number="00000001"', "Nothing found"),  # nothing left to search for: every order
    ("/quarantine", "0000\x000009", 'data-order-number="00000009"', "Nothing found"),
    ("/order", "00000001\x00", 'data-where="loaded"', "was never seen by the import"),
    ("/order", "\x00", "Give an OrderNumber or a Salesforce order id.", "was never seen by the import"),
])
def test_a_nul_in_a_search_is_dropped(client, path, q, found, not_found):
    text = shown(client, path, q=q)
    assert found in text and not_found not in text
    assert "\x00" not in text  # nor echoed in the search box
