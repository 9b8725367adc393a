"""The External Orders page in headless Chromium, against a running Airflow api-server and the sandbox.

What the page shows is checked against the warehouse the import filled; what its buttons do is
checked through Airflow's REST API (the DAG runs they created) and the warehouse (the outbox).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

pytestmark = pytest.mark.e2e

PAGE = "/external-orders/"
REJECTION_CODE = "FIELD_CUSTOM_VALIDATION_EXCEPTION"  # what the sandbox answers for the failing orders


def shot(page, stack, name: str) -> None:
    path = stack.screenshot_dir / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.stat().st_size > 10_000, f"{name}.png looks empty"


def listed_order_numbers(page) -> list[str]:
    return page.locator("#orders tbody tr").evaluate_all("rows => rows.map(r => r.dataset.orderNumber)")


@pytest.fixture
def oncall(stack, browser):
    context = stack.browser_context(browser, "oncall")
    yield context.new_page()
    context.close()


@pytest.fixture
def analyst(stack, browser):
    context = stack.browser_context(browser, "analyst")
    yield context.new_page()
    context.close()


def test_the_airflow_navigation_opens_the_page_with_the_sandbox_orders(stack, oncall):
    loaded = stack.query("SELECT order_number FROM external_orders ORDER BY last_imported_at DESC, sf_order_id DESC")
    assert len(loaded) > 50, "the sandbox org should fill more than one page"

    oncall.goto(f"{stack.base_url}/")
    oncall.get_by_role("button", name="Browse").click()
    oncall.get_by_role("menuitem", name="External Orders").click()
    oncall.wait_for_url("**/plugin/external-orders**")  # Airflow then mirrors the frame's address after it
    frame = oncall.frame_locator("iframe")
    frame.locator("#orders tbody tr").first.wait_for()
    shot(oncall, stack, "external-orders-in-airflow")

    page = oncall
    page.goto(stack.base_url + PAGE)
    assert listed_order_numbers(page) == [row["order_number"] for row in loaded[:50]]
    assert f"1–50 of {len(loaded)}" in page.locator("#pager").inner_text()
    page.get_by_role("link", name="Next ›").click()
    assert listed_order_numbers(page) == [row["order_number"] for row in loaded[50:100]]


def test_failed_only_filter_shows_the_rejected_orders_with_salesforces_error(stack, oncall):
    failed = {r["order_number"] for r in stack.query("SELECT order_number FROM external_orders WHERE lifecycle_state = 'FAILED'")}
    assert failed and failed <= stack.failing_order_numbers

    oncall.goto(stack.base_url + PAGE)
    oncall.locator("#filter-failed").check()
    oncall.locator("#apply-filters").click()
    oncall.wait_for_url("**failed=1**")
    assert set(listed_order_numbers(oncall)) == failed
    rows = oncall.locator("#orders tbody tr")
    for i in range(rows.count()):
        assert rows.nth(i).locator(".dot.failed").count() == 1
        assert "FIELD_CUSTOM_VALIDATION_EXCEPTION: PO Number is required" in rows.nth(i).inner_text()
    shot(oncall, stack, "external-orders-failed")


def test_search_finds_an_order_by_number_and_by_account_name(stack, oncall):
    order = stack.query("SELECT order_number, account_name FROM external_orders ORDER BY order_number LIMIT 1")[0]
    oncall.goto(stack.base_url + PAGE)
    oncall.locator("#filter-q").fill(order["order_number"])
    oncall.locator("#filter-q").press("Enter")
    oncall.wait_for_url("**q=**")
    assert listed_order_numbers(oncall) == [order["order_number"]]

    word = order["account_name"].split()[0].lower()
    expected = stack.query(
        "SELECT order_number FROM external_orders WHERE lower(account_name) LIKE :p ORDER BY last_imported_at DESC, sf_order_id DESC",
        p=f"%{word}%",
    )
    oncall.locator("#filter-q").fill(word)
    oncall.locator("#filter-q").press("Enter")
    oncall.wait_for_url(f"**q={word}**")
    assert listed_order_numbers(oncall) == [r["order_number"] for r in expected][:50]


def test_resync_click_in_the_airflow_ui_creates_a_dag_run_for_the_selected_orders(stack, oncall):
    before = set(stack.dag_runs())
    oncall.goto(f"{stack.base_url}/plugin/external-orders")  # the page as Airflow's UI embeds it
    frame = oncall.frame_locator("iframe")
    rows = frame.locator("#orders tbody tr")
    rows.first.wait_for()
    numbers = rows.evaluate_all("rows => rows.map(r => r.dataset.orderNumber)")[:2]
    for number in numbers:
        frame.locator(f"input.pick[value='{number}']").check()
    frame.get_by_role("button", name="Re-sync selected (2)").click()
    frame.locator("#status.done").wait_for()
    shot(oncall, stack, "external-orders-resync")
    run_id = frame.locator("#new-run").inner_text()

    runs = stack.dag_runs()
    assert set(runs) - before == {run_id}
    assert runs[run_id]["conf"] == {"order_numbers": numbers}
    assert runs[run_id]["run_type"] == "manual"
    assert runs[run_id]["triggering_user_name"] == "oncall"


def test_quarantine_lists_refused_orders_with_their_checks(stack, oncall):
    expected = stack.query("SELECT DISTINCT order_number FROM quarantined_orders WHERE released_at IS NULL")
    assert expected, "the sandbox org has orders that fail validation"
    oncall.goto(stack.base_url + "/external-orders/quarantine")
    listed = oncall.locator("#quarantine tbody tr").evaluate_all("rows => rows.map(r => r.dataset.orderNumber)")
    assert sorted(listed) == sorted(r["order_number"] for r in expected)
    assert oncall.locator("#quarantine ul.checks li").count() >= len(expected)
    shot(oncall, stack, "external-orders-quarantine")


def test_import_runs_link_to_the_airflow_run(stack, oncall):
    runs = stack.query("SELECT run_id, extracted, inserted FROM import_runs")
    oncall.goto(stack.base_url + "/external-orders/runs")
    row = oncall.locator(f"#runs tr[data-run-id='{runs[0]['run_id']}']")
    assert str(runs[0]["extracted"]) in row.inner_text()
    href = row.get_by_role("link", name=runs[0]["run_id"]).get_attribute("href")
    assert href.startswith("/dags/salesforce_orders_import/runs/")
    shot(oncall, stack, "external-orders-runs")


def test_retry_failed_writebacks_makes_them_due_and_triggers_a_run(stack, oncall):
    before = set(stack.dag_runs())
    clicked_at = datetime.now(UTC).replace(tzinfo=None)
    oncall.goto(stack.base_url + PAGE)
    oncall.get_by_role("button", name="Retry failed write-backs now").click()
    oncall.locator("#status.done").wait_for()

    new_runs = set(stack.dag_runs()) - before
    assert len(new_runs) == 1 and oncall.locator("#new-run").inner_text() in new_runs
    rows = stack.query("SELECT state, next_attempt_at FROM writeback_outbox WHERE last_error_code = :c", c=REJECTION_CODE)
    assert rows and all(r["state"] == "FAILED" for r in rows)
    assert all(datetime.fromisoformat(str(r["next_attempt_at"])) >= clicked_at.replace(microsecond=0) for r in rows)


def test_a_viewer_reads_the_page_but_cannot_trigger(stack, analyst):
    before = set(stack.dag_runs())
    analyst.goto(stack.base_url + PAGE)
    assert analyst.locator("#orders tbody tr").count() == 50
    assert analyst.locator("#resync").is_disabled()
    assert analyst.locator("#retry-writebacks").is_disabled()
    assert "read only" in analyst.locator("header").inner_text()

    # Even bypassing the disabled buttons, Airflow refuses: its REST API and the retry endpoint answer 403.
    statuses = analyst.evaluate(
        """async ([triggerUrl, retryUrl]) => {
            const post = (url, body) => fetch(url, {method: "POST", credentials: "same-origin",
                headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)}).then(r => r.status);
            return [await post(triggerUrl, {logical_date: null, conf: {order_numbers: ["00000001"]}}), await post(retryUrl, {})];
        }""",
        [f"{stack.base_url}/api/v2/dags/salesforce_orders_import/dagRuns", f"{stack.base_url}/external-orders/api/writebacks/retry"],
    )
    assert statuses == [403, 403]
    assert set(stack.dag_runs()) == before


@pytest.mark.parametrize("path", [PAGE, "/external-orders/quarantine", "/external-orders/runs"])
def test_an_anonymous_request_gets_nothing(stack, path):
    order_number = stack.query("SELECT order_number FROM external_orders LIMIT 1")[0]["order_number"]
    page = requests.get(stack.base_url + path, allow_redirects=False, timeout=30)
    assert page.status_code == 303 and page.headers["location"].startswith("/auth/login")
    assert order_number not in page.text

    forged = requests.get(stack.base_url + path, cookies={"_token": "not-a-token"}, allow_redirects=False, timeout=30)
    assert forged.status_code in (401, 403, 303) and order_number not in forged.text


def test_an_anonymous_action_is_refused(stack):
    before = set(stack.dag_runs())
    assert requests.post(f"{stack.base_url}/external-orders/api/writebacks/retry", timeout=30).status_code == 401
    trigger = requests.post(
        f"{stack.base_url}/api/v2/dags/salesforce_orders_import/dagRuns", json={"logical_date": None}, timeout=30
    )
    assert trigger.status_code == 401
    assert set(stack.dag_runs()) == before

