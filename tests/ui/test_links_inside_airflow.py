"""Every link and button of the External Orders view, clicked where on-call clicks them: inside Airflow's UI.

Airflow renders the view in an iframe sandboxed to scripts, same origin and forms (no popups, no
top-level navigation). Each test signs in through Airflow's login page, opens the view from
Airflow's Browse menu, clicks in the frame as Airflow renders it, and asserts where the browser
lands: Airflow's page for a run, a task log or the DAG; the view's own tabs, pages and filters
inside the frame; Salesforce in a new tab.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from test_external_orders_page import shot

pytestmark = pytest.mark.e2e

DAG_ID = "salesforce_orders_import"
VIEW_IN_AIRFLOW = "/plugin/external-orders"  # where Airflow's menu entry leads


@pytest.fixture
def airflow(stack, browser):
    """Airflow's UI in a fresh browser, signed in as ``oncall`` through Airflow's login page."""
    context = browser.new_context(viewport={"width": 1440, "height": 900}, ignore_https_errors=True)  # the sandbox org signs its own
    page = context.new_page()
    page.goto(stack.base_url + "/")
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill("oncall")
    page.get_by_label("Password").fill(stack.passwords["oncall"])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/" not in url)
    yield page
    context.close()


def open_view(page):
    """Open the view from Airflow's menu; the frame as Airflow renders it, once its content is there."""
    page.get_by_role("button", name="Browse").click()
    page.get_by_role("menuitem", name="External Orders").click()
    page.wait_for_url(f"**{VIEW_IN_AIRFLOW}**")  # Airflow then mirrors the frame's address after it
    frame = page.frame_locator("iframe[title='External Orders']")
    frame.locator("nav.tabs").wait_for()
    return frame


def lands_on(page, stack, path: str) -> None:
    page.wait_for_url(stack.base_url + path)


def newest_import_run(stack) -> dict:
    return stack.query("SELECT run_id, dag_run_id FROM import_runs ORDER BY started_at DESC LIMIT 1")[0]


def test_the_dag_link_opens_the_dags_page_in_airflow(stack, airflow):
    frame = open_view(airflow)
    frame.locator("header").get_by_role("link", name=DAG_ID).click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}")
    airflow.get_by_text(DAG_ID).first.wait_for()
    assert airflow.locator("iframe[title='External Orders']").count() == 0


def test_a_run_id_and_its_summary_log_open_airflows_run_and_task_pages(stack, airflow):
    run = newest_import_run(stack)
    dag_run_id = run["dag_run_id"] or run["run_id"]
    frame = open_view(airflow)
    frame.locator("nav.tabs").get_by_role("link", name="Import runs").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/runs")
    row = frame.locator(f"#runs tr[data-run-id='{run['run_id']}']")
    row.get_by_role("link", name=run["run_id"]).click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}/runs/{quote(dag_run_id, safe='')}")
    airflow.get_by_text(dag_run_id).first.wait_for()

    airflow.go_back()  # back in the view, on the tab it was on
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/runs")
    frame.locator(f"#runs tr[data-run-id='{run['run_id']}']").get_by_role("link", name="summary log").click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}/runs/{quote(dag_run_id, safe='')}/tasks/report")


def test_the_health_line_says_healthy_and_its_last_success_opens_the_run(stack, airflow):
    run = newest_import_run(stack)
    frame = open_view(airflow)
    health = frame.locator("#health")
    assert health.get_attribute("data-state") == "healthy"
    assert "min ago" in health.locator("#last-success").inner_text()
    assert "Next run:" in health.locator("#next-run").inner_text()
    health.get_by_role("link", name=run["run_id"]).click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}/runs/{quote(run['dag_run_id'] or run['run_id'], safe='')}")


def test_the_runs_table_fits_a_1440_pixel_window_inside_airflow(stack, airflow):
    frame = open_view(airflow)
    frame.locator("nav.tabs").get_by_role("link", name="Import runs").click()
    frame.locator("#runs tbody tr").first.wait_for()
    widths = frame.locator("html").evaluate("html => [html.scrollWidth, html.clientWidth]")
    assert widths[0] <= widths[1], f"the runs table needs {widths[0]} px, the frame shows {widths[1]}"
    shot(airflow, stack, "external-orders-runs-in-airflow")


def test_a_quarantined_orders_run_link_opens_airflows_run_page(stack, airflow):
    row = stack.query("SELECT order_number, run_id FROM quarantined_orders WHERE released_at IS NULL ORDER BY order_number LIMIT 1")[0]
    frame = open_view(airflow)
    frame.locator("nav.tabs").get_by_role("link", name="Quarantine").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/quarantine")
    frame.locator(f"#quarantine tr[data-order-number='{row['order_number']}']").get_by_role("link", name=row["run_id"]).click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}/runs/{quote(row['run_id'], safe='')}")


def test_tabs_pages_and_filters_stay_in_the_frame(stack, airflow):
    frame = open_view(airflow)
    first_page = frame.locator("#orders tbody tr").first.get_attribute("data-order-number")
    frame.get_by_role("link", name="Next ›").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/?page=2")
    assert "page 2 of" in frame.locator("#pager").inner_text()
    frame.get_by_role("link", name="‹ Previous").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/?page=1")
    assert frame.locator("#orders tbody tr").first.get_attribute("data-order-number") == first_page

    frame.locator("#filter-failed").check()
    frame.locator("#apply-filters").click()
    airflow.wait_for_url(f"**{VIEW_IN_AIRFLOW}/external-orders/?*failed=1*")
    failed = {r["order_number"] for r in stack.query("SELECT order_number FROM external_orders WHERE lifecycle_state = 'FAILED'")}
    frame.locator("#orders tbody tr").first.wait_for()
    assert set(frame.locator("#orders tbody tr").evaluate_all("rows => rows.map(r => r.dataset.orderNumber)")) == failed
    frame.get_by_role("link", name="clear").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/")

    frame.locator("nav.tabs").get_by_role("link", name="Orders").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/")

    # the counters open their filtered lists
    frame.locator("#counts").get_by_role("link", name="quarantined").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/quarantine")
    frame.locator("#counts").get_by_role("link", name="failed write-backs").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/?failed=1")
    frame.locator("#counts").get_by_role("link", name="COMPLETE").click()
    lands_on(airflow, stack, f"{VIEW_IN_AIRFLOW}/external-orders/?state=COMPLETE")
    assert set(frame.locator("#orders tbody .badge.COMPLETE").all_inner_texts()) == {"COMPLETE"}


def test_a_retry_with_nothing_to_retry_is_said_in_words(stack, airflow):
    """Before the first import the retry endpoint answers 409: the page says why, not the status code."""
    frame = open_view(airflow)
    airflow.route("**/external-orders/api/writebacks/retry", lambda route: route.fulfill(
        status=409, json={"detail": "The warehouse has no orders table yet: no import has run."}))
    frame.get_by_role("button", name="Retry failed write-backs now").click()
    message = frame.locator("#status.error").inner_text()
    assert message == "Nothing to do yet: The warehouse has no orders table yet: no import has run."


def test_where_is_order_x_and_an_orders_story_stay_in_the_frame(stack, airflow):
    number = stack.query("SELECT order_number FROM external_orders ORDER BY order_number LIMIT 1")[0]["order_number"]
    frame = open_view(airflow)
    frame.locator("#where-is-q").fill(number)
    frame.locator("#where-is-q").press("Enter")
    airflow.wait_for_url(f"**{VIEW_IN_AIRFLOW}/external-orders/order?q={number}")
    assert frame.locator("#where").get_attribute("data-where") == "loaded"
    frame.locator("#order-writebacks").wait_for()
    shot(airflow, stack, "external-orders-order-story")

    frame.locator("nav.tabs").get_by_role("link", name="Orders").click()
    first = frame.locator("#orders tbody tr").first
    listed = first.get_attribute("data-order-number")
    first.get_by_role("link", name=f"{listed}: its story").click()
    airflow.wait_for_url(f"**{VIEW_IN_AIRFLOW}/external-orders/order?q={listed}")
    assert frame.locator("#where").get_attribute("data-where") == "loaded"


def test_open_in_salesforce_opens_the_order_in_a_new_tab(stack, airflow):
    frame = open_view(airflow)
    row = frame.locator("#orders tbody tr").first
    number = row.get_attribute("data-order-number")
    url = stack.query("SELECT salesforce_url FROM external_orders WHERE order_number = :n", n=number)[0]["salesforce_url"]
    with airflow.context.expect_page() as opened:
        row.get_by_title("open the order in Salesforce").click()
    tab = opened.value
    tab.wait_for_url(url)
    assert airflow.url == f"{stack.base_url}{VIEW_IN_AIRFLOW}/external-orders/"  # the Airflow tab stays where it was


def test_the_run_a_resync_queued_opens_in_airflow(stack, airflow):
    before = set(stack.dag_runs())
    frame = open_view(airflow)
    number = frame.locator("#orders tbody tr").first.get_attribute("data-order-number")
    frame.locator(f"input.pick[value='{number}']").check()
    frame.get_by_role("button", name="Re-sync selected (1)").dblclick()  # a double click queues one run
    frame.locator("#status.done").wait_for()
    run_id = frame.locator("#new-run").inner_text()
    assert set(stack.dag_runs()) - before == {run_id}
    frame.locator("#new-run").click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")


def test_the_page_follows_the_run_it_queued_and_reloads_with_its_outcome(stack, airflow):
    """No scheduler runs the queued run here: Airflow's answer for it is made "success" once the page asks."""

    def finished(route):
        if route.request.method != "GET":
            return route.continue_()
        response = route.fetch()
        return route.fulfill(response=response, json={**response.json(), "state": "success"})

    frame = open_view(airflow)
    airflow.route(f"**/api/v2/dags/{DAG_ID}/dagRuns/*", finished)
    frame.locator("body").evaluate("body => { window.beforeTheClick = true; }")
    frame.get_by_role("button", name="Retry failed write-backs now").click()
    told = frame.locator("#status.done", has_text="finished: success")
    told.wait_for()
    run_id = told.locator("#new-run").inner_text()
    assert told.inner_text().startswith(f"Retry run {run_id} finished: success.")
    assert frame.locator("body").evaluate("body => window.beforeTheClick === undefined")  # the page was reloaded


def test_the_run_a_writeback_retry_queued_opens_in_airflow(stack, airflow):
    before = set(stack.dag_runs())
    frame = open_view(airflow)
    frame.get_by_role("button", name="Retry failed write-backs now").dblclick()  # one run, not two
    frame.locator("#status.done").wait_for()
    run_id = frame.locator("#new-run").inner_text()
    assert set(stack.dag_runs()) - before == {run_id}
    frame.locator("#new-run").click()
    lands_on(airflow, stack, f"/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
