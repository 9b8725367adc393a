"""Bulk API 1.0 jobs and batches (``/services/async/{version}/job``), and how they are written
as XML or JSON.

A job holds batches. A batch is processed when it is added (a query batch snapshots the ids it
matches, an ingest batch runs its rows through the store's rules) and then reports ``Queued``,
``InProgress`` for a moment that grows with its size, and ``Completed``: clients see the states
a real org shows, and a small batch is done by the time they first poll. With PK chunking
(``Sforce-Enable-PKChunking``) a query batch is split into one batch per range of ``chunkSize``
record ids and itself becomes ``NotProcessed``, as on Salesforce.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import xml.etree.ElementTree as ET  # noqa: S405 - only builds documents here
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .bulk import RowResult
from .errors import SalesforceError
from .soql import PreparedQuery

NAMESPACE = "http://www.force.com/2009/06/asyncapi/dataload"
BATCH_KEY_PREFIX = "751"
RESULT_KEY_PREFIX = "752"
ROWS_PER_SECOND = 200_000  # how fast a batch seems to process
MAX_BATCH_RECORDS = 10_000
DEFAULT_CHUNK_SIZE = 100_000
MAX_CHUNK_SIZE = 250_000
QUERY_OPERATIONS = ("query", "queryAll")
INGEST_OPERATIONS = ("insert", "update", "upsert", "delete", "hardDelete")
CONTENT_TYPES = ("CSV", "JSON")


class JobState(StrEnum):
    OPEN = "Open"
    CLOSED = "Closed"
    ABORTED = "Aborted"
    FAILED = "Failed"


class BatchState(StrEnum):
    QUEUED = "Queued"
    IN_PROGRESS = "InProgress"
    COMPLETED = "Completed"
    FAILED = "Failed"
    NOT_PROCESSED = "NotProcessed"


def bulk_error(code: str, message: str, status: int = 400) -> SalesforceError:
    """A Bulk API 1.0 error: ``exceptionCode`` (InvalidJob, InvalidBatch, ...) and ``exceptionMessage``."""
    return SalesforceError(code, message, status=status)


def _timestamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class PkChunking:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    start_row: str | None = None  # the id the first chunk starts at

    @classmethod
    def from_header(cls, header: str | None) -> PkChunking | None:
        """``TRUE``, ``FALSE``, or ``chunkSize=50000; startRow=001...; parent=Account`` (any order, any case)."""
        if header is None or not header.strip() or header.strip().lower() == "false":
            return None
        chunk_size, start_row = DEFAULT_CHUNK_SIZE, None
        for part in (p.strip() for p in header.split(";")):
            key, sep, value = part.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not sep and key == "true":
                continue
            if key == "chunksize" and value.isdigit() and 1 <= int(value) <= MAX_CHUNK_SIZE:
                chunk_size = int(value)
            elif key == "chunksize":
                raise bulk_error("InvalidJob", f"Invalid chunkSize: {value}. It must be between 1 and {MAX_CHUNK_SIZE}")
            elif key == "startrow" and value:
                start_row = value
            elif key != "parent":  # parent names the object to chunk on (History, Share tables): one here
                raise bulk_error("InvalidJob", f"Invalid Sforce-Enable-PKChunking option: {part}")
        return cls(chunk_size, start_row)


@dataclass
class Batch:
    id: str
    job_id: str
    request: bytes  # what the client sent (GET .../request answers it)
    state: BatchState = BatchState.QUEUED
    state_message: str | None = None
    created: dt.datetime = field(default_factory=_now)
    started_at: float = field(default_factory=time.monotonic)
    processing_seconds: float = 0.0
    # a query batch: the ids it matched, paged out by its one result
    prepared: PreparedQuery | None = None
    ids: list[str] = field(default_factory=list)
    result_ids: list[str] = field(default_factory=list)
    # an ingest batch: one result per row
    header: list[str] = field(default_factory=list)
    results: list[RowResult] = field(default_factory=list)
    records_processed: int = 0
    records_failed: int = 0

    def finish(self, records: int, failed: int = 0) -> None:
        """Processed: InProgress for a size-dependent moment, then Completed."""
        self.state = BatchState.QUEUED
        self.records_processed, self.records_failed = records, failed
        self.processing_seconds = records / ROWS_PER_SECOND
        self.started_at = time.monotonic()

    def fail(self, message: str) -> None:
        self.state = BatchState.FAILED
        self.state_message = message

    def current_state(self) -> BatchState:
        if self.state in (BatchState.QUEUED, BatchState.IN_PROGRESS):
            elapsed = time.monotonic() - self.started_at
            self.state = BatchState.COMPLETED if elapsed >= self.processing_seconds else BatchState.IN_PROGRESS
        return self.state

    def info_as_added(self) -> dict[str, Any]:
        """The answer to adding the batch: Queued, nothing processed yet (as Salesforce answers)."""
        info = self.info() | {"state": BatchState.QUEUED.value, "numberRecordsProcessed": 0, "numberRecordsFailed": 0,
                              "totalProcessingTime": 0, "apiActiveProcessingTime": 0}
        info.pop("stateMessage", None)
        return info

    def info(self) -> dict[str, Any]:
        state = self.current_state()
        done = state in (BatchState.COMPLETED, BatchState.FAILED)
        info: dict[str, Any] = {"id": self.id, "jobId": self.job_id, "state": state.value}
        if self.state_message:
            info["stateMessage"] = self.state_message
        elapsed_ms = int(self.processing_seconds * 1000)
        return info | {
            "createdDate": _timestamp(self.created),
            "systemModstamp": _timestamp(self.created),
            "numberRecordsProcessed": self.records_processed if done else 0,
            "numberRecordsFailed": self.records_failed if done else 0,
            "totalProcessingTime": elapsed_ms if done else 0,
            "apiActiveProcessingTime": elapsed_ms if done else 0,
            "apexProcessingTime": 0,
        }


@dataclass
class V1Job:
    id: str
    operation: str
    object_name: str
    content_type: str
    api_version: str
    created_by: str
    external_id_field: str | None = None
    concurrency_mode: str = "Parallel"
    pk_chunking: PkChunking | None = None
    state: JobState = JobState.OPEN
    created: dt.datetime = field(default_factory=_now)
    batches: dict[str, Batch] = field(default_factory=dict)

    @property
    def is_query(self) -> bool:
        return self.operation in QUERY_OPERATIONS

    def add_batch(self, batch_id: str, request: bytes) -> Batch:
        batch = Batch(id=batch_id, job_id=self.id, request=request)
        self.batches[batch.id] = batch
        return batch

    def batch(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise bulk_error("InvalidBatch", f"Unable to find batch for id: {batch_id}")
        return batch

    def info(self) -> dict[str, Any]:
        states = [batch.current_state() for batch in self.batches.values()]
        info: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object_name,
            "createdById": self.created_by,
            "createdDate": _timestamp(self.created),
            "systemModstamp": _timestamp(self.created),
            "state": self.state.value,
        }
        if self.external_id_field:
            info["externalIdFieldName"] = self.external_id_field
        done = [b for b in self.batches.values() if b.state in (BatchState.COMPLETED, BatchState.FAILED)]
        return info | {
            "concurrencyMode": self.concurrency_mode,
            "contentType": self.content_type,
            "numberBatchesQueued": states.count(BatchState.QUEUED),
            "numberBatchesInProgress": states.count(BatchState.IN_PROGRESS),
            "numberBatchesCompleted": states.count(BatchState.COMPLETED),
            "numberBatchesFailed": states.count(BatchState.FAILED),
            "numberBatchesTotal": len(states),
            "numberRecordsProcessed": sum(b.records_processed for b in done),
            "numberRetries": 0,
            "apiVersion": float(self.api_version),
            "numberRecordsFailed": sum(b.records_failed for b in done),
            "totalProcessingTime": sum(int(b.processing_seconds * 1000) for b in done),
            "apiActiveProcessingTime": sum(int(b.processing_seconds * 1000) for b in done),
            "apexProcessingTime": 0,
        }


# -- the two wire formats --------------------------------------------------------------------


def to_xml(root: str, values: dict[str, Any] | list[Any], item: str | None = None) -> bytes:
    """``<root xmlns=...><key>value</key>...</root>``; a list becomes repeated ``item`` elements,
    each a dict of values or a single value."""
    element = ET.Element(root, xmlns=NAMESPACE)
    if isinstance(values, dict):
        _fill(element, values)
    else:
        for value in values:
            child = ET.SubElement(element, item or "item")
            if isinstance(value, dict):
                _fill(child, value)
            else:
                child.text = _xml_text(value)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(element, encoding="unicode").encode()


def _fill(element: ET.Element, values: dict[str, Any]) -> None:
    for key, value in values.items():
        ET.SubElement(element, key).text = _xml_text(value)


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_json(value: Any) -> bytes:
    return json.dumps(value).encode()
