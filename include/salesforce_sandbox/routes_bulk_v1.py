"""Bulk API 1.0 over HTTP: ``/services/async/{version}/job`` (jobs, batches, results), in XML or JSON.

Formats, as the clients in use expect them: job resources answer in JSON when the request is
JSON (``Content-Type: application/json``) or the job's content type is JSON, else in XML; batch
resources follow the job's content type only (a CSV job's batch list is XML whatever the request
says). Errors are ``<error><exceptionCode/><exceptionMessage/></error>`` (or the same in JSON),
HTTP 400, an invalid session included (``InvalidSessionId``).
"""

from __future__ import annotations

import csv
import io
import json
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from .bulk import NULL_MARKER, CsvFormat, check_ingest_header, is_upsert_key
from .bulk_v1 import (
    BATCH_KEY_PREFIX,
    CONTENT_TYPES,
    INGEST_OPERATIONS,
    MAX_BATCH_RECORDS,
    QUERY_OPERATIONS,
    RESULT_KEY_PREFIX,
    Batch,
    BatchState,
    JobState,
    PkChunking,
    V1Job,
    bulk_error,
    to_json,
    to_xml,
)
from .errors import SalesforceError
from .ingest import RowSpec, apply_rows
from .wire import local_name, maybe_gzip, parse_xml

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime
    from .soql import PreparedQuery

XML_MEDIA_TYPE = "application/xml"
JSON_MEDIA_TYPE = "application/json"
CSV_MEDIA_TYPE = "text/csv"
# Gateway refusals, in Bulk API 1.0's words.
_BULK_CODES = {
    "INVALID_SESSION_ID": ("InvalidSessionId", "Invalid session id", 400),
    "REQUEST_LIMIT_EXCEEDED": ("ExceededQuota", "TotalRequests Limit exceeded.", 403),
    "JSON_PARSER_ERROR": ("ClientInputError", None, 400),
    "UNKNOWN_EXCEPTION": ("Unknown", None, 500),
}
_JOB_FIELDS = ("operation", "object", "contentType", "externalIdFieldName", "concurrencyMode", "state")


# -- formats ---------------------------------------------------------------------------------


def _request_is_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == JSON_MEDIA_TYPE


def _answer(as_json: bool, root: str, values: dict | list, status: int = 200, item: str | None = None) -> Response:
    if as_json:
        return Response(to_json(values), status_code=status, media_type=JSON_MEDIA_TYPE)
    return Response(to_xml(root, values, item), status_code=status, media_type=XML_MEDIA_TYPE)


def render_error(exc: SalesforceError, request: Request) -> Response:
    code, message, status = _BULK_CODES.get(exc.error_code, (exc.error_code, None, exc.status))
    body = {"exceptionCode": code, "exceptionMessage": message or exc.message}
    return _answer(_request_is_json(request), "error", body, status=status)


async def invalid_url(request: Request) -> Response:
    """Anything under ``/services/async/`` that is not a Bulk API 1.0 resource."""
    return render_error(bulk_error("InvalidUrl", f"unknown resource: {request.url.path}"), request)


def _job_answer(call: ApiCall, job: V1Job, status: int = 200) -> Response:
    return _answer(_request_is_json(call.request) or job.content_type == "JSON", "jobInfo", job.info(), status)


def _batch_answer(job: V1Job, info: dict, status: int = 200) -> Response:
    return _answer(job.content_type == "JSON", "batchInfo", info, status)


def _job(sandbox: SandboxRuntime, call: ApiCall) -> V1Job:
    job_id = call.path_params["job_id"]
    try:
        return sandbox.jobs.get(job_id, V1Job)
    except SalesforceError:
        raise bulk_error("InvalidJob", f"Invalid job id: {job_id}") from None


def _job_request(call: ApiCall) -> dict[str, str]:
    """The fields of a ``jobInfo`` request body, XML or JSON."""
    if _request_is_json(call.request):
        body = call.json_object()
        return {key: str(body[key]) for key in _JOB_FIELDS if body.get(key) is not None}
    try:
        root = parse_xml(call.body)
    except ValueError as exc:
        raise bulk_error("InvalidXML", f"The jobInfo request is not valid XML: {exc}") from exc
    if local_name(root) != "jobInfo":
        raise bulk_error("InvalidXML", f"Expected a jobInfo document, got {local_name(root)}")
    return {local_name(child): (child.text or "").strip() for child in root if local_name(child) in _JOB_FIELDS}


# -- jobs ------------------------------------------------------------------------------------


def create_job(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    fields = _job_request(call)
    operation = fields.get("operation", "")
    if operation not in (*QUERY_OPERATIONS, *INGEST_OPERATIONS):
        raise bulk_error("InvalidJob", f"Invalid operation: {operation or '(none)'}")
    sobject = sandbox.schema.get(fields.get("object", ""))
    if sobject is None:
        raise bulk_error("InvalidJob", f"Unable to find object: {fields.get('object', '')}")
    content_type = fields.get("contentType", "XML")
    if content_type not in CONTENT_TYPES:
        raise bulk_error("InvalidJob", f"contentType {content_type} is not emulated by the sandbox: use CSV or JSON")
    external_id = fields.get("externalIdFieldName")
    if operation == "upsert":
        if not is_upsert_key(sobject, external_id):
            raise bulk_error("InvalidJob", f"Invalid external id field for upsert: {external_id or '(none)'}")
    concurrency = fields.get("concurrencyMode", "Parallel")
    if concurrency not in ("Parallel", "Serial"):
        raise bulk_error("InvalidJob", f"Invalid concurrencyMode: {concurrency}")
    pk_chunking = PkChunking.from_header(call.headers.get("sforce-enable-pkchunking"))
    if pk_chunking is not None and operation not in QUERY_OPERATIONS:
        raise bulk_error("InvalidJob", "PK chunking applies to query jobs only")
    job = V1Job(
        id=sandbox.jobs.new_id(),
        operation=operation,
        object_name=sobject.name,
        content_type=content_type,
        api_version=call.path_params["version"],
        created_by=sandbox.store.integration_user_id,
        external_id_field=external_id if operation == "upsert" else None,
        concurrency_mode=concurrency,
        pk_chunking=pk_chunking,
    )
    sandbox.jobs.add(job)
    return _job_answer(call, job, status=201)


def job_resource(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET`` the job; ``POST`` ``state`` ``Closed`` or ``Aborted``."""
    job = _job(sandbox, call)
    if call.method == "POST":
        state = _job_request(call).get("state")
        if state not in (JobState.CLOSED.value, JobState.ABORTED.value):
            raise bulk_error("InvalidJobState", f"Invalid state for a job update: {state or '(none)'}")
        if job.state is not JobState.OPEN:
            raise bulk_error("InvalidJobState", f"Job {job.id} is not open: {job.state.value}")
        job.state = JobState(state)
    return _job_answer(call, job)


# -- batches ---------------------------------------------------------------------------------


def batches(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET``: every batch of the job; ``POST``: add one (CSV or JSON rows, or a query)."""
    job = _job(sandbox, call)
    if call.method == "GET":
        infos = [batch.info() for batch in job.batches.values()]
        if job.content_type == "JSON":
            return _answer(True, "batchInfoList", {"batchInfo": infos})
        return _answer(False, "batchInfoList", infos, item="batchInfo")
    if job.state is not JobState.OPEN:
        raise bulk_error("InvalidJobState", f"Unable to add a batch to job {job.id}: it is {job.state.value}")
    batch = job.add_batch(sandbox.jobs.new_id(BATCH_KEY_PREFIX), call.body)
    if job.is_query:
        _run_query_batch(sandbox, job, batch)
    else:
        _run_ingest_batch(sandbox, job, batch)
    return _batch_answer(job, batch.info_as_added(), status=201)


def batch_resource(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    job = _job(sandbox, call)
    return _batch_answer(job, job.batch(call.path_params["batch_id"]).info())


def batch_request(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """What was sent for the batch."""
    job = _job(sandbox, call)
    batch = job.batch(call.path_params["batch_id"])
    media_type = JSON_MEDIA_TYPE if job.content_type == "JSON" and not job.is_query else CSV_MEDIA_TYPE
    return Response(batch.request, media_type=media_type)


def batch_result(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """A query batch: the list of its result ids; an ingest batch: one result per row."""
    job = _job(sandbox, call)
    batch = job.batch(call.path_params["batch_id"])
    state = batch.current_state()
    if state is BatchState.FAILED:
        raise bulk_error("InvalidBatch", f"Batch failed: {batch.state_message}")
    if state is not BatchState.COMPLETED:
        raise bulk_error("InvalidBatch", f"Batch not completed: {state.value}")
    if job.is_query:
        if job.content_type == "JSON":
            return _answer(True, "result-list", batch.result_ids)
        return _answer(False, "result-list", batch.result_ids, item="result")
    if job.content_type == "JSON":
        rows = [
            {"success": not r.error, "created": r.created, "id": r.record_id or None,
             "errors": [r.error] if r.error else []}
            for r in batch.results
        ]
        return Response(to_json(rows), media_type=JSON_MEDIA_TYPE)
    rows = [[r.record_id, "false" if r.error else "true", "true" if r.created else "false", r.error or ""]
            for r in batch.results]
    return Response(CsvFormat().write(["Id", "Success", "Created", "Error"], rows), media_type=CSV_MEDIA_TYPE)


def query_result(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """One result of a completed query batch: CSV with a header row (or a JSON array of records),
    gzip-compressed when the client accepts it."""
    job = _job(sandbox, call)
    batch = job.batch(call.path_params["batch_id"])
    if not job.is_query or call.path_params["result_id"] not in batch.result_ids:
        raise bulk_error("InvalidBatch", f"Unable to find result {call.path_params['result_id']} of batch {batch.id}")
    headers: dict[str, str] = {}
    with sandbox.store.lock:
        if job.content_type == "JSON":
            body = to_json(batch.prepared.fetch(batch.ids) if batch.ids else [])
            media_type = JSON_MEDIA_TYPE
        else:
            rows = batch.prepared.fetch_flat(batch.ids) if batch.ids else []
            body = CsvFormat().write(batch.prepared.columns(), rows).encode()
            media_type = CSV_MEDIA_TYPE
    return Response(maybe_gzip(call.request, body, headers), media_type=media_type, headers=headers)


# -- processing a batch ----------------------------------------------------------------------


def _run_query_batch(sandbox: SandboxRuntime, job: V1Job, batch: Batch) -> None:
    soql = batch.request.decode("utf-8", "replace").strip()
    try:
        with sandbox.store.lock:
            prepared = sandbox.prepare_query(soql, include_deleted=job.operation == "queryAll")
            if prepared.object_name != job.object_name:
                raise SalesforceError(
                    "INVALID_TYPE", f"The query's object {prepared.object_name} is not the job's object {job.object_name}"
                )
            if prepared.has_subqueries:
                raise SalesforceError("FUNCTIONALITY_NOT_ENABLED", "Nested queries are not supported in Bulk queries")
            if prepared.is_aggregate:
                raise SalesforceError("FUNCTIONALITY_NOT_ENABLED", "Aggregate queries are not supported in Bulk queries")
            ids = prepared.ids()
            all_ids = _object_ids(sandbox, job) if job.pk_chunking else []
    except SalesforceError as exc:
        batch.fail(f"InvalidBatch : Failed to process query: {exc.error_code}: {exc.message}")
        return
    if job.pk_chunking is None:
        _complete_query(sandbox, batch, prepared, ids)
        return
    # PK chunking: the batch itself is not processed; one batch per range of record ids is.
    batch.state = BatchState.NOT_PROCESSED
    for low, high in _id_ranges(all_ids, job.pk_chunking.chunk_size, job.pk_chunking.start_row):
        chunk = job.add_batch(sandbox.jobs.new_id(BATCH_KEY_PREFIX), batch.request)
        in_range = [i for i in ids if i >= low and (high is None or i < high)]
        _complete_query(sandbox, chunk, prepared, in_range)


def _complete_query(sandbox: SandboxRuntime, batch: Batch, prepared: PreparedQuery, ids: list[str]) -> None:
    batch.prepared, batch.ids = prepared, ids
    batch.result_ids = [sandbox.jobs.new_id(RESULT_KEY_PREFIX)]
    batch.finish(len(ids))


def _object_ids(sandbox: SandboxRuntime, job: V1Job) -> list[str]:
    """Every record id of the job's object (deleted ones too for queryAll), in id order."""
    return sandbox.store.all_ids(job.object_name, include_deleted=job.operation == "queryAll")


def _id_ranges(ids: list[str], chunk_size: int, start_row: str | None) -> list[tuple[str, str | None]]:
    """``[low, high)`` id ranges of ``chunk_size`` records each; the last one is open-ended."""
    if start_row:
        ids = [i for i in ids if i >= start_row]
    if not ids:
        return [(start_row or "", None)]
    starts = ids[::chunk_size]
    return [(low, starts[n + 1] if n + 1 < len(starts) else None) for n, low in enumerate(starts)]


def _run_ingest_batch(sandbox: SandboxRuntime, job: V1Job, batch: Batch) -> None:
    sobject = sandbox.schema.get(job.object_name)
    try:
        header, rows = _ingest_rows(job, batch.request)
        if len(rows) > MAX_BATCH_RECORDS:
            raise bulk_error("InvalidBatch", f"InvalidBatch : Records in a batch cannot exceed {MAX_BATCH_RECORDS}")
        check_ingest_header(sobject, header, job.operation, job.external_id_field)
    except SalesforceError as exc:
        batch.fail(exc.message)
        return
    batch.header = header
    for results in apply_rows(sandbox, RowSpec(job.operation, header, job.external_id_field), sobject, rows):
        batch.results.extend(results)
    batch.finish(len(batch.results), sum(1 for r in batch.results if r.error))


def _ingest_rows(job: V1Job, data: bytes) -> tuple[list[str], list[list[str]]]:
    """A batch's rows as CSV text cells: from CSV as sent, from JSON with null as ``#N/A``."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bulk_error("InvalidBatch", "InvalidBatch : The batch data must be UTF-8") from exc
    if job.content_type == "CSV":
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
        return (rows[0], rows[1:]) if rows else ([], [])
    try:
        records = json.loads(text)
    except ValueError as exc:
        raise bulk_error("InvalidBatch", f"InvalidBatch : The batch is not valid JSON: {exc}") from exc
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise bulk_error("InvalidBatch", "InvalidBatch : A JSON batch is an array of records")
    header = list(dict.fromkeys(key for record in records for key in record if key != "attributes"))
    return header, [[_json_cell(record, name) for name in header] for record in records]


def _json_cell(record: dict, name: str) -> str:
    if name not in record:
        return ""  # left alone, as an empty CSV value
    value = record[name]
    if value is None:
        return NULL_MARKER
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
