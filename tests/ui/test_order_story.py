"""One order's whole story, and "where is order X", on the External Orders view (both warehouses)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from salesforce_orders.load import load_run
from salesforce_orders.schema_versions import create_all
from salesforce_orders.warehouse import tables

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def loaded(warehouse, make_transformed):
    """Two orders loaded (their write-backs queued), one of them with two products on two services."""
    create_all(warehouse.engine, warehouse.schema)
    orders = [make_transformed(1, items=((1, "S1", 2.0, 10.0), (2, "S2", 1.0, 5.0))), make_transformed(2)]
    load_run(warehouse.engine, "run-1", [orders], schema=warehouse.schema, watermark=None, now=NOW)
    return warehouse


def story(pages, w, asked: str) -> str:
    page = pages(w.engine, w.schema).get("/order", params={"q": asked})
    assert page.status_code == 200
    return page.text


def where(text: str) -> str:
    return text.split('data-where="', 1)[1].split('"', 1)[0]


def execute(w, statement) -> None:
    with w.engine.begin() as conn:
        conn.execute(statement)


def test_a_loaded_order_shows_its_data_products_services_write_backs_and_lifecycle(allowed, external_orders_pages, loaded):
    order = tables(loaded.schema).external_orders
    with loaded.engine.connect() as conn:
        number, sf_id = conn.execute(sa.select(order.c.order_number, order.c.sf_order_id).order_by(order.c.order_number)).first()
    text = story(external_orders_pages, loaded, number)
    assert where(text) == "loaded" and "holds Salesforce's newest version" in text
    assert text.count("<tr><td>", text.index('id="order-items"'), text.index('id="order-services"')) == 2
    assert 'id="order-writebacks"' in text and 'id="order-lifecycle"' in text and "first imported" in text
    assert where(story(external_orders_pages, loaded, sf_id)) == "loaded"  # the Salesforce id finds it too


def test_a_refused_newest_version_is_said_on_its_page_and_badged_on_the_orders_tab(allowed, external_orders_pages, loaded):
    t = tables(loaded.schema)
    with loaded.engine.connect() as conn:
        number, sf_id = conn.execute(sa.select(t.external_orders.c.order_number, t.external_orders.c.sf_order_id)).first()
    execute(loaded, t.external_orders.update().where(t.external_orders.c.sf_order_id == sf_id).values(
        newer_version_quarantined_at=NOW, lifecycle_state="COMPLETE", lifecycle_error=None))
    execute(loaded, t.quarantined_orders.insert().values(
        run_id="run-2", sf_order_id=sf_id, order_number=number, failed_checks=["total_amount_valid"],
        details={"total_amount_valid": "TotalAmount -5 is negative"}, quarantined_at=NOW))
    text = story(external_orders_pages, loaded, number)
    assert where(text) == "loaded, newest version refused"
    assert "TotalAmount -5 is negative" in text and "still quarantined" in text

    orders_tab = external_orders_pages(loaded.engine, loaded.schema).get("/").text
    row = orders_tab.split(f'data-order-number="{number}"', 1)[1].split("</tr>", 1)[0]
    assert "newest version refused" in row and 'class="dot ok"' not in row


def test_a_quarantined_only_order_and_a_never_seen_one_are_told_apart(allowed, external_orders_pages, loaded):
    execute(loaded, tables(loaded.schema).quarantined_orders.insert().values(
        run_id="run-1", sf_order_id="801000000000999AAA", order_number="00000999", failed_checks=["account_present"],
        details={"account_present": "AccountId is empty"}, quarantined_at=NOW))
    text = story(external_orders_pages, loaded, "00000999")
    assert where(text) == "quarantined only" and "AccountId is empty" in text
    never = story(external_orders_pages, loaded, "00123456")
    assert where(never) == "never seen" and "Only Activated orders are imported" in never


def test_a_card_x_out_that_failed_says_the_card_data_is_still_in_salesforce(allowed, external_orders_pages, loaded):
    t = tables(loaded.schema)
    with loaded.engine.connect() as conn:
        number, sf_id = conn.execute(sa.select(t.external_orders.c.order_number, t.external_orders.c.sf_order_id)).first()
    assert "card data is still in" not in story(external_orders_pages, loaded, number)
    execute(loaded, t.writeback_outbox.update().where(t.writeback_outbox.c.sf_order_id == sf_id).values(
        action="mark_imported+x_out_card", state="DEAD", attempts=5, last_error_code="FIELD_CUSTOM_VALIDATION_EXCEPTION",
        last_error_message="PO Number is required"))
    text = story(external_orders_pages, loaded, number)
    assert 'id="card-data-left"' in text and "the card data is still in\nSalesforce (DEAD: FIELD_CUSTOM_VALIDATION_EXCEPTION)" in text
    assert "<b>DEAD</b>: given up" in text


def skip(w, run_id: str, sf_order_id: str, number: str, at: datetime) -> None:
    from salesforce_orders.load import record_skipped
    from salesforce_orders.model import SkippedOrder
    from salesforce_orders.transform import ZERO_TOTAL

    with w.engine.begin() as conn:
        record_skipped(conn, run_id, [SkippedOrder(sf_order_id, number, ZERO_TOTAL, account_name="Acme", total_amount=0, currency="USD")],
                       schema=w.schema, now=at)


def test_a_skipped_order_says_why_and_that_the_config_keeps_it_out(allowed, external_orders_pages, loaded):
    skip(loaded, "run-2", "801000000000777AAA", "00000777", NOW)
    for asked in ("00000777", "801000000000777AAA"):
        text = story(external_orders_pages, loaded, asked)
        assert where(text) == "skipped" and "in no table of the warehouse" not in text
        assert "its total is 0.00 USD" in text and "<code>zero_total_policy</code>: <code>\"skip\"</code>" in text
        assert '<code>{"order_numbers": ["00000777"]}</code>' in text  # its OrderNumber, known from the skip
        assert 'id="order-skipped"' in text and "still skipped" in text and "skipped (run run-2): zero total" in text


def test_a_never_seen_salesforce_id_is_re_synced_by_id(allowed, external_orders_pages, loaded):
    by_id = story(external_orders_pages, loaded, "801000000000555AAA")
    assert where(by_id) == "never seen" and '<code>{"order_ids": ["801000000000555AAA"]}</code>' in by_id
    by_number = story(external_orders_pages, loaded, "00000555")
    assert '<code>{"order_numbers": ["00000555"]}</code>' in by_number


@pytest.mark.parametrize(("sf_state", "said"), [("deactivated", "set back to Draft there since 2026-03-02 08:00:00 UTC"),
                                                ("deleted", "deleted there since 2026-03-02 08:00:00 UTC")])
def test_an_order_no_longer_activated_in_salesforce_is_not_said_to_be_its_newest_version(allowed, external_orders_pages, loaded, sf_state, said):
    t = tables(loaded.schema)
    with loaded.engine.connect() as conn:
        number = conn.execute(sa.select(t.external_orders.c.order_number).order_by(t.external_orders.c.order_number)).scalar()
    execute(loaded, t.external_orders.update().where(t.external_orders.c.order_number == number).values(
        sf_state=sf_state, sf_state_changed_at=datetime(2026, 3, 2, 8, 0, tzinfo=UTC)))
    text = story(external_orders_pages, loaded, number)
    assert where(text) == "loaded, no longer Activated" and "holds Salesforce's newest version" not in text
    assert "no longer Activated in Salesforce" in text and said in text
    assert "version imported 2026-03-01 12:00:00 UTC" in text


def test_a_loaded_order_whose_newest_version_was_skipped_says_so(allowed, external_orders_pages, loaded):
    t = tables(loaded.schema)
    with loaded.engine.connect() as conn:
        number, sf_id = conn.execute(sa.select(t.external_orders.c.order_number, t.external_orders.c.sf_order_id)).first()
    skip(loaded, "run-2", sf_id, number, datetime(2026, 3, 2, 8, 0, tzinfo=UTC))  # its total became zero after the load
    text = story(external_orders_pages, loaded, number)
    assert where(text) == "loaded, newest version skipped" and "holds Salesforce's newest version" not in text
    assert "run run-2: zero total" in text and "the warehouse holds the version imported 2026-03-01 12:00:00 UTC" in text


def test_a_salesforce_id_in_its_15_character_form_or_any_case_of_its_suffix_finds_the_order(allowed, external_orders_pages, loaded):
    """Salesforce's UI and reports show 15-character Ids, the API (and so the warehouse) 18-character
    ones: either form finds the order, as the re-sync's ``order_ids`` takes either (README); a 15-character
    Id of a loaded order was "never seen", with a conf re-importing it."""
    from salesforce_orders.api_names import case_safe_id

    t = tables(loaded.schema)
    with loaded.engine.connect() as conn:
        sf_id = conn.execute(sa.select(t.external_orders.c.sf_order_id).order_by(t.external_orders.c.order_number)).scalar()
    assert where(story(external_orders_pages, loaded, sf_id[:15])) == "loaded"
    assert where(story(external_orders_pages, loaded, sf_id[:15] + sf_id[15:].lower())) == "loaded"
    refused = case_safe_id("8015g00000AbCdE")  # upper-case letters in its body: a suffix of its own
    execute(loaded, t.quarantined_orders.insert().values(
        run_id="run-1", sf_order_id=refused, order_number="00000998", failed_checks=["account_present"],
        details={"account_present": "AccountId is empty"}, quarantined_at=NOW))
    assert where(story(external_orders_pages, loaded, "8015g00000AbCdE")) == "quarantined only"
    # a 15-character Id whose letters' case was changed is another record: not this one
    assert where(story(external_orders_pages, loaded, "8015G00000ABCDE")) == "never seen"


@pytest.mark.parametrize("outcome", ["refused", "skipped"])
def test_an_order_set_back_to_draft_then_activated_again_and_left_out_is_told_as_such(allowed, external_orders_pages, loaded, outcome):
    """Leaving Activated releases an order's refusals and skips; one still open and newer than the change
    is Salesforce's order Activated again, refused or skipped: its row still says ``deactivated`` until a
    version loads, but the story and the Orders tab must not say it is no longer Activated."""
    t = tables(loaded.schema)
    with loaded.engine.connect() as conn:
        number, sf_id = conn.execute(sa.select(t.external_orders.c.order_number, t.external_orders.c.sf_order_id)
                                     .order_by(t.external_orders.c.order_number)).first()
    left, again = datetime(2026, 3, 2, 8, 0, tzinfo=UTC), datetime(2026, 3, 3, 9, 0, tzinfo=UTC)
    execute(loaded, t.external_orders.update().where(t.external_orders.c.sf_order_id == sf_id).values(
        sf_state="deactivated", sf_state_changed_at=left, newer_version_quarantined_at=again if outcome == "refused" else None))
    if outcome == "refused":
        execute(loaded, t.quarantined_orders.insert().values(
            run_id="run-3", sf_order_id=sf_id, order_number=number, failed_checks=["country_resolvable"],
            details={"country_resolvable": "ShippingCountry 'Atlantis' is no country"}, quarantined_at=again))
    else:
        skip(loaded, "run-3", sf_id, number, again)
    text = story(external_orders_pages, loaded, number)
    assert where(text) == f"loaded, newest version {outcome}" and "no longer Activated in Salesforce" not in text
    assert "is Activated again there" in text
    if outcome == "refused":
        assert "refused by\n  validation (2026-03-03 09:00:00 UTC)" in text
    orders_tab = external_orders_pages(loaded.engine, loaded.schema).get("/").text
    row = orders_tab.split(f'data-order-number="{number}"', 1)[1].split("</tr>", 1)[0]
    assert f"newest version {outcome}" in row and "back to Draft in Salesforce" not in row

    execute(loaded, t.external_orders.update().where(t.external_orders.c.sf_order_id == sf_id).values(
        sf_state_changed_at=datetime(2026, 3, 4, 8, 0, tzinfo=UTC)))  # set back to Draft after that: it left
    assert where(story(external_orders_pages, loaded, number)) == "loaded, no longer Activated"
    row = external_orders_pages(loaded.engine, loaded.schema).get("/").text.split(f'data-order-number="{number}"', 1)[1].split("</tr>", 1)[0]
    assert "back to Draft in Salesforce" in row


@pytest.mark.parametrize("typed", ["4111111111111111", "4111 1111 1111 1111", "Visa 4111-1111-1111-1111 CVV 737"])
def test_a_card_number_typed_into_a_search_box_is_never_echoed_by_the_page(allowed, external_orders_pages, loaded, typed):
    """Someone pastes the customer's card number into "where is order…" or a list's search box (to
    find the order it paid for): the page answers with it masked, as the import masks what it
    stores, never with the number (the search box, the notice, the re-sync suggestion, the pager)."""
    pages = external_orders_pages(loaded.engine, loaded.schema)
    for path in ("/order", "/", "/quarantine"):
        page = pages.get(path, params={"q": typed})
        assert page.status_code == 200
        assert "4111" not in page.text and "737" not in page.text, path
        assert "[card ending 1111]" in page.text, path
    assert where(story(external_orders_pages, loaded, typed)) == "never seen"
