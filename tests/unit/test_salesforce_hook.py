"""The project's Salesforce hook against the local sandbox, reached through an Airflow connection
exactly as a deployment defines it (``AIRFLOW_CONN_<ID>`` in JSON form): logins, paging with
child subqueries, collections, retries, error translation, API accounting and secret masking."""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from airflow.sdk.log import redact

from salesforce_orders.salesforce import (
    BULK_TIMEOUT_SECONDS,
    COLLECTION_LIMIT,
    ApiBudgetExceeded,
    ApiLimitExceeded,
    BulkSettings,
    Query,
    SalesforceApiError,
    SalesforceOrdersHook,
)
from salesforce_orders.soql import literal
from salesforce_sandbox.auth import ORG_ID, Credentials
from salesforce_sandbox.server import SandboxServer

CONN_ID = "salesforce_hook_test"
ORG_ORDERS = 460
MANY_ITEMS = 250


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    # A session id of this module's own, so no other test can have registered it for masking.
    credentials = Credentials(session_id=f"{ORG_ID[:15]}!AQ{uuid.uuid4().hex}")
    server = SandboxServer(
        port=0, orders=ORG_ORDERS, credentials=credentials, state_dir=tmp_path_factory.mktemp("hook-sandbox")
    )
    with server:
        yield server


@pytest.fixture(autouse=True)
def _no_faults_after(sandbox: SandboxServer) -> Iterator[None]:
    yield
    sandbox.admin.clear_faults()


@pytest.fixture
def connect(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., SalesforceOrdersHook]:
    """A hook on a connection to the sandbox: password login by default, or the given connection."""

    def make(connection: dict[str, Any] | None = None, **hook_options: Any) -> SalesforceOrdersHook:
        monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection or sandbox.airflow_connection()))
        return SalesforceOrdersHook(CONN_ID, **hook_options)

    return make


@pytest.fixture
def hook(connect: Callable[..., SalesforceOrdersHook]) -> SalesforceOrdersHook:
    """A logged-in hook whose fast backoff keeps the retry tests quick."""
    h = connect(backoff_factor=0.01)
    h.conn  # noqa: B018 - log in now, so the tests count only their own calls
    return h


def sandbox_calls(sandbox: SandboxServer) -> dict[str, int]:
    return sandbox.admin.stats()["calls"]


def direct_connection(sandbox: SandboxServer) -> dict[str, Any]:
    # Without login and password the provider takes the direct path: session id + instance URL.
    return {
        "conn_type": "salesforce",
        "extra": {
            "session_id": sandbox.credentials["session_id"],
            "instance_url": sandbox.url,
            "ca_bundle": str(sandbox.ca_path),
        },
    }


# ---------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("domain", [None, "test"], ids=["login", "test domain"])
def test_password_login_goes_to_login_url(sandbox: SandboxServer, connect, domain: str | None):
    connection = sandbox.airflow_connection()
    if domain:
        connection["extra"]["domain"] = domain
    before = sandbox_calls(sandbox)
    hook = connect(connection)

    assert hook.conn.auth_type == "password"
    assert hook.instance_url == sandbox.url
    assert sandbox_calls(sandbox)["auth"] == before["auth"] + 1
    assert hook.conn.session_id != sandbox.credentials["session_id"]  # a token issued by this login
    assert hook.count("SELECT COUNT() FROM Account") == sandbox.store.count("Account")


def test_the_token_from_a_login_is_masked_in_logs(connect):
    hook = connect()
    token = hook.conn.session_id

    assert token and token not in redact(f"Authorization: Bearer {token}")


def test_direct_session_id_extra(sandbox: SandboxServer, connect):
    session_id = sandbox.credentials["session_id"]
    line = f"Authorization: Bearer {session_id}"
    assert session_id in redact(line)  # not a known secret before the hook sees it
    before = sandbox_calls(sandbox)

    hook = connect(direct_connection(sandbox))

    assert hook.conn.auth_type == "direct"
    assert hook.count("SELECT COUNT() FROM Order") == ORG_ORDERS
    assert sandbox_calls(sandbox)["auth"] == before["auth"]  # no login call
    assert session_id not in redact(line)


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def test_iter_query_pages_yields_every_page(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    calls_before = hook.usage.calls

    pages = list(hook.iter_query_pages("SELECT Id FROM Order ORDER BY Id", page_size=200))

    total = sandbox.store.count("Order")
    assert [len(page) for page in pages] == [200, 200, total - 400]
    ids = [record["Id"] for page in pages for record in page]
    assert len(set(ids)) == total and ids == sorted(ids)
    assert hook.usage.calls - calls_before == 3  # one query, two queryMore


def test_rest_numbers_with_a_fraction_arrive_as_exact_decimals(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    with sandbox.store.lock:
        item_id = sandbox.store.conn.execute("SELECT Id FROM OrderItem WHERE IsDeleted = 0 ORDER BY Id LIMIT 1").fetchone()[0]
    [page] = list(hook.iter_query_pages(f"SELECT Id, Quantity, UnitPrice, TotalPrice FROM OrderItem WHERE Id = '{item_id}'"))
    [item] = page
    # a float would do for these values; the type shows that none went through one
    assert all(type(item[name]) is Decimal for name in ("Quantity", "UnitPrice", "TotalPrice"))
    assert item["TotalPrice"] == item["Quantity"] * item["UnitPrice"]


def test_bulk_result_pages_are_streamed_in_chunks(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    """A Bulk result page bigger than a chunk comes in chunks, with REST-typed values, and counts as
    one page; a value with a line break inside its quotes stays one value."""
    with sandbox.store.lock:
        order_id = sandbox.store.conn.execute('SELECT Id FROM "Order" WHERE IsDeleted = 0 ORDER BY Id LIMIT 1').fetchone()[0]
    sandbox.store.update("Order", order_id, {"Description": 'first line\nsecond, "quoted" line'})
    pages_before, calls_before = hook.usage.result_pages, hook.usage.calls

    chunks = list(
        hook.iter_bulk_query_pages(
            "SELECT Id, Description, TotalAmount FROM Order", chunk_records=100, sleep=lambda seconds: None
        )
    )

    total = sandbox.store.count("Order")
    assert [len(chunk) for chunk in chunks] == [100] * (total // 100) + ([total % 100] if total % 100 else [])
    records = {record["Id"]: record for chunk in chunks for record in chunk}
    assert len(records) == total
    assert records[order_id]["Description"] == 'first line\nsecond, "quoted" line'
    assert all(isinstance(r["TotalAmount"], Decimal) for r in records.values() if r["TotalAmount"] is not None)
    assert hook.usage.result_pages - pages_before == 1
    assert hook.usage.calls - calls_before >= 3  # job, at least one poll, one result page (+ describe)


# ---------------------------------------------------------------------------------------
# Bulk API 2.0: result pages downloaded at once, status polls backing off
# ---------------------------------------------------------------------------------------

ITEMS_SOQL = "SELECT Id, OrderId, Quantity FROM OrderItem ORDER BY Id"
PAGE = 100  # records per result page in these tests: the sandbox's items make more than two resultPages answers
WORKERS = 3


def no_sleep(seconds: float) -> None:
    pass


class CallLog:
    """Every answer the hook's session receives: method, path after the API version, status."""

    def __init__(self, hook: SalesforceOrdersHook):
        self.calls: list[tuple[str, str, int]] = []
        hook.conn.session.hooks["response"].append(self._record)

    def _record(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        path = urlsplit(response.url).path
        if "/services/data/" in path:
            self.calls.append((response.request.method, re.sub(r"^/services/data/v[0-9.]+/", "", path), response.status_code))

    def count(self, pattern: str) -> int:
        return sum(1 for _, path, _ in self.calls if re.fullmatch(pattern, path))


RESULT_PAGES = r"jobs/query/\w+/resultPages/?"
RESULTS = r"jobs/query/\w+/results/?"


def read_all(pages: Iterator[list[dict]]) -> list[dict]:
    return [record for chunk in pages for record in chunk]


@pytest.fixture
def items_by_locator(connect: Callable[..., SalesforceOrdersHook]) -> list[dict]:
    """The items query read one result page after another, by locator: what the other ways must yield."""
    return read_all(connect(bulk_result_workers=1).iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep))


def test_bulk_result_pages_are_downloaded_at_once_and_yielded_in_order(
    connect: Callable[..., SalesforceOrdersHook], items_by_locator: list[dict]
):
    expected = items_by_locator
    pages = math.ceil(len(expected) / PAGE)
    assert pages > 10  # more than two resultPages answers of five
    hook = connect(bulk_result_workers=WORKERS)
    log = CallLog(hook)
    # The first WORKERS downloads meet here: they only can when they are under way at the same time.
    meeting, arrivals, send = threading.Barrier(WORKERS, timeout=60), itertools.count(), hook._send

    def send_together(method: str, url: str, **kwargs: Any) -> requests.Response:
        if "/results" in url and next(arrivals) < WORKERS:
            meeting.wait()
        return send(method, url, **kwargs)

    hook._send = send_together  # type: ignore[method-assign]
    calls_before, pages_before = hook.usage.calls, hook.usage.result_pages

    records = read_all(hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep))

    assert records == expected  # every record once, in the job's order, typed alike
    assert log.count(RESULTS) == pages == hook.usage.result_pages - pages_before
    assert log.count(RESULT_PAGES) == math.ceil(pages / 5)
    assert all(status == 200 for _, _, status in log.calls)
    assert hook.usage.calls - calls_before == len(log.calls)  # counted from every thread, none lost
    assert hook._calls_in_flight == 0


def test_bulk_downloads_run_at_most_a_few_pages_ahead(connect: Callable[..., SalesforceOrdersHook]):
    """Pages are queued for download only as earlier ones are read: memory holds a bounded number of
    pages, however many the job has; leaving early cancels what is queued and frees its calls."""
    hook = connect(bulk_result_workers=WORKERS)
    log = CallLog(hook)
    queued, reserve = [], hook._reserve_call

    def reserve_and_note() -> None:
        reserve()
        queued.append(1)

    hook._reserve_call = reserve_and_note  # type: ignore[method-assign]
    pages = hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, chunk_records=PAGE, sleep=no_sleep)

    first = next(pages)
    assert len(first) == PAGE
    assert len(queued) == WORKERS + 1  # the page being read, and WORKERS downloading or waiting
    second = next(pages)
    assert second[0]["Id"] > first[-1]["Id"]
    assert len(queued) == WORKERS + 2
    pages.close()

    assert hook._calls_in_flight == 0
    assert log.count(RESULTS) <= WORKERS + 2
    assert log.count(RESULT_PAGES) == 1


def test_one_result_page_is_read_without_result_pages(sandbox: SandboxServer, connect: Callable[..., SalesforceOrdersHook]):
    hook = connect()
    log = CallLog(hook)

    records = read_all(hook.iter_bulk_query_pages("SELECT Id FROM Order", sleep=no_sleep))

    assert len(records) == sandbox.store.count("Order")
    assert (log.count(RESULT_PAGES), log.count(RESULTS)) == (0, 1)  # resultPages would be a call more


def test_an_org_without_result_pages_is_read_page_by_page(
    sandbox: SandboxServer, connect: Callable[..., SalesforceOrdersHook], items_by_locator: list[dict]
):
    """API versions before 58.0 have no resultPages: its 404 sends the hook down the locator chain,
    and the hook does not ask again for the next job."""
    connection = sandbox.airflow_connection()
    connection["extra"]["version"] = "57.0"
    hook = connect(connection, bulk_result_workers=WORKERS)
    log = CallLog(hook)

    records = read_all(hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep))
    again = read_all(hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep))

    assert records == again == items_by_locator
    assert [status for _, path, status in log.calls if re.fullmatch(RESULT_PAGES, path)] == [404]
    assert log.count(RESULTS) == 2 * math.ceil(len(items_by_locator) / PAGE)
    assert hook.conn.sf_version == "57.0"


def test_result_page_downloads_stay_within_the_budget(connect: Callable[..., SalesforceOrdersHook], items_by_locator: list[dict]):
    """The budget counts downloads under way: with two calls left when the pages are listed, two pages
    are downloaded and read, and the run stops at the third."""
    hook = connect(bulk_result_workers=WORKERS)
    hook.describe("OrderItem")  # read before: the pages' column types cost no call of the two
    log = CallLog(hook)

    def two_calls_left(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if re.search(RESULT_PAGES, urlsplit(response.url).path):
            hook.limit_calls(2)

    hook.conn.session.hooks["response"].append(two_calls_left)
    read: list[dict] = []
    with pytest.raises(ApiBudgetExceeded):
        for chunk in hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep):
            read.extend(chunk)

    assert read == items_by_locator[: 2 * PAGE]
    assert log.count(RESULTS) == 2
    assert hook.usage.calls == hook.usage.budget and hook._calls_in_flight == 0


def test_a_refused_download_is_raised_at_its_turn_translated(
    sandbox: SandboxServer, connect: Callable[..., SalesforceOrdersHook], items_by_locator: list[dict]
):
    """The org's limit reached while pages download: what was read before is whole pages in order,
    and the error is Salesforce's, translated as for any call."""
    hook = connect(bulk_result_workers=WORKERS)

    listings = itertools.count()

    def limit_after_listing(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if re.search(RESULT_PAGES, urlsplit(response.url).path) and next(listings) == 0:
            sandbox.admin.set_faults(rate_limit_after=1)  # one download is served, the others refused

    hook.conn.session.hooks["response"].append(limit_after_listing)
    read: list[dict] = []
    with pytest.raises(ApiLimitExceeded) as raised:
        for chunk in hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep):
            read.extend(chunk)

    assert (raised.value.code, raised.value.status) == ("REQUEST_LIMIT_EXCEEDED", 403)
    assert len(read) in (0, PAGE) and read == items_by_locator[: len(read)]


def test_a_503_burst_during_downloads_is_retried(
    sandbox: SandboxServer, connect: Callable[..., SalesforceOrdersHook], items_by_locator: list[dict]
):
    hook = connect(bulk_result_workers=WORKERS, backoff_factor=0.01)
    injected_before = sandbox.admin.stats()["faults_injected"]["error_503"]

    listings = itertools.count()

    def burst_after_listing(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        if re.search(RESULT_PAGES, urlsplit(response.url).path) and next(listings) == 0:
            sandbox.admin.set_faults(error_503_burst=2)  # the first downloads answer 503

    hook.conn.session.hooks["response"].append(burst_after_listing)

    assert read_all(hook.iter_bulk_query_pages(ITEMS_SOQL, max_records=PAGE, sleep=no_sleep)) == items_by_locator
    assert sandbox.admin.stats()["faults_injected"]["error_503"] - injected_before == 2


class ScriptedJobs:
    """Bulk jobs that stay InProgress until a fake clock passes ``done_at`` (time moves only when the
    hook sleeps), then end in ``final``; the rest of a Bulk call answers as an empty job would."""

    def __init__(self, hook: SalesforceOrdersHook, monkeypatch: pytest.MonkeyPatch, done_at: float, final: str = "JobComplete"):
        self.now, self.done_at, self.final = 0.0, done_at, final
        self.sleeps: list[float] = []
        self.status_calls = 0
        monkeypatch.setattr(hook, "call", self.call)
        monkeypatch.setattr(hook, "_call_url", self.call_url)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        if method == "POST":
            return {"id": "750000000000001AAA", "state": "Open"}
        if method == "GET" and re.fullmatch(r"jobs/(query|ingest)/\w+", path):
            self.status_calls += 1
            if self.now < self.done_at:
                return {"state": "InProgress"}
            return {"state": self.final, "errorMessage": "scripted", "numberRecordsProcessed": 0}
        return {}

    def call_url(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        response = requests.Response()
        response.status_code, response._content = 200, b"sf__Id,sf__Created,Id\n"
        return response


def expected_polls(settings: BulkSettings, done_at: float) -> list[float]:
    waits, waited = [], 0.0
    for interval in settings.poll_intervals():
        waits.append(interval)
        waited += interval
        if waited >= done_at:
            return waits
    raise AssertionError("unreachable")


@pytest.mark.parametrize("done_at", [0.2, 10, 60, 600])
def test_bulk_status_polls_back_off_to_a_cap(connect: Callable[..., SalesforceOrdersHook], monkeypatch: pytest.MonkeyPatch, done_at: float):
    """Waits of 0.5 s, then 1.5 times longer each, up to 10 s: a job of a minute costs 12 status calls
    (120 at a fixed half second), one of ten minutes 66 (1,200)."""
    hook = connect()
    org = ScriptedJobs(hook, monkeypatch, done_at)

    hook.bulk_update("Order", [{"id": "801000000000001AAA", "Description": "x"}], sleep=org.sleep, clock=org.clock)

    assert org.sleeps == expected_polls(hook.bulk_settings, done_at)
    assert org.sleeps[:4] == [0.5, 0.75, 1.125, 1.6875][: len(org.sleeps)] and max(org.sleeps) <= 10
    assert org.status_calls == len(org.sleeps) == {0.2: 1, 10: 6, 60: 12, 600: 66}[done_at]


def test_a_bulk_job_read_later_is_not_waited_for_again(connect: Callable[..., SalesforceOrdersHook], monkeypatch: pytest.MonkeyPatch):
    """The waits count from when the job was started: a job read after other work (the items' job
    while the orders are staged) is asked about at once, and a poll passed is made once."""
    hook = connect()
    org = ScriptedJobs(hook, monkeypatch, done_at=3, final="Failed")  # (ends the read once waited for)
    job_id = hook.start_bulk_query("SELECT Id FROM Order", clock=org.clock)
    org.now = 2.0  # staging something else meanwhile: the polls at 0.5 and 1.25 s went by

    with pytest.raises(SalesforceApiError):
        list(hook.iter_bulk_query_pages("SELECT Id FROM Order", job_id=job_id, sleep=org.sleep, clock=org.clock))

    assert org.sleeps == [0.375, 1.6875] and org.status_calls == 3  # at 2 s (once), 2.375 s, 4.0625 s


@pytest.mark.parametrize(("done_at", "status_calls"), [(20, 1), (60, 5)])
def test_an_expected_end_replaces_the_polls_before_it(
    connect: Callable[..., SalesforceOrdersHook], monkeypatch: pytest.MonkeyPatch, done_at: float, status_calls: int
):
    """Earlier jobs took 30 s to process: the next is first asked about at 33 s. Done by then, one
    status call (12 without); not yet, the growing waits go on from where they are at 33 s
    (34.6, 44.6, 54.6, 64.6 s): one call more than they would have made after 33 s, never a restart."""
    hook = connect()
    org = ScriptedJobs(hook, monkeypatch, done_at)
    hook._ingest_seconds = 30.0  # as learned from the jobs before

    hook.bulk_update("Order", [{"id": "801000000000001AAA", "Description": "x"}], sleep=org.sleep, clock=org.clock)

    assert org.status_calls == status_calls
    assert org.sleeps[0] == pytest.approx(33) and org.now == pytest.approx({20: 33, 60: 64.62890625}[done_at])


def test_jobs_closed_while_earlier_ones_are_processed_are_first_asked_about_when_those_end(
    connect: Callable[..., SalesforceOrdersHook], monkeypatch: pytest.MonkeyPatch
):
    """The write-back sends its next round while the one before is still being processed, its time
    not known yet: the new jobs are not polled on the growing waits meanwhile (a 20 s job: 12
    status calls), but once the earlier round is done (30 s), at its time, a tenth more: one call."""
    hook = connect()
    org = ScriptedJobs(hook, monkeypatch, done_at=20)
    waiting = threading.Event()

    class Observed(threading.Condition):
        def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
            waiting.set()  # (the lock held: the test's turn comes once this waits)
            return super().wait_for(predicate, timeout)

    hook._ingest_timing, hook._ingest_waits = Observed(), 1  # the earlier round, waited for in another thread
    records = [{"id": "801000000000001AAA", "Description": "x"}]
    sent = threading.Thread(target=hook.bulk_update, args=("Order", records), kwargs={"sleep": org.sleep, "clock": org.clock})
    sent.start()
    assert waiting.wait(timeout=60), "the new jobs were polled without waiting for the earlier round"
    with hook._ingest_timing:  # the earlier round is done, after 30 s of processing
        assert org.status_calls == 0
        hook._ingest_seconds, hook._ingest_waits = 30.0, 0
        hook._ingest_timing.notify_all()
    sent.join(timeout=60)

    assert org.status_calls == 1 and org.sleeps == [pytest.approx(33)]


def test_a_failed_query_job_is_an_error_after_backing_off(connect: Callable[..., SalesforceOrdersHook], monkeypatch: pytest.MonkeyPatch):
    hook = connect(bulk_poll_seconds=1, bulk_poll_max_seconds=4)
    org = ScriptedJobs(hook, monkeypatch, done_at=20, final="Failed")

    with pytest.raises(SalesforceApiError) as raised:
        list(hook.iter_bulk_query_pages("SELECT Id FROM Order", sleep=org.sleep, clock=org.clock))

    assert raised.value.code == "BULK_JOB_FAILED" and "scripted" in str(raised.value)
    assert org.sleeps == [1, 1.5, 2.25, 3.375, 4, 4, 4]


def test_a_bulk_job_past_the_time_out_is_an_error(connect: Callable[..., SalesforceOrdersHook], monkeypatch: pytest.MonkeyPatch):
    hook = connect()
    org = ScriptedJobs(hook, monkeypatch, done_at=math.inf)

    with pytest.raises(SalesforceApiError) as raised:
        list(hook.iter_bulk_query_pages("SELECT Id FROM Order", sleep=org.sleep, clock=org.clock))

    assert raised.value.code == "BULK_JOB_TIMEOUT"
    assert org.now > BULK_TIMEOUT_SECONDS
    assert org.status_calls < BULK_TIMEOUT_SECONDS / 10 + 10  # a fixed half second: 7,200


def first_orders(sandbox: SandboxServer, count: int) -> list[str]:
    with sandbox.store.lock:
        return [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Order" ORDER BY Id LIMIT ?', (count,))]


def test_bulk_updates_of_several_objects_are_processed_together(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    """Every job is closed before the first status call, and they share it: no result file is read
    when every record went through."""
    orders = first_orders(sandbox, 3)
    with sandbox.store.lock:
        account = sandbox.store.conn.execute('SELECT Id FROM "Account" ORDER BY Id LIMIT 1').fetchone()[0]
    marker = uuid.uuid4().hex[:8]
    ingest_before, calls_before = sandbox_calls(sandbox)["bulk_ingest"], hook.usage.calls
    sleeps: list[float] = []

    results = hook.bulk_update_objects(
        [("Order", [{"id": i, "Description": f"{marker} {n}"} for n, i in enumerate(orders)]), ("Account", [{"id": account, "Description": marker}])],
        sleep=lambda s: (sleeps.append(s), time.sleep(s)),
    )

    assert [[r["id"] for r in job] for job in results] == [orders, [account]]
    assert all(r["success"] and r["errors"] == [] for job in results for r in job)
    assert len(sleeps) == 1 and 0.3 < sleeps[0] <= 0.5  # one wait for both jobs, from when the first was closed
    # create, upload and close each, then one status call each: no successfulResults/failedResults
    assert sandbox_calls(sandbox)["bulk_ingest"] - ingest_before == hook.usage.calls - calls_before == 8
    assert sandbox.store.get("Order", orders[2], ["Description"])["Description"] == f"{marker} 2"
    assert sandbox.store.get("Account", account, ["Description"])["Description"] == marker


def test_a_bulk_update_with_failures_reads_only_the_failed_results(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    first, second, third = first_orders(sandbox, 3)
    sandbox.admin.set_faults(lock_rows=[second])
    calls_before = hook.usage.calls

    results = hook.bulk_update("Order", [{"id": i, "Description": "x"} for i in (first, second, third)])

    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"
    assert hook.usage.calls - calls_before == 5  # create, upload, close, status, failedResults


def test_the_next_bulk_wait_is_the_processing_time_of_the_last(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    """A later batch of jobs is first asked about when the earlier ones took to process (a tenth
    more), not after the growing waits: on a real org that is seconds to minutes of waits saved."""
    orders = first_orders(sandbox, 2)
    sandbox.admin.set_faults(bulk_job_delay_ms=600)
    sleeps: list[float] = []
    hook.bulk_update("Order", [{"id": orders[0], "Description": "first"}], sleep=lambda s: (sleeps.append(s), time.sleep(s)))
    first_job = list(sleeps)
    sleeps.clear()

    hook.bulk_update("Order", [{"id": orders[1], "Description": "second"}], sleep=lambda s: (sleeps.append(s), time.sleep(s)))

    assert len(first_job) == 2  # not done after 0.5 s, done after 1.25 s
    assert len(sleeps) == 1 and 0.5 < sleeps[0] < 0.75  # 0.655 s of processing, a tenth more


def test_bulk_settings_come_from_the_connection_extras(sandbox: SandboxServer, connect: Callable[..., SalesforceOrdersHook]):
    connection = sandbox.airflow_connection()
    connection["extra"] |= {"bulk_poll_seconds": "0.25", "bulk_poll_max_seconds": 4, "bulk_result_workers": "2"}

    assert connect(connection).bulk_settings == BulkSettings(0.25, 4.0, 2)
    assert connect(connection, bulk_result_workers=4).bulk_settings.result_workers == 4  # the hook's argument first
    assert connect().bulk_settings == BulkSettings(0.5, 10.0, 3)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"bulk_poll_seconds": "0"}, "bulk_poll_seconds"),
        ({"bulk_poll_max_seconds": "soon"}, "bulk_poll_max_seconds"),
        ({"bulk_poll_seconds": 5, "bulk_poll_max_seconds": 2}, "bulk_poll_max_seconds"),
        ({"bulk_result_workers": 9}, "bulk_result_workers"),
        ({"bulk_result_workers": "two"}, "bulk_result_workers"),
    ],
)
def test_bad_bulk_settings_are_refused_naming_the_extra(sandbox: SandboxServer, connect, extra: dict, named: str):
    connection = sandbox.airflow_connection()
    connection["extra"] |= extra

    with pytest.raises(ValueError, match=named):
        connect(connection).bulk_settings  # noqa: B018


@pytest.fixture(scope="module")
def order_with_many_items(sandbox: SandboxServer) -> str:
    """An Activated order with more products than a child subquery returns inline."""
    store = sandbox.store
    with store.lock:
        entry_id, pricebook_id, price = store.conn.execute(
            'SELECT Id, Pricebook2Id, UnitPrice FROM "PricebookEntry" WHERE IsDeleted = 0 LIMIT 1'
        ).fetchone()
        account_id = store.conn.execute('SELECT Id FROM "Account" WHERE IsDeleted = 0 LIMIT 1').fetchone()[0]
        order_id = store.create(
            "Order",
            {"AccountId": account_id, "Status": "Draft", "EffectiveDate": "2026-01-15", "Pricebook2Id": pricebook_id},
        )
        for _ in range(MANY_ITEMS):
            store.create("OrderItem", {"OrderId": order_id, "PricebookEntryId": entry_id, "Quantity": 1, "UnitPrice": price})
        store.update("Order", order_id, {"Status": "Activated"})
    return order_id


def test_child_subqueries_are_completed_past_200_children(hook: SalesforceOrdersHook, order_with_many_items: str):
    soql = f"SELECT Id, (SELECT Id FROM OrderItems) FROM Order WHERE Id = {literal(order_with_many_items)}"
    calls_before = hook.usage.calls

    [page] = list(hook.iter_query_pages(soql))

    [record] = page
    children = record["OrderItems"]
    assert len(children["records"]) == MANY_ITEMS and len({c["Id"] for c in children["records"]}) == MANY_ITEMS
    assert children["done"] is True and "nextRecordsUrl" not in children
    assert hook.usage.calls - calls_before == 2  # the query, and one page of the remaining children


# ---------------------------------------------------------------------------------------
# Reads made together (Composite)
# ---------------------------------------------------------------------------------------

ORDER_COLUMNS = ["Id", "TotalAmount", "Account.Name", "Owner.Name", "Account.Parent.Name", "Account.Parent.Owner.IsActive", "Nowhere.Name"]


def one_by_one_types(hook: SalesforceOrdersHook, root: str, columns: list[str]) -> dict[str, str]:
    """The column types as the describes of each object on the paths give them, read one by one."""
    types = {}
    for column in columns:
        obj, *path = [root, *column.split(".")]
        for relationship in path[:-1]:
            target = next((f for f in hook.describe(obj)["fields"] if f.get("relationshipName") == relationship), None)
            obj = target["referenceTo"][0] if target else None
            if obj is None:
                break
        field = obj and next((f for f in hook.describe(obj)["fields"] if f["name"] == path[-1]), None)
        if field:
            types[column] = field["type"]
    return types


def test_column_types_describe_a_level_of_objects_in_one_call(sandbox: SandboxServer, connect):
    hook = connect()
    hook.conn  # noqa: B018 - the login is not a call under test
    before, calls_before = sandbox_calls(sandbox), hook.usage.calls

    types = hook.column_types(f"SELECT {', '.join(ORDER_COLUMNS)} FROM Order", ORDER_COLUMNS)

    after = sandbox_calls(sandbox)
    # Order alone (a plain describe); Account and User together; the level above: described already
    assert (after["describe"] - before["describe"], after["composite"] - before["composite"]) == (1, 1)
    assert hook.usage.calls - calls_before == 2 == after["total"] - before["total"]
    assert set(hook._describes) == {"Order", "Account", "User"}
    assert types == one_by_one_types(connect(), "Order", ORDER_COLUMNS)
    assert list(types) == [c for c in ORDER_COLUMNS if c in types] and "Nowhere.Name" not in types
    assert types["TotalAmount"] == "currency" and types["Account.Parent.Owner.IsActive"] == "boolean"

    hook.column_types(f"SELECT {', '.join(ORDER_COLUMNS)} FROM Order", ORDER_COLUMNS)
    assert hook.usage.calls - calls_before == 2  # cached per hook


def test_a_failed_describe_among_others_is_the_error_its_own_call_raises(hook: SalesforceOrdersHook, connect):
    with pytest.raises(SalesforceApiError) as alone:
        connect().describe("NoSuchObject__c")
    calls_before = hook.usage.calls

    with pytest.raises(SalesforceApiError) as together:
        hook.read_together(describes=["Account", "NoSuchObject__c", "Product2"])

    assert hook.usage.calls - calls_before == 1
    assert type(together.value) is type(alone.value)
    assert (together.value.code, together.value.status, together.value.detail, str(together.value)) == (
        alone.value.code, alone.value.status, alone.value.detail, str(alone.value)
    )
    assert alone.value.status == 404
    assert "NoSuchObject__c" not in hook._describes and "Account" in hook._describes  # the others were answered


def test_queries_read_together_are_one_call_and_page_on_as_alone(
    sandbox: SandboxServer, hook: SalesforceOrdersHook, order_with_many_items: str
):
    items = f"SELECT Id, (SELECT Id FROM OrderItems) FROM Order WHERE Id = {literal(order_with_many_items)}"
    accounts = "SELECT Id, Name FROM Account ORDER BY Id"
    deleted = "SELECT Id, IsDeleted FROM Order ORDER BY Id LIMIT 5"
    alone = [list(hook.iter_query_pages(items)), list(hook.iter_query_pages(accounts)), list(hook.iter_query_pages(deleted, include_deleted=True))]
    before, calls_before, pages_before = sandbox_calls(sandbox), hook.usage.calls, hook.usage.result_pages

    pages = hook.read_together([Query(items), Query(accounts), Query(deleted, include_deleted=True)], describes=["Pricebook2"])

    assert hook.usage.calls - calls_before == 1 == sandbox_calls(sandbox)["composite"] - before["composite"]
    assert "Pricebook2" in hook._describes
    together = [list(p) for p in pages]
    assert together == alone
    assert len(together[0][0][0]["OrderItems"]["records"]) == MANY_ITEMS
    # the order's children past the first page: one call more, as when the query is read alone
    assert hook.usage.calls - calls_before == 2 and hook.usage.result_pages - pages_before == 3


def test_more_than_five_queries_take_a_call_per_five(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    queries = [Query(f"SELECT Id FROM Order ORDER BY Id LIMIT {n}") for n in range(1, 8)]
    calls_before = hook.usage.calls

    pages = hook.read_together(queries, describes=["Order", "Account"])

    assert hook.usage.calls - calls_before == 2  # 2 describes + 5 queries, then 2 queries
    assert [len(next(p)) for p in pages] == list(range(1, 8))


def test_one_read_alone_is_a_plain_call(sandbox: SandboxServer, connect):
    hook = connect()
    hook.describe("Order")
    before = sandbox_calls(sandbox)

    [pages] = hook.read_together([Query("SELECT Id FROM Order LIMIT 3")], describes=["Order"])
    hook.read_together(describes=["Account", "Order"])

    assert sandbox_calls(sandbox)["total"] - before["total"] == 1  # the describe; the query not read yet
    assert len(next(pages)) == 3
    after = sandbox_calls(sandbox)
    assert (after["describe"] - before["describe"], after["query"] - before["query"], after["composite"] - before["composite"]) == (1, 1, 0)


def test_a_failed_query_among_others_is_raised_when_its_pages_are_read(hook: SalesforceOrdersHook):
    with pytest.raises(SalesforceApiError) as alone:
        list(hook.iter_query_pages("SELECT NoSuchField__c FROM Order"))

    good, bad = hook.read_together([Query("SELECT Id FROM Order LIMIT 2"), Query("SELECT NoSuchField__c FROM Order")])

    assert len(next(good)) == 2
    with pytest.raises(SalesforceApiError) as together:
        next(bad)
    assert (together.value.code, together.value.status, str(together.value)) == (alone.value.code, alone.value.status, str(alone.value))
    assert together.value.code == "INVALID_FIELD"


def test_count_and_read_is_one_call(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    calls_before = hook.usage.calls

    total, [pages] = hook.count_and_read("SELECT COUNT() FROM Order", [Query("SELECT Id FROM Account LIMIT 4")])

    assert total == sandbox.store.count("Order") and len(next(pages)) == 4
    assert hook.usage.calls - calls_before == 1
    with pytest.raises(SalesforceApiError) as raised:
        hook.count_and_read("SELECT COUNT() FROM NoSuchObject__c", [Query("SELECT Id FROM Account LIMIT 4")])
    assert raised.value.code == "INVALID_TYPE"


def test_a_composite_call_is_one_call_of_the_budget(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    queries = [Query("SELECT Id FROM Order LIMIT 1"), Query("SELECT Id FROM Account LIMIT 1")]
    hook.limit_calls(1)
    total_before = sandbox_calls(sandbox)["total"]

    hook.read_together(queries, describes=["OrderItem", "Product2"])
    with pytest.raises(ApiBudgetExceeded):
        hook.read_together(queries)

    assert sandbox_calls(sandbox)["total"] - total_before == 1
    assert hook.usage.budget_left == 0


def test_a_composite_call_that_fails_raises_as_any_call(sandbox: SandboxServer, connect):
    hook = connect(max_retries=1, backoff_factor=0.01)
    hook.conn  # noqa: B018 - the login is not the call under test
    queries = [Query("SELECT Id FROM Order LIMIT 1"), Query("SELECT Id FROM Account LIMIT 1")]
    sandbox.admin.set_faults(error_503_burst=5)
    with pytest.raises(SalesforceApiError) as raised:
        hook.read_together(queries)
    assert (raised.value.status, raised.value.code) == (503, "SERVER_UNAVAILABLE")

    sandbox.admin.clear_faults()
    sandbox.admin.set_faults(rate_limit_after=0)
    with pytest.raises(ApiLimitExceeded):
        hook.read_together(describes=["Order", "Account"])
    assert not hook._describes


def test_a_composite_call_after_the_session_expired_logs_in_again(sandbox: SandboxServer, connect):
    hook = connect()
    hook.conn  # noqa: B018 - the login is not the call under test
    auth_before = sandbox_calls(sandbox)["auth"]
    sandbox.admin.set_faults(session_expires_after=0)

    first, second = hook.read_together([Query("SELECT Id FROM Order LIMIT 2"), Query("SELECT Id FROM Account LIMIT 3")])

    assert sandbox_calls(sandbox)["auth"] == auth_before + 1
    assert (len(next(first)), len(next(second))) == (2, 3)


# ---------------------------------------------------------------------------------------
# API usage and budget
# ---------------------------------------------------------------------------------------


def test_usage_counts_calls_and_reads_the_org_usage_header(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    calls_before, sandbox_before = hook.usage.calls, sandbox_calls(sandbox)["total"]

    hook.describe("Order")
    hook.describe("Order")  # cached: no second call
    hook.count("SELECT COUNT() FROM Order")

    assert hook.usage.calls - calls_before == 2 == sandbox_calls(sandbox)["total"] - sandbox_before
    usage = sandbox.admin.stats()["api_usage"]
    assert (hook.usage.org_used, hook.usage.org_max) == (usage["used"], usage["max"])
    assert hook.usage.org_remaining == usage["max"] - usage["used"]


def test_budget_share_stops_the_run_before_it_spends_more(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    used = sandbox.admin.stats()["api_usage"]["used"]
    sandbox.admin.set_faults(daily_api_limit=used + 21)
    hook.count("SELECT COUNT() FROM Order")  # the answer carries the lowered allowance

    hook.set_budget_share(0.5)

    allowed = hook.usage.budget - hook.usage.calls
    assert allowed == int(hook.usage.org_remaining * 0.5) and allowed > 0
    made = 0
    with pytest.raises(ApiBudgetExceeded) as raised:
        while made <= allowed:
            hook.call("GET", "limits/")
            made += 1
    assert made == allowed
    assert raised.value.code == "API_BUDGET_EXCEEDED" and "the next run continues" in str(raised.value)
    assert sandbox.admin.stats()["api_usage"]["used"] < used + 21  # stopped before the org's own limit


def test_a_full_share_sets_no_budget(hook: SalesforceOrdersHook):
    hook.set_budget_share(1.0)
    assert hook.usage.budget is None


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------


def test_update_records_sends_200_records_a_call(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    with sandbox.store.lock:
        ids = [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Order" ORDER BY Id LIMIT 450')]
    marker = uuid.uuid4().hex[:8]
    records = [{"attributes": {"type": "Order"}, "id": i, "Description": f"{marker} {n}"} for n, i in enumerate(ids)]
    composite_before, calls_before = sandbox_calls(sandbox)["composite"], hook.usage.calls

    results = hook.update_records(records)

    assert len(ids) == 450 and COLLECTION_LIMIT == 200
    assert sandbox_calls(sandbox)["composite"] - composite_before == 3
    assert hook.usage.calls - calls_before == 3
    assert [r["id"] for r in results] == ids and all(r["success"] for r in results)
    assert sandbox.store.get("Order", ids[-1], ["Description"])["Description"] == f"{marker} 449"


def test_records_of_several_objects_are_sent_grouped_by_object_and_answered_in_order(
    sandbox: SandboxServer, hook: SalesforceOrdersHook, monkeypatch: pytest.MonkeyPatch
):
    """Salesforce processes a Collections call in chunks, a new one wherever the object changes, and
    refuses more than 10: Orders and Accounts alternating (as a write-back's outbox rows come) are
    sent grouped, and each result still comes back in the records' order."""
    with sandbox.store.lock:
        orders = [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Order" ORDER BY Id LIMIT 15')]
        accounts = [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Account" ORDER BY Id LIMIT 15')]
    marker = uuid.uuid4().hex[:8]
    records = [
        {"attributes": {"type": sobject}, "id": record_id, "Description": f"{marker} {n}"}
        for n, pair in enumerate(zip(orders, accounts, strict=True))
        for sobject, record_id in zip(("Order", "Account"), pair, strict=True)
    ]
    sent: list[list[str]] = []
    call = hook.call

    def spy(method: str, path: str, **kwargs):
        if path == "composite/sobjects":
            sent.append([record["attributes"]["type"] for record in kwargs["json"]["records"]])
        return call(method, path, **kwargs)

    monkeypatch.setattr(hook, "call", spy)

    results = hook.update_records(records)

    assert sent == [["Account"] * 15 + ["Order"] * 15]  # two chunks, not 30
    assert [r["id"] for r in results] == [r["id"] for r in records] and all(r["success"] for r in results)
    assert sandbox.store.get("Account", accounts[3], ["Description"])["Description"] == f"{marker} 3"
    assert sandbox.store.get("Order", orders[14], ["Description"])["Description"] == f"{marker} 14"


def test_a_bulk_update_sets_a_field_to_null_and_leaves_the_fields_a_record_does_not_name(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    """In a Bulk 2.0 upload an empty value leaves the field alone and ``#N/A`` sets it to null: a
    record's None is written as null, and a column only another record of the job sets is left."""
    cleared, kept = first_orders(sandbox, 2)
    for order_id in (cleared, kept):
        sandbox.store.update("Order", order_id, {"Description": "before"})

    (results,) = hook.bulk_update_objects([("Order", [{"id": cleared, "Description": None}, {"id": kept}])])

    assert all(r["success"] for r in results)
    assert sandbox.store.get("Order", cleared, ["Description"])["Description"] is None
    assert sandbox.store.get("Order", kept, ["Description"])["Description"] == "before"


def test_per_record_failures_come_back_in_order(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    with sandbox.store.lock:
        first, second = [row[0] for row in sandbox.store.conn.execute('SELECT Id FROM "Order" ORDER BY Id LIMIT 2')]
    sandbox.admin.set_faults(lock_rows=[second])

    results = hook.update_records([{"attributes": {"type": "Order"}, "id": i, "Description": "x"} for i in (first, second)])

    assert results[0]["success"] is True
    assert results[1]["success"] is False and results[1]["errors"][0]["statusCode"] == "UNABLE_TO_LOCK_ROW"


# ---------------------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------------------


def test_a_503_burst_is_retried(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    injected_before = sandbox.admin.stats()["faults_injected"]["error_503"]
    sandbox.admin.set_faults(error_503_burst=3)

    assert hook.count("SELECT COUNT() FROM Order") == sandbox.store.count("Order")
    assert sandbox.admin.stats()["faults_injected"]["error_503"] - injected_before == 3


def test_503_beyond_the_retries_is_an_error(sandbox: SandboxServer, connect):
    hook = connect(max_retries=1, backoff_factor=0.01)
    hook.conn  # noqa: B018 - the login is not the call under test
    sandbox.admin.set_faults(error_503_burst=5)

    with pytest.raises(SalesforceApiError) as raised:
        hook.count("SELECT COUNT() FROM Order")

    assert (raised.value.status, raised.value.code) == (503, "SERVER_UNAVAILABLE")


def test_errors_carry_salesforce_code(hook: SalesforceOrdersHook):
    with pytest.raises(SalesforceApiError) as raised:
        list(hook.iter_query_pages("SELECT NoSuchField__c FROM Order"))

    error = raised.value
    assert type(error) is SalesforceApiError
    assert (error.code, error.status) == ("INVALID_FIELD", 400)
    assert "NoSuchField__c" in str(error) and "INVALID_FIELD" in str(error)


def test_request_limit_exceeded_is_api_limit_exceeded(sandbox: SandboxServer, hook: SalesforceOrdersHook):
    sandbox.admin.set_faults(rate_limit_after=0)

    with pytest.raises(ApiLimitExceeded) as raised:
        hook.describe("Account")

    assert (raised.value.code, raised.value.status) == ("REQUEST_LIMIT_EXCEEDED", 403)
    assert isinstance(raised.value, SalesforceApiError)
