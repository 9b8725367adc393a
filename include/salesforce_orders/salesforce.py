"""The Salesforce hook layer: the provider's ``SalesforceHook`` plus what this pipeline needs.

Every auth mode of the provider works unchanged (the connection is read by the provider).
Added here, driven by optional connection extras:

- ``login_url``: send login requests (hard-coded by simple-salesforce to
  ``https://{domain}.salesforce.com``) to another host, e.g. the local sandbox;
- ``ca_bundle``: a PEM file to trust (the sandbox's self-signed certificate);
- ``session_id``: direct mode with ``instance_url`` (the provider only takes it from code);
- ``timeout`` (seconds, default 60) on every request; 502/503/504 and connection errors retried
  with exponential backoff;
- counting of API calls and the org's daily usage from ``Sforce-Limit-Info``, with an optional
  budget that stops the run before it uses more than its share of the remaining allowance;
- streaming of query pages (``nextRecordsUrl``) with child subqueries followed to the end, and
  sObject Collections updates (200 records a call, ``allOrNone=false``);
- independent reads made together (``read_together``): describes and the first pages of queries
  sent as subrequests of one Composite call (25 a call, 5 of them queries), which counts as one
  API call; each subrequest's error raised as its own call's would be;
- Bulk API 2.0 query results downloaded a few pages at once (``resultPages``) and yielded in
  order, and Bulk job status polled at growing intervals: ``bulk_poll_seconds`` (default 0.5)
  first, then 1.5 times longer each poll up to ``bulk_poll_max_seconds`` (default 10), counted
  from the job's start; ``bulk_result_workers`` (1-4, default 3) pages downloaded at once;
- Bulk API 2.0 updates of several objects in jobs processed and polled together, their result
  files read only when a record failed or was not processed.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import tempfile
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import msgspec
import requests
import urllib3
from airflow.providers.salesforce.hooks.salesforce import SalesforceHook
from requests.adapters import HTTPAdapter
from simple_salesforce import api as sf_api
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.exceptions import SalesforceError as ClientError
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

COLLECTION_LIMIT = 200  # records per sObject Collections call
BULK_NULL = "#N/A"  # a Bulk 2.0 ingest value that sets a field to null (an empty one leaves it alone)
COMPOSITE_SUBREQUESTS = 25  # subrequests per Composite call (one API call for all of them) ...
COMPOSITE_QUERIES = 5  # ... of which at most this many queries
# A query URL longer than this goes in a Composite call's body: Salesforce takes 16,384 bytes of URI
# and headers together (414 URI Too Long past it), the headers (the session's token, the client's
# name) taking a part.
QUERY_URL_LIMIT = 8_000
BULK_PAGE_RECORDS = 100_000  # records per Bulk API 2.0 result page (maxRecords): fewer calls; pages are streamed
BULK_CHUNK_RECORDS = 5_000  # records per chunk yielded from a streamed Bulk result page: bounds memory
BULK_POLL_SECONDS = 0.5  # the first wait for a Bulk job; each next one is BULK_POLL_GROWTH times longer ...
BULK_POLL_GROWTH = 1.5
BULK_POLL_MAX_SECONDS = 10.0  # ... up to this: status calls grow with the log of a job's duration, then slowly
BULK_TIMEOUT_SECONDS = 3600
BULK_RESULT_WORKERS = 3  # Bulk result pages downloaded at once (resultPages); at most this many wait, spooled
MAX_BULK_RESULT_WORKERS = 4
BULK_SPOOL_BYTES = 8 * 1024 * 1024  # a downloaded result page (as sent: gzip) beyond this waits on disk
BULK_FINAL_STATES = ("JobComplete", "Failed", "Aborted")
_NUMERIC_TYPES = {"double", "currency", "percent"}
_LIMIT_INFO = re.compile(r"api-usage=(\d+)/(\d+)")


class SalesforceApiError(RuntimeError):
    """A Salesforce call failed; ``code`` is Salesforce's errorCode and ``detail`` its message, when it sent them."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.code = code
        self.status = status
        self.detail = detail


class ApiLimitExceeded(SalesforceApiError):
    """The org's daily API allowance is used up (REQUEST_LIMIT_EXCEEDED)."""


class LoginRefused(SalesforceApiError):
    """Salesforce refused the connection's credentials (at the first login or a re-login)."""


class ApiBudgetExceeded(SalesforceApiError):
    """This run reached its configured share of the remaining daily allowance."""


@dataclass
class ApiUsage:
    """Calls made through one hook, and the org's daily usage as last reported."""

    calls: int = 0
    result_pages: int = 0  # query result pages read (REST query/queryMore pages, Bulk result pages)
    org_used: int | None = None
    org_max: int | None = None
    budget: int | None = None  # calls this run may make; None = unlimited
    # The org's usage the run stops short of: its budget as Salesforce counts it, so the calls of a
    # failed try (which no XCom carries on) count against its retry. None = no ceiling.
    ceiling: int | None = None
    calls_at_org_used: int = 0  # ``calls`` when ``org_used`` was reported

    @property
    def org_used_now(self) -> int | None:
        """The org's usage as last reported, with this hook's calls since then."""
        return None if self.org_used is None else self.org_used + self.calls - self.calls_at_org_used

    @property
    def budget_left(self) -> int | None:
        """Calls still allowed under the budget; None = unlimited."""
        return None if self.budget is None else max(self.budget - self.calls, 0)

    @property
    def org_remaining(self) -> int | None:
        if self.org_used is None or self.org_max is None:
            return None
        return max(self.org_max - self.org_used, 0)


@dataclass(frozen=True)
class Query:
    """A SOQL query to be read with others (``read_together``); ``include_deleted``: queryAll."""

    soql: str
    include_deleted: bool = False

    def path(self) -> str:
        """Its first page's URL relative to the API's base, as simple-salesforce asks for it."""
        return ("queryAll/" if self.include_deleted else "query/") + "?" + urlencode({"q": self.soql})


@dataclass(frozen=True)
class BulkSettings:
    """How Bulk jobs are waited for and their result pages downloaded."""

    poll_seconds: float = BULK_POLL_SECONDS
    poll_max_seconds: float = BULK_POLL_MAX_SECONDS
    result_workers: int = BULK_RESULT_WORKERS

    @classmethod
    def from_values(cls, *, poll_seconds: Any = None, poll_max_seconds: Any = None, result_workers: Any = None) -> BulkSettings:
        """Settings from hook arguments or connection extras (None or "": the default), checked."""

        def number(name: str, value: Any, default: float) -> float:
            if value is None or value == "":
                return default
            try:
                seconds = float(value)
            except (TypeError, ValueError):
                seconds = float("nan")
            if not seconds > 0 or seconds == float("inf"):  # nan too
                raise ValueError(f"Salesforce connection: {name} must be a number of seconds above 0, not {value!r}")
            return seconds

        workers = BULK_RESULT_WORKERS if result_workers is None or result_workers == "" else result_workers
        if isinstance(workers, str) and workers.isdigit():
            workers = int(workers)
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_BULK_RESULT_WORKERS:
            raise ValueError(f"Salesforce connection: bulk_result_workers must be a whole number from 1 to {MAX_BULK_RESULT_WORKERS}, not {result_workers!r}")
        first = number("bulk_poll_seconds", poll_seconds, BULK_POLL_SECONDS)
        cap = number("bulk_poll_max_seconds", poll_max_seconds, max(BULK_POLL_MAX_SECONDS, first))
        if cap < first:
            raise ValueError(f"Salesforce connection: bulk_poll_max_seconds ({cap:g}) must not be below bulk_poll_seconds ({first:g})")
        return cls(first, cap, workers)

    def poll_intervals(self) -> Iterator[float]:
        """The waits before each status call of a Bulk job: growing by BULK_POLL_GROWTH up to the cap."""
        interval = self.poll_seconds
        while True:
            yield interval
            interval = min(interval * BULK_POLL_GROWTH, self.poll_max_seconds)


class _DownloadedPage:
    """A Bulk result page downloaded ahead of its turn: its body as sent, in a spool."""

    def __init__(self, spool: Any, content_encoding: str):
        self.spool = spool
        self.content_encoding = content_encoding.strip().lower()

    def content(self) -> Any:
        """The page's CSV as a binary stream."""
        if self.content_encoding == "gzip":
            return gzip.GzipFile(fileobj=self.spool, mode="rb")
        if self.content_encoding in ("", "identity"):
            return self.spool
        raise SalesforceApiError(f"Bulk result page in an encoding not asked for: {self.content_encoding}")

    def close(self) -> None:
        self.spool.close()

    def __enter__(self) -> _DownloadedPage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _SalesforceAdapter(HTTPAdapter):
    """Default timeout on every request, and an optional login-host rewrite."""

    def __init__(self, timeout: float, retry: Retry, rewrite_to: str | None = None):
        self._timeout = timeout
        self._rewrite_to = urlsplit(rewrite_to) if rewrite_to else None
        super().__init__(max_retries=retry, pool_maxsize=4)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        if self._rewrite_to is not None and request.url:
            parts = urlsplit(request.url)
            request.url = urlunsplit(
                (self._rewrite_to.scheme, self._rewrite_to.netloc, parts.path, parts.query, parts.fragment)
            )
        return super().send(request, **kwargs)


def _error_from_client(exc: ClientError) -> SalesforceApiError:
    """Translate simple-salesforce's exception into ours, keeping Salesforce's code and message."""
    if isinstance(exc, SalesforceAuthenticationFailed):  # the lazy login, or a re-login, inside a call
        return LoginRefused(f"Salesforce refused the login: {exc}", code=str(exc.code or "") or None, status=401)
    return _error_from_answer(getattr(exc, "status", None), getattr(exc, "content", None), str(exc))


def _error_from_answer(status: int | None, content: Any, message: str) -> SalesforceApiError:
    """Our exception for an error answer (a call's, or a Composite subrequest's): Salesforce's
    errorCode and message when the body carries them, else ``message``."""
    code = None
    if isinstance(content, list) and content and isinstance(content[0], dict):
        code = content[0].get("errorCode")
        message = content[0].get("message", message)
    cls = ApiLimitExceeded if code == "REQUEST_LIMIT_EXCEEDED" else SalesforceApiError
    return cls(f"Salesforce answered {status} {code or ''}: {message}".replace("  ", " "), code=code, status=status, detail=message)


class SalesforceOrdersHook(SalesforceHook):
    """The provider's hook with paging, collections, retries, time-outs and API accounting."""

    def __init__(
        self,
        salesforce_conn_id: str = SalesforceHook.default_conn_name,
        *,
        timeout: float | None = None,
        max_retries: int = 5,
        backoff_factor: float = 0.5,
        client_name: str | None = None,
        bulk_poll_seconds: float | None = None,
        bulk_poll_max_seconds: float | None = None,
        bulk_result_workers: int | None = None,
    ) -> None:
        super().__init__(salesforce_conn_id=salesforce_conn_id)
        self._client_name = client_name
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_factor = backoff_factor
        self._bulk_options = {
            "bulk_poll_seconds": bulk_poll_seconds,
            "bulk_poll_max_seconds": bulk_poll_max_seconds,
            "bulk_result_workers": bulk_result_workers,
        }
        self.usage = ApiUsage()
        # Result pages are downloaded in threads: the counters and the budget check take this lock.
        self._usage_lock = threading.Lock()
        self._this_thread = threading.local()  # the calls each thread made (calls_made_here)
        self._calls_in_flight = 0  # calls allowed under the budget whose answer is not counted yet
        self._result_pages_unsupported = False  # the org answered 404 to resultPages (API version < 58.0)
        self._describes: dict[str, dict] = {}
        self._ingest_seconds: float | None = None  # the longest processing time of the last ingest jobs waited for
        self._ingest_timing = threading.Condition()  # guards the two: ingest jobs waited for from two threads
        self._ingest_waits = 0  # ingest jobs being waited for now (rounds of them)
        self._query_jobs_started: dict[str, float] = {}  # by job id: when start_bulk_query created it

    # ---- connection -------------------------------------------------------------------

    def _build_session(self, extras: dict) -> requests.Session:
        session = requests.Session()
        ca_bundle = self._get_field(extras, "ca_bundle")
        if ca_bundle:
            session.verify = ca_bundle
            # REQUESTS_CA_BUNDLE would otherwise override session.verify.
            session.trust_env = False
        timeout = float(self._timeout or self._get_field(extras, "timeout") or 60)
        retry = Retry(
            total=self._max_retries,
            connect=self._max_retries,
            read=2,
            status=self._max_retries,
            backoff_factor=self._backoff_factor,
            backoff_max=30,
            status_forcelist=(502, 503, 504),
            allowed_methods=None,  # our writes are idempotent updates: safe to resend
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        session.mount("https://", _SalesforceAdapter(timeout, retry))
        login_url = self._get_field(extras, "login_url")
        if login_url:
            login_url = login_url.rstrip("/")
            domain = self._get_field(extras, "domain") or "login"
            for host in dict.fromkeys(("login", "test", domain)):
                session.mount(f"https://{host}.salesforce.com/", _SalesforceAdapter(timeout, retry, login_url))
        session.hooks["response"].append(self._count_call)
        if self._client_name:
            # Salesforce records the client in the changeOrigin of the change events our writes cause.
            session.headers["Sforce-Call-Options"] = f"client={self._client_name}"
        return session

    def _count_call(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        # Salesforce counts API requests under /services/data/ against the daily allowance; logins are not.
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        with self._usage_lock:
            if "/services/data/" in (response.url or ""):
                self.usage.calls += 1
                self._this_thread.calls = self.calls_made_here() + 1
            if match:
                self.usage.org_used, self.usage.org_max = int(match.group(1)), int(match.group(2))
                self.usage.calls_at_org_used = self.usage.calls

    @cached_property
    def conn(self) -> sf_api.Salesforce:  # type: ignore[override]
        from airflow.sdk.log import mask_secret

        connection = self.get_connection(self.conn_id)
        extras = connection.extra_dejson
        if self.session is None:
            self.session = self._build_session(extras)
        if self.session_id is None:
            self.session_id = self._get_field(extras, "session_id")
        if self.session_id:
            mask_secret(self.session_id)
        sf = SalesforceHook.conn.func(self)  # type: ignore[attr-defined]
        # Numbers with a fraction as exact decimals (amounts keep every cent); simple-salesforce
        # takes parse_float, which the provider's hook does not pass on.
        sf._parse_float = Decimal
        sf.parse_result_to_json = _parse_response  # its answers (query pages) decoded by msgspec
        if sf.session_id:
            mask_secret(sf.session_id)
        # simple-salesforce logs in again by itself when a session expires mid-run: mask that one too.
        relogin = sf._refresh_session

        def relogin_and_mask() -> None:
            relogin()
            if sf.session_id:
                mask_secret(sf.session_id)

        sf._refresh_session = relogin_and_mask
        return sf

    @property
    def instance_url(self) -> str:
        return f"https://{self.conn.sf_instance}"

    # ---- budget -----------------------------------------------------------------------

    def set_budget_share(self, share: float) -> None:
        """Allow this hook at most ``share`` of the org's remaining daily allowance.

        The allowance comes from the last ``Sforce-Limit-Info`` header seen (every REST answer
        carries it), or from ``/limits`` before the first call.
        """
        if share >= 1:
            return
        remaining = self.usage.org_remaining
        if remaining is None:  # no answer carried Sforce-Limit-Info yet: ask /limits
            limits = self.call("GET", "limits/")
            remaining = int((limits or {}).get("DailyApiRequests", {}).get("Remaining", 0))
        self.usage.budget = self.usage.calls + int(remaining * share)
        if self.usage.org_used is not None:  # (never above a ceiling the run already has)
            ceiling = self.usage.org_used_now + int(remaining * share)
            self.usage.ceiling = ceiling if self.usage.ceiling is None else min(self.usage.ceiling, ceiling)
        log.info("API budget: %d calls (%.0f%% of %d remaining today)", int(remaining * share), share * 100, remaining)

    def _check_budget(self) -> None:
        with self._usage_lock:
            self._refuse_over_budget()

    def _refuse_over_budget(self) -> None:
        # Calls in flight (result pages downloading) count: their answers are not counted yet.
        used, in_flight = self.usage.org_used_now, self._calls_in_flight
        over_ceiling = self.usage.ceiling is not None and used is not None and used + in_flight >= self.usage.ceiling
        if over_ceiling or (self.usage.budget is not None and self.usage.calls + in_flight >= self.usage.budget):
            raise ApiBudgetExceeded(
                f"Stopped before exceeding this run's API budget ({self.usage.budget} calls, "
                f"org usage {used}/{self.usage.org_max}"
                f"{'' if self.usage.ceiling is None else f', the run stops at {self.usage.ceiling}'}); the next run continues",
                code="API_BUDGET_EXCEEDED",
            )

    def _reserve_call(self) -> None:
        """Take one call of the budget for a call another thread makes (released by ``_release_call``)."""
        with self._usage_lock:
            self._refuse_over_budget()
            self._calls_in_flight += 1

    def _release_call(self) -> None:
        with self._usage_lock:
            self._calls_in_flight -= 1

    def _count_result_page(self) -> None:
        with self._usage_lock:  # (two jobs' pages may be read at once: the extract's orders and items)
            self.usage.result_pages += 1

    def calls_made_here(self) -> int:
        """The API calls this thread has made through the hook (``usage.calls`` counts every thread's)."""
        return getattr(self._this_thread, "calls", 0)

    def limit_calls(self, calls: int | None, org_usage_ceiling: int | None = None) -> None:
        """Carry what is left of the run's budget into this hook: at most ``calls`` more (None: no
        limit), and no call once the org's usage has reached ``org_usage_ceiling`` (None: none).

        The ceiling is what makes a retried task keep to the run's budget: ``calls`` is what the
        task before it left, the same for every try, while the org counts a failed try's calls too.
        (A try knows the org's usage from its first answer on: it makes at most that one call more.)"""
        if calls is not None:
            self.usage.budget = self.usage.calls + max(calls, 0)
        if org_usage_ceiling is not None:
            self.usage.ceiling = org_usage_ceiling

    # ---- calls ------------------------------------------------------------------------

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call relative to ``/services/data/vNN.N/``, errors translated."""
        self._check_budget()
        try:
            return self.conn.restful(path, method=method, **kwargs)
        except ClientError as exc:
            raise _error_from_client(exc) from None

    def integration_user_id(self) -> str:
        """The id of the user the import works as, from OAuth's userinfo (not a counted API call)."""
        response = self.conn.session.get(
            f"{self.instance_url}/services/oauth2/userinfo", headers=self.conn.headers, timeout=self._timeout or 60
        )
        if response.status_code >= 400:
            raise SalesforceApiError(f"Salesforce answered {response.status_code} to userinfo", status=response.status_code)
        return response.json()["user_id"]

    def describe(self, sobject: str) -> dict:
        if sobject not in self._describes:
            self._describes[sobject] = self.call("GET", f"sobjects/{sobject}/describe")
        return self._describes[sobject]

    def read_together(self, queries: Sequence[Query] = (), *, describes: Iterable[str] = ()) -> list[Iterator[list[dict]]]:
        """Describes of ``describes`` (those not cached yet) and the first pages of ``queries``,
        read in one Composite call (more when there are over 25, or over 5 queries): one API call
        instead of one each. Only for independent reads: each subrequest runs on its own.

        The describes are cached (``describe`` then answers them); a describe's error is raised
        here, as ``describe`` raises it. Returned: each query's pages as ``iter_query_pages``
        yields them (later pages and child records read as there); a query's error is raised when
        its pages are read. One read alone is made as a plain call (the query's when its pages are
        read)."""
        wanted = [sobject for sobject in dict.fromkeys(describes) if sobject not in self._describes]
        if len(wanted) + len(queries) <= 1:
            for sobject in wanted:
                self.describe(sobject)
            return [self.iter_query_pages(query.soql, include_deleted=query.include_deleted) for query in queries]
        answers = self._get_together([f"sobjects/{sobject}/describe" for sobject in wanted], [query.path() for query in queries])
        for sobject, answer in zip(wanted, answers, strict=False):
            if isinstance(answer, SalesforceApiError):
                raise answer
            self._describes[sobject] = answer
        return self._answered_queries(queries, answers[len(wanted) :])

    def count_and_read(self, soql: str, queries: Sequence[Query]) -> tuple[int, list[Iterator[list[dict]]]]:
        """``count`` of ``soql`` with ``queries`` read in the same call, as ``read_together`` reads them."""
        if not queries:
            return self.count(soql), []
        counted, *answers = self._get_together([], [Query(soql).path(), *(query.path() for query in queries)])
        if isinstance(counted, SalesforceApiError):
            raise counted
        return int(counted["totalSize"]), self._answered_queries(queries, answers)

    def _answered_queries(self, queries: Sequence[Query], answers: list[Any]) -> list[Iterator[list[dict]]]:
        return [
            self.iter_query_pages(query.soql, include_deleted=query.include_deleted, answered=answer)
            for query, answer in zip(queries, answers, strict=True)
        ]

    def _get_together(self, paths: list[str], query_paths: list[str]) -> list[Any]:
        """GET ``paths`` then ``query_paths`` (relative to the API's base) as Composite subrequests,
        25 a call of which at most 5 queries; each answer's body, or the error its call would have
        raised, in order. An error of a Composite call itself is raised as any call's."""
        reads = [(path, False) for path in paths] + [(path, True) for path in query_paths]
        calls: list[list[str]] = []
        queries = 0
        for path, is_query in reads:
            if not calls or len(calls[-1]) == COMPOSITE_SUBREQUESTS or (is_query and queries == COMPOSITE_QUERIES):
                calls.append([])
                queries = 0
            calls[-1].append(path)
            queries += is_query
        return [answer for chunk in calls for answer in self._composite_gets(chunk)]

    def _composite_gets(self, paths: list[str]) -> list[Any]:
        """One Composite call of GET subrequests (without allOrNone: each stands alone)."""
        base = urlsplit(self.conn.base_url).path  # /services/data/vNN.N/
        subrequests = [{"method": "GET", "url": base + path, "referenceId": f"read{n}"} for n, path in enumerate(paths)]
        answer = self.call("POST", "composite", json={"allOrNone": False, "compositeRequest": subrequests})
        by_reference = {sub.get("referenceId"): sub for sub in (answer or {}).get("compositeResponse", [])}
        results: list[Any] = []
        for request in subrequests:
            sub = by_reference.get(request["referenceId"])
            if sub is None:
                results.append(SalesforceApiError(f"Salesforce sent no answer to the Composite subrequest GET {request['url']}"))
                continue
            status, body = sub.get("httpStatusCode"), sub.get("body")
            if isinstance(status, int) and status < 300:
                results.append(body)
            else:
                results.append(_error_from_answer(status, body, f"{request['url']}: {body}"))
        return results

    def count(self, soql: str) -> int:
        return int(self._query(soql, include_deleted=False)["totalSize"])

    def _query(self, soql: str, include_deleted: bool, page_size: int | None = None) -> dict:
        self._check_budget()
        path = Query(soql, include_deleted).path()
        if len(self.conn.base_url) + len(path) > QUERY_URL_LIMIT:
            # A query naming hundreds of orders (a re-sync pasted from a report, a burst of events):
            # in a URL, Salesforce would answer 414. In a Composite call's body, as Salesforce
            # advises, it is one call all the same (its later pages' URLs are short).
            (answer,) = self._composite_gets([path])
            if isinstance(answer, SalesforceApiError):
                raise answer
            return answer
        headers = {"Sforce-Query-Options": f"batchSize={page_size}"} if page_size else {}
        try:
            return self.conn.query(soql, include_deleted=include_deleted, headers=headers)
        except ClientError as exc:
            raise _error_from_client(exc) from None

    def _query_more(self, next_url: str, page_size: int | None = None) -> dict:
        self._check_budget()
        headers = {"Sforce-Query-Options": f"batchSize={page_size}"} if page_size else {}
        try:
            return self.conn.query_more(next_url, identifier_is_url=True, headers=headers)
        except ClientError as exc:
            raise _error_from_client(exc) from None

    def iter_query_pages(
        self, soql: str, *, include_deleted: bool = False, page_size: int | None = None, answered: Any = None
    ) -> Iterator[list[dict]]:
        """Yield the query's records page by page; child subqueries are completed per record.

        ``answered``: the query's first page when ``read_together`` read it already (the later
        pages are read here), or the error its subrequest got (raised here)."""
        if isinstance(answered, SalesforceApiError):
            raise answered
        result = self._query(soql, include_deleted, page_size) if answered is None else answered
        while True:
            self._count_result_page()
            records = result.get("records", [])
            for record in records:
                self._complete_children(record)
            yield records
            next_url = result.get("nextRecordsUrl")
            if result.get("done", True) or not next_url:
                return
            result = self._query_more(next_url, page_size)

    def _complete_children(self, record: dict) -> None:
        for value in record.values():
            if isinstance(value, dict) and "records" in value and not value.get("done", True):
                page = value
                while not page.get("done", True) and page.get("nextRecordsUrl"):
                    page = self._query_more(page["nextRecordsUrl"])
                    value["records"].extend(page.get("records", []))
                value["done"] = True
                value.pop("nextRecordsUrl", None)

    def update_records(self, records: list[dict]) -> list[dict]:
        """Update records with sObject Collections, 200 a call, ``allOrNone=false``.

        ``records`` carry ``attributes.type`` and ``id``. Returns one result per record, in order:
        ``{"id", "success", "errors": [{"statusCode", "message", "fields"}]}`` (None for a record
        Salesforce gave no result for).

        Records are sent grouped by object: Salesforce processes a call's records in chunks, a new
        one wherever the object changes, and refuses a call of more than 10 chunks (records of a
        write-back's batch come in the outbox's order, Orders and Accounts alternating)."""
        by_object = sorted(range(len(records)), key=lambda i: records[i]["attributes"]["type"])  # (stable)
        results: list[dict | None] = [None] * len(records)
        for start in range(0, len(by_object), COLLECTION_LIMIT):
            positions = by_object[start : start + COLLECTION_LIMIT]
            answer = self.call("PATCH", "composite/sobjects", json={"allOrNone": False, "records": [records[i] for i in positions]})
            for position, result in zip(positions, answer or [], strict=False):
                results[position] = result
        return results

    def upsert_records(self, sobject: str, external_id_field: str, records: list[dict]) -> list[dict]:
        """Upsert records of ``sobject`` by ``external_id_field`` with sObject Collections, 200 a call,
        ``allOrNone=false``; one result per record, in order (``created`` tells a new record)."""
        results: list[dict] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = records[start : start + COLLECTION_LIMIT]
            answer = self.call("PATCH", f"composite/sobjects/{sobject}/{external_id_field}", json={"allOrNone": False, "records": chunk})
            results.extend(answer or [])
        return results

    # ---- Bulk API 2.0 -------------------------------------------------------------------

    @cached_property
    def bulk_settings(self) -> BulkSettings:
        """Bulk polling and downloads: the hook's arguments, else the connection's extras, else the defaults."""
        extras = self.get_connection(self.conn_id).extra_dejson

        def setting(name: str) -> Any:
            value = self._bulk_options[name]
            return self._get_field(extras, name) if value is None else value

        return BulkSettings.from_values(
            poll_seconds=setting("bulk_poll_seconds"),
            poll_max_seconds=setting("bulk_poll_max_seconds"),
            result_workers=setting("bulk_result_workers"),
        )

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One call to a full URL, errors translated (the budget already checked or reserved)."""
        try:
            return self.conn._call_salesforce(method, url, **kwargs)
        except ClientError as exc:
            raise _error_from_client(exc) from None

    def _call_url(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        self._check_budget()
        return self._send(method, url, **kwargs)

    def _absolute_url(self, url: str) -> str:
        """A URL Salesforce gave (``/services/data/...``, or relative to the API's base) made whole."""
        if url.startswith(("https://", "http://")):
            return url
        if url.startswith("/"):
            return f"{self.instance_url}{url}"
        return f"{self.conn.base_url}{url}"

    def _wait_for_bulk_job(
        self, kind: str, job_id: str, sleep: Callable[[float], Any], clock: Callable[[], float], started_at: float | None = None
    ) -> dict:
        """Poll a Bulk job (``kind`` ``query`` or ``ingest``) until it is final; its last job info."""
        return self._wait_for_bulk_jobs(kind, [job_id], sleep, clock, started_at)[job_id]

    def _wait_for_bulk_jobs(
        self,
        kind: str,
        job_ids: list[str],
        sleep: Callable[[float], Any],
        clock: Callable[[], float],
        started_at: float | None = None,
        expected_seconds: float | None = None,
    ) -> dict[str, dict]:
        """Poll Bulk jobs of one ``kind`` until each is final; their last job infos, by id.

        No job is done the moment it is created or closed, so the first status calls come
        ``bulk_poll_seconds`` after ``started_at`` (when the jobs were closed, or the query job
        created; default now); each next wait is 1.5 times longer, up to ``bulk_poll_max_seconds``.
        A long job thus costs a few calls for its first minute and one per interval after it,
        instead of one per half second. The waits count from ``started_at``: time spent on other
        work meanwhile is not waited again, and a poll it let pass is made once, not made up.
        Jobs waited for together share the polls: each asks about the jobs not yet final.
        ``expected_seconds``: how long the jobs should take (learned from earlier ones); the first
        poll comes then, in place of the earlier ones, and if they are not done the growing waits
        go on where they are by then: at most one status call more than without it.
        """
        started_at = clock() if started_at is None else started_at
        deadline = started_at + BULK_TIMEOUT_SECONDS
        intervals = self.bulk_settings.poll_intervals()
        scheduled = started_at + next(intervals)  # the growing waits' next poll
        # The expected end replaces the polls before it; the growing waits go on after it.
        poll_at = scheduled if expected_seconds is None else started_at + expected_seconds
        waiting, infos = list(job_ids), {}
        while True:
            now = clock()
            if poll_at > now:
                sleep(poll_at - now)
            for job_id in list(waiting):
                info = self.call("GET", f"jobs/{kind}/{job_id}")
                if info.get("state") in BULK_FINAL_STATES:
                    infos[job_id] = info
                    waiting.remove(job_id)
            if not waiting:
                return infos
            now = clock()
            if now > deadline:
                raise SalesforceApiError(f"Bulk {kind} job {waiting[0]} did not complete within {BULK_TIMEOUT_SECONDS} s", code="BULK_JOB_TIMEOUT")
            while scheduled <= now:
                scheduled += next(intervals)
            poll_at = scheduled

    def start_bulk_query(self, soql: str, *, include_deleted: bool = False, clock: Callable[[], float] = time.monotonic) -> str:
        """Create a Bulk API 2.0 query job; its id. Salesforce starts working on it at once, so a
        job started before the previous one is read runs alongside it (and its waits count from
        here: ``clock`` is the one its pages are read with)."""
        started_at = clock()
        job = self.call(
            "POST",
            "jobs/query",
            json={"operation": "queryAll" if include_deleted else "query", "query": soql, "columnDelimiter": "COMMA", "lineEnding": "LF"},
        )
        self._query_jobs_started[job["id"]] = started_at
        return job["id"]

    def iter_bulk_query_pages(
        self,
        soql: str,
        *,
        job_id: str | None = None,
        include_deleted: bool = False,
        max_records: int = BULK_PAGE_RECORDS,
        chunk_records: int = BULK_CHUNK_RECORDS,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[list[dict]]:
        """Run a Bulk API 2.0 query job and yield its results as lists of flat records.

        Each result page (``maxRecords`` per call) is read as a stream and yielded in chunks of at
        most ``chunk_records``, so a large page never sits in memory whole. Records are keyed by the
        CSV header (dotted relationship paths) with values typed as the REST API would return
        them (numbers, booleans, None for an empty cell), so both paths stage identical records.

        A job with more than one page has its pages listed by ``resultPages`` and downloaded
        ``bulk_result_workers`` at a time while earlier ones are read; they are still yielded in
        order. A job of one page, or an org without ``resultPages`` (API versions before 58.0),
        is read page after page by locator.

        ``job_id``: the job :meth:`start_bulk_query` started for ``soql``; else one is started here.
        """
        if job_id is None:
            job_id = self.start_bulk_query(soql, include_deleted=include_deleted, clock=clock)
        info = self._wait_for_bulk_job("query", job_id, sleep, clock, self._query_jobs_started.pop(job_id, None))
        state = info.get("state")
        if state != "JobComplete":
            raise SalesforceApiError(f"Bulk query job {job_id} {state.lower()}: {info.get('errorMessage')}", code="BULK_JOB_" + state.upper())
        urls = self._result_page_urls(job_id, info, max_records)
        if urls is None:
            yield from self._locator_pages(job_id, soql, max_records, chunk_records)
            return
        for page in self._download_in_order(urls):
            with page:
                self._count_result_page()
                yield from self._csv_chunks(page.content(), soql, chunk_records)

    def _locator_pages(self, job_id: str, soql: str, max_records: int, chunk_records: int) -> Iterator[list[dict]]:
        """The job's result pages one after another, each read from the socket as it arrives."""
        locator = ""
        while True:
            params: dict[str, Any] = {"maxRecords": max_records}
            if locator:
                params["locator"] = locator
            response = self._call_url("GET", f"{self.conn.bulk2_url}query/{job_id}/results", params=params, stream=True)
            self._count_result_page()
            with response:
                response.raw.decode_content = True  # gzip, if the server compressed the page
                response.raw.auto_close = False  # else the wrapper below reads a closed file at the end of the page
                yield from self._csv_chunks(response.raw, soql, chunk_records)
            locator = response.headers.get("Sforce-Locator", "null")
            if not locator or locator == "null":
                return

    def _result_page_urls(self, job_id: str, info: dict, max_records: int) -> Iterator[str] | None:
        """The URLs of the job's result pages, from ``resultPages`` (five an answer, the next answer
        asked for when its URLs are needed); None when the pages are read by locator instead: one
        page (``resultPages`` would be a call more), one worker, or an org that has no ``resultPages``."""
        records = info.get("numberRecordsProcessed")
        if self.bulk_settings.result_workers < 2 or self._result_pages_unsupported:
            return None
        if isinstance(records, int) and records <= max_records:
            return None
        try:
            answer = self.call("GET", f"jobs/query/{job_id}/resultPages", params={"maxRecords": max_records})
        except SalesforceApiError as exc:
            if exc.status != 404:
                raise
            answer = None
        if not isinstance(answer, dict) or "resultPages" not in answer:
            log.info("Salesforce has no resultPages here (API version %s): Bulk result pages are read one by one", self.conn.sf_version)
            self._result_pages_unsupported = True
            return None
        return self._follow_result_pages(answer)

    def _follow_result_pages(self, answer: dict) -> Iterator[str]:
        while True:
            for page in answer.get("resultPages") or []:
                yield self._absolute_url(page["resultUrl"])
            next_url = answer.get("nextRecordsUrl")
            if answer.get("done", True) or not next_url:
                return
            answer = self.conn.parse_result_to_json(self._call_url("GET", self._absolute_url(next_url)))

    def _download_in_order(self, urls: Iterator[str]) -> Iterator[_DownloadedPage]:
        """Download the pages at ``urls`` in ``bulk_result_workers`` threads; hand them over in order.

        At most ``workers`` pages are downloading or waiting besides the one handed over, each in
        a spool (memory, then disk). Each download takes its call from the budget when it is
        queued; an error, a page's or the next ``resultPages`` answer's, is raised at its turn.
        """
        workers = self.bulk_settings.result_workers
        pending: deque[Future[_DownloadedPage]] = deque()
        more = True
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bulk-results")

        def queue_downloads() -> None:
            nonlocal more
            while more and len(pending) < workers:
                try:
                    url = next(urls, None)
                    if url is not None:
                        self._reserve_call()
                except Exception as exc:  # noqa: BLE001 - raised when its page's turn comes
                    failed: Future[_DownloadedPage] = Future()
                    failed.set_exception(exc)
                    pending.append(failed)
                    url = None
                if url is None:
                    more = False
                    return
                pending.append(pool.submit(self._download_page, url))

        try:
            queue_downloads()
            while pending:
                page = pending.popleft().result()
                queue_downloads()
                yield page
        finally:
            for future in pending:
                if future.cancel():  # never started: its call was not made
                    self._release_call()
            pool.shutdown(wait=True)
            for future in pending:
                if not future.cancelled() and future.exception() is None:
                    future.result().close()

    def _download_page(self, url: str) -> _DownloadedPage:
        """One result page copied into a spool as it was sent (gzip-compressed: we ask for it)."""
        try:
            response = self._send("GET", url, stream=True, headers={"Accept-Encoding": "gzip"})
        finally:
            self._release_call()  # counted, if it was answered
        with response:
            page = _DownloadedPage(tempfile.SpooledTemporaryFile(max_size=BULK_SPOOL_BYTES), response.headers.get("Content-Encoding", ""))
            try:
                for block in response.raw.stream(1 << 20, decode_content=False):
                    page.spool.write(block)
            except urllib3.exceptions.HTTPError as exc:  # as requests words a broken body
                page.close()
                raise requests.ConnectionError(f"Bulk result page broken off: {exc}") from exc
            except BaseException:
                page.close()
                raise
        page.spool.seek(0)
        return page

    def _csv_chunks(self, stream: Any, soql: str, chunk_records: int) -> Iterator[list[dict]]:
        """A Bulk CSV result page from a binary stream, in chunks of typed records."""
        reader = csv.reader(io.TextIOWrapper(stream, encoding="utf-8", newline=""))
        header = next(reader, None)
        if not header:
            return
        make = _record_maker(header, _converters(header, self.column_types(soql, header)))
        width = len(header)
        chunk: list[dict] = []
        for row in reader:
            if len(row) != width:
                raise ValueError(f"Bulk result row has {len(row)} cells for {width} columns: {header[:5]}...")
            chunk.append(make(row))
            if len(chunk) >= chunk_records:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def bulk_update(
        self,
        sobject: str,
        records: list[dict],
        *,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[dict]:
        """Update records with one Bulk API 2.0 ingest job; results as ``update_records`` gives them.

        ``records`` carry ``id`` and the fields to set (no ``attributes``). An empty CSV cell leaves
        a field unchanged, so records may set different fields.
        """
        return self.bulk_update_objects([(sobject, records)], sleep=sleep, clock=clock)[0]

    def bulk_update_objects(
        self,
        updates: list[tuple[str, list[dict]]],
        *,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[list[dict]]:
        """``bulk_update`` of several objects' records, one ingest job per object: every job is
        uploaded and closed before any is waited for, so Salesforce processes them at the same time,
        and they are polled together. The results of each, in the order of ``updates``."""
        if not updates:
            return []
        closed = [self._close_update_job(sobject, records, clock) for sobject, records in updates]
        job_ids, closed_at = [job_id for job_id, _ in closed], max(at for _, at in closed)  # waits from the last close
        with self._ingest_timing:
            # Jobs closed while earlier ones are still processing (the write-back's next round) are
            # asked about once those are done, not on the growing waits meanwhile: the earlier jobs'
            # processing time tells when these should be (the write-back settles rounds in order).
            self._ingest_timing.wait_for(lambda: self._ingest_seconds is not None or not self._ingest_waits)
            # The earlier jobs' processing time, a tenth more for safety, tells when these are done.
            expected = None if self._ingest_seconds is None else self._ingest_seconds * 1.1
            self._ingest_waits += 1
        try:
            infos = self._wait_for_bulk_jobs("ingest", job_ids, sleep, clock, closed_at, expected)
            times = [info.get("totalProcessingTime") for info in infos.values()]
            if times and all(isinstance(ms, int | float) and ms >= 0 for ms in times):
                self._ingest_seconds = max(times) / 1000
        finally:
            with self._ingest_timing:
                self._ingest_waits -= 1
                self._ingest_timing.notify_all()
        return [self._update_results(job_id, infos[job_id], records) for job_id, (_, records) in zip(job_ids, updates, strict=True)]

    def _close_update_job(self, sobject: str, records: list[dict], clock: Callable[[], float]) -> tuple[str, float]:
        """Create an update job for ``records``, upload them as CSV and close it; its id and when it was closed."""
        columns = sorted({k for r in records for k in r if k not in ("id", "attributes")})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["Id", *columns])
        # An empty value leaves the field as it is (a column another record of the job sets); a
        # field set to null is written #N/A, as Bulk 2.0 reads it.
        writer.writerows([record["id"], *((BULK_NULL if record[c] is None else record[c]) if c in record else "" for c in columns)] for record in records)
        job = self.call(
            "POST",
            "jobs/ingest",
            json={"object": sobject, "operation": "update", "contentType": "CSV", "columnDelimiter": "COMMA", "lineEnding": "LF"},
        )
        job_id = job["id"]
        self._call_url(
            "PUT",
            f"{self.conn.bulk2_url}ingest/{job_id}/batches",
            data=buffer.getvalue().encode("utf-8"),
            headers={"Content-Type": "text/csv; charset=UTF-8"},
        )
        closed_at = clock()
        self.call("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
        return job_id, closed_at

    def _update_results(self, job_id: str, info: dict, records: list[dict]) -> list[dict]:
        """Each record's result from a finished ingest job. A job that processed every record needs
        no result file when none failed, and only ``failedResults`` when some did (the others
        succeeded); otherwise both files are read, and a record in neither was not processed."""
        failed = info.get("numberRecordsFailed")
        processed_all = info.get("state") == "JobComplete" and info.get("numberRecordsProcessed") == len(records) and isinstance(failed, int)
        outcome: dict[str, dict] = {}
        if not processed_all:
            for row in self._bulk_csv(f"ingest/{job_id}/successfulResults/"):
                record_id = row.get("Id") or row.get("sf__Id")
                outcome[record_id] = {"id": record_id, "success": True, "errors": []}
        if not processed_all or failed:
            for row in self._bulk_csv(f"ingest/{job_id}/failedResults/"):
                record_id = row.get("Id") or row.get("sf__Id")
                code, _, message = (row.get("sf__Error") or "UNKNOWN_EXCEPTION:").partition(":")
                outcome[record_id] = {"id": record_id, "success": False, "errors": [{"statusCode": code, "message": message, "fields": []}]}
        if processed_all:
            return [outcome.get(r["id"], {"id": r["id"], "success": True, "errors": []}) for r in records]
        # records in neither file were not processed (a failed or aborted job): a transient outcome
        unprocessed = {"statusCode": "BULK_UNPROCESSED", "message": f"not processed by bulk job {job_id} ({info.get('state')})", "fields": []}
        return [outcome.get(r["id"], {"id": r["id"], "success": False, "errors": [unprocessed]}) for r in records]

    def _bulk_csv(self, path: str) -> list[dict]:
        response = self._call_url("GET", f"{self.conn.bulk2_url}{path}")
        return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))

    def column_types(self, soql: str, columns: list[str]) -> dict[str, str]:
        """Field types of a query's (dotted) columns, from the describes of the objects on the paths.

        The paths are followed a level at a time: the objects a level reaches (those not described
        yet) are described together, one call for the level (``read_together``)."""
        root = _FROM.search(soql)
        if not root:
            return {}
        types: dict[str, str] = {}
        reached = {column: root.group(1) for column in columns}  # each column's object at this level
        level = 0
        while reached:
            self.read_together(describes=reached.values())
            following: dict[str, str] = {}
            for column, obj in reached.items():
                parts = column.split(".")
                fields = self.describe(obj)["fields"]  # cached above
                if level == len(parts) - 1:
                    field = next((f for f in fields if f["name"].lower() == parts[-1].lower()), None)
                    if field:
                        types[column] = field["type"]
                    continue
                relationship = parts[level].lower()
                target = next((f for f in fields if (f.get("relationshipName") or "").lower() == relationship), None)
                if target is not None and target.get("referenceTo"):
                    following[column] = target["referenceTo"][0]
            reached, level = following, level + 1
        return {column: types[column] for column in columns if column in types}


_FROM = re.compile(r"\bFROM\s+([A-Za-z][A-Za-z0-9_]*)", re.IGNORECASE)
# A REST answer's JSON as simple-salesforce reads it (every number with a fraction or exponent a
# Decimal, the rest ints), in plain dicts: several times faster on a page of 2,000 orders.
_RESPONSE_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def _parse_response(response: requests.Response) -> Any:
    try:
        return _RESPONSE_DECODER.decode(response.content)
    except msgspec.DecodeError:  # what msgspec does not read (NaN, another encoding): as simple-salesforce would
        return response.json(object_pairs_hook=OrderedDict, parse_float=Decimal)


def _boolean(text: str) -> bool:
    return text.lower() == "true"


def _integer(text: str) -> int:
    return int(Decimal(text))


def _as_is(text: str) -> str:
    return text


def _record_maker(header: list[str], converters: list[Any]) -> Callable[[list[str]], dict]:
    """A function making a record of a CSV row of ``header``'s columns: "" as None, the other cells
    of a typed column converted, the last of columns of the same name kept where the first stands.

    One dict display compiled for the header: a dict built cell by cell, then its typed cells
    converted one by one, was most of the parsing time."""
    last = {name: index for index, name in enumerate(header)}
    namespace: dict[str, Any] = {}
    values = []
    for name, index in last.items():  # (names as literals by repr, cells and converters by position)
        if converters[index] is _as_is:
            values.append(f"{name!r}: c{index} or None")
        else:
            namespace[f"f{index}"] = converters[index]
            values.append(f"{name!r}: f{index}(c{index}) if c{index} else None")
    cells = "".join(f"c{index}, " for index in range(len(header)))
    exec(f"def make(row):\n    {cells}= row\n    return {{{', '.join(values)}}}", namespace)  # noqa: S102
    return namespace["make"]


def _converters(header: list[str], types: dict[str, str]) -> list[Any]:
    """Per CSV column, the function giving a non-empty cell its REST-like value (numbers and
    booleans parsed, text as is); an empty cell is None whatever the column."""
    by_type = {**dict.fromkeys(_NUMERIC_TYPES, Decimal), "int": _integer, "boolean": _boolean}
    return [by_type.get(types.get(column), _as_is) for column in header]
