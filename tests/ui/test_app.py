"""The External Orders app in-process: rendering, escaping, bad input and an unreadable warehouse.

Airflow's own user resolution and access check are stood in for here (the browser test runs the
real ones in an api-server): a signed-in user, who may or may not trigger the DAG (``allowed``,
``external_orders_pages`` in tests/conftest.py).
"""

from __future__ import annotations

import pytest

from salesforce_orders.load import load_run
from salesforce_orders.schema_versions import create_all


@pytest.fixture
def warehouse(sqlite_engine, make_transformed):
    create_all(sqlite_engine)
    orders = [make_transformed(1, account_name="<script>alert(1)</script> & Co"), make_transformed(2, account=2)]
    load_run(sqlite_engine, "run-1", [orders], watermark=None)
    return sqlite_engine


def test_names_from_salesforce_are_escaped(allowed, external_orders_pages, warehouse):
    page = external_orders_pages(warehouse).get("/")
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co" in page.text
    assert page.headers["cache-control"] == "no-store"


def test_a_reader_gets_disabled_actions_and_a_triggerer_enabled_ones(allowed, external_orders_pages, warehouse):
    client = external_orders_pages(warehouse)
    assert 'id="retry-writebacks" disabled' in client.get("/").text
    assert 'data-allowed="false"' in client.get("/").text
    assert client.post("/api/writebacks/retry").status_code == 403

    allowed.add("POST")
    assert 'id="retry-writebacks" disabled' not in client.get("/").text
    assert client.post("/api/writebacks/retry").json() == {"failed": 0, "revived": 0, "total": 0}


def test_bad_filters_are_reported_not_crashed_on(allowed, external_orders_pages, warehouse):
    page = external_orders_pages(warehouse).get("/", params={"imported_from": "yesterday", "state": "DONE", "page": "x"})
    assert page.status_code == 200
    assert "Imported from: &#39;yesterday&#39; is not a date (YYYY-MM-DD)" in page.text
    assert "unknown lifecycle state &#39;DONE&#39;" in page.text


def test_the_links_point_into_airflow_and_the_trigger_goes_to_its_rest_api(allowed, external_orders_pages, warehouse):
    text = external_orders_pages(warehouse).get("/runs").text
    assert 'data-trigger-url="/api/v2/dags/salesforce_orders_import/dagRuns"' in text
    assert 'href="/dags/salesforce_orders_import"' in text


def test_an_unreadable_warehouse_is_explained(allowed, external_orders_pages):
    client = external_orders_pages(problem="The warehouse has no orders table yet: no import has run.")
    for path in ("/", "/quarantine", "/runs"):
        page = client.get(path)
        assert page.status_code == 200 and "no import has run" in page.text
    allowed.add("POST")
    assert client.post("/api/writebacks/retry").status_code == 409


def test_an_order_with_card_data_masked_shows_a_badge_naming_the_fields_and_can_be_filtered(allowed, external_orders_pages, sqlite_engine, make_transformed):
    from dataclasses import replace

    from salesforce_orders.load import record_quarantine

    create_all(sqlite_engine)
    plain, flagged = make_transformed(1), make_transformed(2)
    flagged = replace(flagged, order=replace(flagged.order, card_data_masked=("Description", "OrderItem 802000000000201AAA.Description")))
    load_run(sqlite_engine, "run-1", [[plain, flagged]], watermark=None)
    with sqlite_engine.begin() as conn:
        record_quarantine(conn, "run-1", [
            {"sf_order_id": "801000000000009AAA", "order_number": "00000009", "account_name": "Acme",
             "failed_checks": ["country_resolvable"], "details": {"country_resolvable": "BillingCountry '[card ending 1881]' ..."},
             "card_data_masked": ["BillingCountry"]},
        ])
    client = external_orders_pages(sqlite_engine)

    orders = client.get("/").text
    row_of = {number: orders.split(f'data-order-number="{number}"')[1].split("</tr>")[0] for number in ("00000001", "00000002")}
    assert "card data masked" not in row_of["00000001"]
    assert "card data masked" in row_of["00000002"]
    assert "Description, OrderItem 802000000000201AAA.Description" in row_of["00000002"]
    only_masked = client.get("/", params={"masked": "1"}).text
    assert 'data-order-number="00000002"' in only_masked and 'data-order-number="00000001"' not in only_masked
    quarantine = client.get("/quarantine").text
    assert "card data masked" in quarantine and "BillingCountry" in quarantine


def test_only_http_addresses_from_the_data_become_links(allowed, external_orders_pages, warehouse):
    """A tracking URL or Salesforce link that is not http(s) (``javascript:`` runs in the view's
    origin when clicked) is shown as plain text; the shipments check calls such a tracking URL invalid."""
    import sqlalchemy as sa

    from salesforce_orders.shipments import add_shipment
    from salesforce_orders.warehouse import tables

    t = tables()
    with warehouse.begin() as conn:
        order, number = conn.execute(sa.select(t.external_orders.c.sf_order_id, t.external_orders.c.order_number)
                                     .order_by(t.external_orders.c.order_number)).first()
        item = conn.execute(sa.select(t.external_order_items.c.sf_order_item_id).where(t.external_order_items.c.sf_order_id == order)).scalar()
        for key, url in (("SHIP-JS", "javascript:alert(document.domain)"), ("SHIP-WS", " javascript:alert(1)"),
                         ("SHIP-OK", "HTTPS://track.example.com/1Z1")):
            add_shipment(conn, t, {"shipment_key": key, "sf_order_id": order, "carrier": "UPS", "tracking_number": f"1Z-{key}",
                                   "tracking_url": url, "shipped_date": "2026-03-01"}, [{"sf_order_item_id": item, "quantity": 1}])
        conn.execute(t.external_orders.update().where(t.external_orders.c.sf_order_id == order)
                     .values(salesforce_url="javascript:alert(2)"))
    client = external_orders_pages(warehouse)

    orders = client.get("/").text
    assert "javascript:" not in orders
    shipments = orders[orders.index('<table id="shipments">'):]
    assert "<td>1Z-SHIP-JS</td>" in shipments and "<td>1Z-SHIP-WS</td>" in shipments  # the number, as text
    assert '<a href="HTTPS://track.example.com/1Z1" target="_blank" rel="noopener">1Z-SHIP-OK</a>' in shipments
    row = orders.split(f'data-order-number="{number}"', 1)[1].split("</tr>", 1)[0]
    assert f"<td>SF-{number} &lt;script&gt;" in row and row.count("<a ") == 1  # its name, unlinked; its story's link
    assert 'href="https://example.my.salesforce.com/' in orders  # the other order keeps its link
    story = client.get("/order", params={"q": number}).text
    assert "javascript:" not in story and f"SF-{number} &lt;script&gt;" in story
