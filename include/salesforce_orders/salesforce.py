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
  sObject Collections updates (200 records a call, ``allOrNone=false``).
"""

from __future__ import annotations

import csv
import io
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from airflow.providers.salesforce.hooks.salesforce import SalesforceHook
from requests.adapters import HTTPAdapter
from simple_salesforce import api as sf_api
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.exceptions import SalesforceError as ClientError
from urllib3.util.retry import Retry

log = logging.getLogger(__name__)

COLLECTION_LIMIT = 200  # records per sObject Collections call
BULK_PAGE_RECORDS = 100_000  # records per Bulk API 2.0 result page (maxRecords): fewer calls; pages are streamed
BULK_CHUNK_RECORDS = 5_000  # records per chunk yielded from a streamed Bulk result page: bounds memory
BULK_POLL_SECONDS = 0.5
BULK_TIMEOUT_SECONDS = 3600
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

    @property
    def budget_left(self) -> int | None:
        """Calls still allowed under the budget; None = unlimited."""
        return None if self.budget is None else max(self.budget - self.calls, 0)

    @property
    def org_remaining(self) -> int | None:
        if self.org_used is None or self.org_max is None:
            return None
        return max(self.org_max - self.org_used, 0)


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
    content = getattr(exc, "content", None)
    code, message = None, str(exc)
    if isinstance(content, list) and content and isinstance(content[0], dict):
        code = content[0].get("errorCode")
        message = content[0].get("message", message)
    status = getattr(exc, "status", None)
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
    ) -> None:
        super().__init__(salesforce_conn_id=salesforce_conn_id)
        self._client_name = client_name
        self._timeout = timeout
        self._max_retries = max_retries
        self._backoff_factor = backoff_factor
        self.usage = ApiUsage()
        self._describes: dict[str, dict] = {}

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
        if "/services/data/" in (response.url or ""):
            self.usage.calls += 1
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.usage.org_used, self.usage.org_max = int(match.group(1)), int(match.group(2))

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
        log.info("API budget: %d calls (%.0f%% of %d remaining today)", int(remaining * share), share * 100, remaining)

    def _check_budget(self) -> None:
        if self.usage.budget is not None and self.usage.calls >= self.usage.budget:
            raise ApiBudgetExceeded(
                f"Stopped before exceeding this run's API budget ({self.usage.budget} calls, "
                f"org usage {self.usage.org_used}/{self.usage.org_max}); the next run continues",
                code="API_BUDGET_EXCEEDED",
            )

    def limit_calls(self, calls: int | None) -> None:
        """Carry what is left of the run's budget into this hook: at most ``calls`` more (None: no limit)."""
        if calls is not None:
            self.usage.budget = self.usage.calls + max(calls, 0)

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

    def count(self, soql: str) -> int:
        return int(self._query(soql, include_deleted=False)["totalSize"])

    def _query(self, soql: str, include_deleted: bool, page_size: int | None = None) -> dict:
        self._check_budget()
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
        self, soql: str, *, include_deleted: bool = False, page_size: int | None = None
    ) -> Iterator[list[dict]]:
        """Yield the query's records page by page; child subqueries are completed per record."""
        result = self._query(soql, include_deleted, page_size)
        while True:
            self.usage.result_pages += 1
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
        ``{"id", "success", "errors": [{"statusCode", "message", "fields"}]}``.
        """
        results: list[dict] = []
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = records[start : start + COLLECTION_LIMIT]
            answer = self.call("PATCH", "composite/sobjects", json={"allOrNone": False, "records": chunk})
            results.extend(answer or [])
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

    def iter_bulk_query_pages(
        self,
        soql: str,
        *,
        include_deleted: bool = False,
        max_records: int = BULK_PAGE_RECORDS,
        chunk_records: int = BULK_CHUNK_RECORDS,
        sleep: Any = time.sleep,
    ) -> Iterator[list[dict]]:
        """Run a Bulk API 2.0 query job and yield its results as lists of flat records.

        Each result page (``maxRecords`` per call) is streamed and yielded in chunks of at most
        ``chunk_records``, so a large page never sits in memory whole. Records are keyed by the
        CSV header (dotted relationship paths) with values typed as the REST API would return
        them (numbers, booleans, None for an empty cell), so both paths stage identical records.
        """
        job = self.call(
            "POST",
            "jobs/query",
            json={"operation": "queryAll" if include_deleted else "query", "query": soql, "columnDelimiter": "COMMA", "lineEnding": "LF"},
        )
        job_id = job["id"]
        deadline = time.monotonic() + BULK_TIMEOUT_SECONDS
        while True:
            info = self.call("GET", f"jobs/query/{job_id}")
            state = info.get("state")
            if state == "JobComplete":
                break
            if state in ("Failed", "Aborted"):
                raise SalesforceApiError(f"Bulk query job {job_id} {state.lower()}: {info.get('errorMessage')}", code="BULK_JOB_" + state.upper())
            if time.monotonic() > deadline:
                raise SalesforceApiError(f"Bulk query job {job_id} did not complete within {BULK_TIMEOUT_SECONDS} s", code="BULK_JOB_TIMEOUT")
            sleep(BULK_POLL_SECONDS)
        locator = ""
        while True:
            params: dict[str, Any] = {"maxRecords": max_records}
            if locator:
                params["locator"] = locator
            self._check_budget()
            try:
                response = self.conn._call_salesforce(
                    "GET", f"{self.conn.bulk2_url}query/{job_id}/results", params=params, stream=True
                )
            except ClientError as exc:
                raise _error_from_client(exc) from None
            self.usage.result_pages += 1
            with response:
                yield from self._stream_csv_records(response, soql, chunk_records)
            locator = response.headers.get("Sforce-Locator", "null")
            if not locator or locator == "null":
                return

    def _stream_csv_records(self, response: requests.Response, soql: str, chunk_records: int) -> Iterator[list[dict]]:
        """A Bulk CSV result page, read from the socket as it arrives, in chunks of typed records."""
        response.raw.decode_content = True  # gzip, if the server compressed the page
        response.raw.auto_close = False  # else the wrapper below reads a closed file at the end of the page
        reader = csv.reader(io.TextIOWrapper(response.raw, encoding="utf-8", newline=""))
        header = next(reader, None)
        if not header:
            return
        # Text is most columns: every cell is taken as it is ("" as None), then only the typed
        # columns are converted (a call per cell was most of the parsing time).
        typed = [(name, to_value) for name, to_value in zip(header, _converters(header, self.column_types(soql, header)), strict=True) if to_value is not _as_is]
        width = len(header)
        chunk: list[dict] = []
        for row in reader:
            if len(row) != width:
                raise ValueError(f"Bulk result row has {len(row)} cells for {width} columns: {header[:5]}...")
            record = {name: text or None for name, text in zip(header, row, strict=False)}  # width checked above
            for name, to_value in typed:
                text = record[name]
                if text is not None:
                    record[name] = to_value(text)
            chunk.append(record)
            if len(chunk) >= chunk_records:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def bulk_update(self, sobject: str, records: list[dict], *, sleep: Any = time.sleep) -> list[dict]:
        """Update records with one Bulk API 2.0 ingest job; results as ``update_records`` gives them.

        ``records`` carry ``id`` and the fields to set (no ``attributes``). An empty CSV cell leaves
        a field unchanged, so records may set different fields.
        """
        columns = sorted({k for r in records for k in r if k not in ("id", "attributes")})
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["Id", *columns])
        for record in records:
            writer.writerow([record["id"], *(("" if record.get(c) is None else record.get(c)) for c in columns)])
        job = self.call(
            "POST",
            "jobs/ingest",
            json={"object": sobject, "operation": "update", "contentType": "CSV", "columnDelimiter": "COMMA", "lineEnding": "LF"},
        )
        job_id = job["id"]
        self._check_budget()
        try:
            self.conn._call_salesforce(
                "PUT",
                f"{self.conn.bulk2_url}ingest/{job_id}/batches",
                data=buffer.getvalue().encode("utf-8"),
                headers={"Content-Type": "text/csv; charset=UTF-8"},
            )
        except ClientError as exc:
            raise _error_from_client(exc) from None
        self.call("PATCH", f"jobs/ingest/{job_id}", json={"state": "UploadComplete"})
        deadline = time.monotonic() + BULK_TIMEOUT_SECONDS
        while True:
            info = self.call("GET", f"jobs/ingest/{job_id}")
            if info.get("state") in ("JobComplete", "Failed", "Aborted"):
                break
            if time.monotonic() > deadline:
                raise SalesforceApiError(f"Bulk ingest job {job_id} did not complete within {BULK_TIMEOUT_SECONDS} s", code="BULK_JOB_TIMEOUT")
            sleep(BULK_POLL_SECONDS)
        outcome: dict[str, dict] = {}
        for kind in ("successfulResults", "failedResults"):
            for row in self._bulk_csv(f"ingest/{job_id}/{kind}/"):
                record_id = row.get("Id") or row.get("sf__Id")
                if kind == "successfulResults":
                    outcome[record_id] = {"id": record_id, "success": True, "errors": []}
                else:
                    code, _, message = (row.get("sf__Error") or "UNKNOWN_EXCEPTION:").partition(":")
                    outcome[record_id] = {"id": record_id, "success": False, "errors": [{"statusCode": code, "message": message, "fields": []}]}
        # records in neither file were not processed (a failed or aborted job): a transient outcome
        unprocessed = {"statusCode": "BULK_UNPROCESSED", "message": f"not processed by bulk job {job_id} ({info.get('state')})", "fields": []}
        return [outcome.get(r["id"], {"id": r["id"], "success": False, "errors": [unprocessed]}) for r in records]

    def _bulk_csv(self, path: str) -> list[dict]:
        self._check_budget()
        try:
            response = self.conn._call_salesforce("GET", f"{self.conn.bulk2_url}{path}")
        except ClientError as exc:
            raise _error_from_client(exc) from None
        return list(csv.DictReader(io.StringIO(response.content.decode("utf-8"))))

    def column_types(self, soql: str, columns: list[str]) -> dict[str, str]:
        """Field types of a query's (dotted) columns, from the describes of the objects on the paths."""
        root = _FROM.search(soql)
        if not root:
            return {}
        types: dict[str, str] = {}
        for column in columns:
            obj, parts = root.group(1), column.split(".")
            for relationship in parts[:-1]:
                fields = self.describe(obj)["fields"]
                target = next((f for f in fields if (f.get("relationshipName") or "").lower() == relationship.lower()), None)
                if target is None or not target.get("referenceTo"):
                    obj = None
                    break
                obj = target["referenceTo"][0]
            if obj is None:
                continue
            field = next((f for f in self.describe(obj)["fields"] if f["name"].lower() == parts[-1].lower()), None)
            if field:
                types[column] = field["type"]
        return types


_FROM = re.compile(r"\bFROM\s+([A-Za-z][A-Za-z0-9_]*)", re.IGNORECASE)


def _boolean(text: str) -> bool:
    return text.lower() == "true"


def _integer(text: str) -> int:
    return int(Decimal(text))


def _as_is(text: str) -> str:
    return text


def _converters(header: list[str], types: dict[str, str]) -> list[Any]:
    """Per CSV column, the function giving a non-empty cell its REST-like value (numbers and
    booleans parsed, text as is); an empty cell is None whatever the column."""
    by_type = {**dict.fromkeys(_NUMERIC_TYPES, Decimal), "int": _integer, "boolean": _boolean}
    return [by_type.get(types.get(column), _as_is) for column in header]
