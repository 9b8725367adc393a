"""Bulk API 2.0 jobs: query jobs that page a snapshot out as CSV, ingest jobs that run uploaded
CSV rows through the store (wire spec §6).

A query job snapshots its root ids when it is created; an ingest job processes its rows when
it is closed (``UploadComplete``). Both then report ``InProgress`` for a short, size-dependent
while before ``JobComplete``, so clients see the state progression a real org shows.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import SalesforceError, not_found
from .ids import make_id
from .schema import SObject
from .soql import PreparedQuery

JOB_KEY_PREFIX = "750"
MAX_JOBS_KEPT = 500
DEFAULT_RESULTS_PAGE = 50_000
MIN_PROCESSING_SECONDS = 0.05
ROWS_PER_SECOND = 200_000
_QUOTED = re.compile(r'"[^"]*"')  # a quoted CSV value ("" inside one splits it in two: still all quoted)
_BARE_LF = re.compile(r"(?<!\r)\n")
NULL_MARKER = "#N/A"  # an ingest value that sets a field to null (an empty value leaves it alone)

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
QUERY_OPERATIONS = ("query", "queryAll")
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")


class JobState(StrEnum):
    OPEN = "Open"
    UPLOAD_COMPLETE = "UploadComplete"
    IN_PROGRESS = "InProgress"
    JOB_COMPLETE = "JobComplete"
    FAILED = "Failed"
    ABORTED = "Aborted"


def invalid_job(message: str) -> SalesforceError:
    return SalesforceError("INVALIDJOB", message)


def api_error(message: str) -> SalesforceError:
    return SalesforceError("API_ERROR", message)


@dataclass
class CsvFormat:
    column_delimiter: str = "COMMA"
    line_ending: str = "LF"

    @classmethod
    def from_request(cls, body: dict) -> CsvFormat:
        fmt = cls(body.get("columnDelimiter") or "COMMA", body.get("lineEnding") or "LF")
        if fmt.column_delimiter not in DELIMITERS:
            raise invalid_job(f"Invalid column delimiter: {fmt.column_delimiter}")
        if fmt.line_ending not in LINE_ENDINGS:
            raise invalid_job(f"Invalid line ending: {fmt.line_ending}")
        return fmt

    def write(self, header: list[str], rows: list[list[Any]]) -> str:
        """Every value quoted, null as an empty field, a header row first (as Bulk 2.0 writes)."""
        delimiter = DELIMITERS[self.column_delimiter]
        newline = LINE_ENDINGS[self.line_ending]
        lines = [delimiter.join(map(_csv_field, header))]
        lines.extend(delimiter.join(map(_csv_field, row)) for row in rows)
        return newline.join(lines) + newline

    def line_ending_error(self, data: str) -> str | None:
        """Salesforce fails an ingest job whose data ends its rows otherwise than the job's
        ``lineEnding`` says; line breaks inside quoted values do not count. None when they match."""
        outside_quotes = _QUOTED.sub("", data)
        crlf = "\r\n" in outside_quotes
        mismatch = crlf if self.line_ending == "LF" else _BARE_LF.search(outside_quotes) is not None
        if not mismatch:
            return None
        return f"ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {self.line_ending}"

    def read(self, data: str) -> tuple[list[str], list[list[str]]]:
        reader = csv.reader(io.StringIO(data, newline=""), delimiter=DELIMITERS[self.column_delimiter])
        rows = [row for row in reader if row]
        if not rows:
            return [], []
        return rows[0], rows[1:]


def _csv_field(value: Any) -> str:
    """One CSV field: empty for null, otherwise the value's text quoted, inner quotes doubled.
    (One call per value: a query results page holds millions of them.)"""
    if value is None:
        return ""
    if value.__class__ is not str:
        value = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return '"' + value.replace('"', '""') + '"'


def encode_locator(offset: int) -> str:
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def decode_locator(locator: str) -> int:
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
        offset = int(text)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise api_error(f"Invalid locator: {locator}") from exc
    if offset < 0:
        raise api_error(f"Invalid locator: {locator}")
    return offset


def _timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000+0000")


@dataclass
class Job:
    """What query and ingest jobs share: identity, format, and the state clock."""

    id: str
    operation: str
    object_name: str
    csv_format: CsvFormat
    api_version: str
    created_by: str
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    state: JobState = JobState.UPLOAD_COMPLETE
    error_message: str | None = None
    started_at: float | None = None  # monotonic: when processing began
    processing_seconds: float = 0.0

    def current_state(self) -> JobState:
        """``InProgress`` while the simulated processing time runs, then ``JobComplete``."""
        if self.state is JobState.IN_PROGRESS and self.started_at is not None:
            if time.monotonic() - self.started_at >= self.processing_seconds:
                self.state = JobState.JOB_COMPLETE
        return self.state

    def start_processing(self, rows: int, queued_seconds: float = 0.0) -> None:
        """``queued_seconds``: the org's own delay on top (a real org queues and processes jobs for
        seconds to minutes: the ``bulk_job_delay_ms`` fault)."""
        self.state = JobState.IN_PROGRESS
        self.started_at = time.monotonic()
        self.processing_seconds = MIN_PROCESSING_SECONDS + rows / ROWS_PER_SECOND + queued_seconds

    def base_info(self) -> dict:
        return {
            "id": self.id,
            "operation": self.operation,
            "object": self.object_name,
            "createdById": self.created_by,
            "createdDate": _timestamp(self.created),
            "systemModstamp": _timestamp(dt.datetime.now(dt.UTC)),
            "state": self.current_state().value,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.api_version),
            "lineEnding": self.csv_format.line_ending,
            "columnDelimiter": self.csv_format.column_delimiter,
        }

    def elapsed_ms(self) -> int:
        if self.started_at is None:
            return 0
        return int(min(time.monotonic() - self.started_at, self.processing_seconds) * 1000)


@dataclass
class QueryJob(Job):
    prepared: PreparedQuery | None = None  # its fetch_flat() renders the result pages
    ids: list[str] = field(default_factory=list)

    def info(self) -> dict:
        info = self.base_info() | {"jobType": "V2Query", "isPkChunkingSupported": True}
        if self.current_state() in (JobState.IN_PROGRESS, JobState.JOB_COMPLETE):
            done = self.state is JobState.JOB_COMPLETE
            info |= {
                "numberRecordsProcessed": len(self.ids) if done else 0,
                "retries": 0,
                "totalProcessingTime": self.elapsed_ms(),
            }
        if self.error_message:
            info["errorMessage"] = self.error_message
        return info


@dataclass
class RowResult:
    row: list[str]
    record_id: str = ""
    created: bool = False
    error: str | None = None  # ``CODE:message`` when the row failed


@dataclass
class IngestJob(Job):
    external_id_field: str | None = None
    content_url: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    uploaded: bool = False
    upload_error: str | None = None  # why the uploaded data fails the job when it is closed
    results: list[RowResult] = field(default_factory=list)

    def info(self) -> dict:
        info = self.base_info() | {"jobType": "V2Ingest", "contentUrl": self.content_url}
        if self.external_id_field:
            info["externalIdFieldName"] = self.external_id_field
        info |= {
            "numberRecordsProcessed": len(self.results),
            "numberRecordsFailed": sum(1 for r in self.results if r.error),
            "retries": 0,
            "totalProcessingTime": self.elapsed_ms(),
            "apiActiveProcessingTime": self.elapsed_ms(),
            "apexProcessingTime": 0,
        }
        if self.error_message:
            info["errorMessage"] = self.error_message
        return info

    def successful_csv(self) -> str:
        rows = [[r.record_id, "true" if r.created else "false", *r.row] for r in self.results if not r.error]
        return self.csv_format.write(["sf__Id", "sf__Created", *self.header], rows)

    def failed_csv(self) -> str:
        rows = [[r.record_id, r.error, *r.row] for r in self.results if r.error]
        return self.csv_format.write(["sf__Id", "sf__Error", *self.header], rows)

    def unprocessed_csv(self) -> str:
        return self.csv_format.write(self.header, self.rows[len(self.results):])


class JobRegistry:
    """Jobs by id, the most recent ``MAX_JOBS_KEPT`` of them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._sequence = 0

    def new_id(self, key_prefix: str = JOB_KEY_PREFIX) -> str:
        """A new job id, or with another key prefix a new batch or result id."""
        with self._lock:
            self._sequence += 1
            return make_id(key_prefix, self._sequence)

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS_KEPT:
                self._jobs.popitem(last=False)

    def get(self, job_id: str, kind: type[Job]) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if not isinstance(job, kind):
            raise not_found()
        return job

    def remove(self, job_id: str) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def all(self, kind: type[Job]) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if isinstance(job, kind)]

    def clear(self) -> None:
        with self._lock:
            self._jobs.clear()


# -- ingest rows -----------------------------------------------------------------------------


def is_upsert_key(sobject: SObject, name: str | None) -> bool:
    """Whether an upsert can match records by ``name``: an external id field, or Id."""
    field = sobject.field(name or "")
    return field is not None and (field.external_id or field.name == "Id")


def check_ingest_header(sobject: SObject, header: list[str], operation: str, external_id: str | None) -> None:
    """Reject an upload whose columns the object does not have (the job then fails)."""
    if not header:
        raise invalid_job("InvalidBatch : Empty CSV data")
    for name in header:
        if sobject.field(name) is None:
            raise invalid_job(f"InvalidBatch : Field name not found : {name}")
    names = {name.lower() for name in header}
    if operation in ("update", "delete", "hardDelete") and "id" not in names:
        raise invalid_job("InvalidBatch : Field name not found : Id")
    if operation == "upsert" and (external_id or "Id").lower() not in names:
        raise invalid_job(f"InvalidBatch : Field name not found : {external_id}")


def header_fields(sobject: SObject, header: list[str]) -> list[str | None]:
    """Each column's field API name (None for a column the object does not have): looked up
    once per upload rather than once per value."""
    return [fld.name if (fld := sobject.field(name)) is not None else None for name in header]


def row_values(
    sobject: SObject, header: list[str], row: list[str], fields: list[str | None] | None = None
) -> dict[str, Any]:
    """A CSV row as store values keyed by field name: an empty value leaves the field alone,
    ``#N/A`` sets it to null. The store converts text to numbers, booleans and dates.
    ``fields``: :func:`header_fields` of the header, when the caller has it."""
    values: dict[str, Any] = {}
    for column, name, text in zip(header, fields or header_fields(sobject, header), row, strict=False):
        if text == "":
            continue
        if name is None:  # check_ingest_header() rejects such uploads before any row is read
            raise invalid_job(f"InvalidBatch : Field name not found : {column}")
        values[name] = None if text == NULL_MARKER else text
    return values


def error_text(exc: SalesforceError) -> str:
    """``sf__Error`` of a failed row: ``CODE:message``."""
    return f"{exc.error_code}:{exc.message}"
