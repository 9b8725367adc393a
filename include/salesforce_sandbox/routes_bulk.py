"""Bulk API 2.0 over HTTP: ``/jobs/query`` and ``/jobs/ingest`` (wire spec §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.responses import JSONResponse, Response

from .bulk import (
    DEFAULT_RESULTS_PAGE,
    INGEST_OPERATIONS,
    QUERY_OPERATIONS,
    CsvFormat,
    IngestJob,
    Job,
    JobState,
    QueryJob,
    RowResult,
    api_error,
    check_ingest_header,
    decode_locator,
    encode_locator,
    error_text,
    invalid_job,
    row_values,
)
from .errors import SalesforceError, not_found
from .schema import SObject
from .wire import maybe_gzip

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime

CSV_MEDIA_TYPE = "text/csv"
RESULT_PAGES_PER_ANSWER = 5  # result URLs per resultPages answer, as on Salesforce
FINAL_STATES = (JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED)
ROWS_PER_TRANSACTION = 1_000  # ingest rows written per store transaction


def _job_list(jobs: list[Job]) -> Response:
    return JSONResponse({"done": True, "records": [job.info() for job in jobs], "nextRecordsUrl": None})


# -- query jobs ------------------------------------------------------------------------------


def query_jobs(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET``: list query jobs; ``POST``: create one (answered in JSON whatever Accept says)."""
    if call.method == "GET":
        return _job_list(sandbox.jobs.all(QueryJob))
    body = call.json_object()
    operation = body.get("operation", "query")
    if operation not in QUERY_OPERATIONS:
        raise invalid_job(f"Invalid operation for a query job: {operation}")
    soql = body.get("query")
    if not soql:
        raise invalid_job("A query job needs a query")
    csv_format = CsvFormat.from_request(body)
    with sandbox.store.lock:
        prepared = sandbox.prepare_query(soql, include_deleted=operation == "queryAll")
        if prepared.has_subqueries:
            raise api_error("Aggregate Relationships not supported in Bulk Query")
        if prepared.is_aggregate:
            raise api_error("Aggregate queries are not supported in Bulk Query")
        ids = prepared.ids()
    job = QueryJob(
        id=sandbox.jobs.new_id(),
        operation=operation,
        object_name=prepared.object_name,
        csv_format=csv_format,
        api_version=call.path_params["version"],
        created_by=sandbox.store.integration_user_id,
        prepared=prepared,
        ids=ids,
    )
    info = job.info()  # reported as UploadComplete, as Salesforce answers a new job
    job.start_processing(len(ids))
    sandbox.jobs.add(job)
    return JSONResponse(info)


def query_job(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET`` job info, ``PATCH`` ``{"state": "Aborted"}``, ``DELETE`` the job."""
    job = sandbox.jobs.get(call.path_params["job_id"], QueryJob)
    if call.method == "GET":
        return JSONResponse(job.info())
    if call.method == "DELETE":
        sandbox.jobs.remove(job.id)
        return Response(status_code=204)
    _abort(job, call)
    return JSONResponse(job.info())


def _completed_query_job(sandbox: SandboxRuntime, call: ApiCall) -> QueryJob:
    job = sandbox.jobs.get(call.path_params["job_id"], QueryJob)
    if job.current_state() is not JobState.JOB_COMPLETE:
        raise SalesforceError("JOB_NOT_COMPLETE", f"Job {job.id} is not complete: {job.state.value}", status=412)
    return job


def query_results(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """One CSV page of a finished query job, with ``Sforce-Locator`` and ``Sforce-NumberOfRecords``
    (gzip-compressed when the client accepts it, as Salesforce does)."""
    job = _completed_query_job(sandbox, call)
    locator = call.query_params.get("locator")
    offset = decode_locator(locator) if locator and locator != "null" else 0
    page_size = _max_records(call.query_params.get("maxRecords"))
    page_ids = job.ids[offset : offset + page_size]
    with sandbox.store.lock:
        header = job.prepared.columns()
        rows = job.prepared.fetch_flat(page_ids) if page_ids else []
    end = offset + len(page_ids)
    headers = {
        "Sforce-Locator": encode_locator(end) if end < len(job.ids) else "null",
        "Sforce-NumberOfRecords": str(len(rows)),
    }
    body = maybe_gzip(call.request, job.csv_format.write(header, rows).encode(), headers)
    return Response(body, media_type=CSV_MEDIA_TYPE, headers=headers)


def query_result_pages(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET .../resultPages``: up to five result URLs to download in parallel, and the URL of the
    next five (``nextRecordsUrl``, null with ``done`` when there are no more)."""
    job = _completed_query_job(sandbox, call)
    locator = call.query_params.get("locator")
    offset = decode_locator(locator) if locator and locator != "null" else 0
    page_size = _max_records(call.query_params.get("maxRecords"))
    base = f"/services/data/v{call.path_params['version']}/jobs/query/{job.id}"
    starts = list(range(offset, len(job.ids), page_size))[:RESULT_PAGES_PER_ANSWER]
    if not starts and offset == 0:
        starts = [0]  # an empty result still has its one (empty) page
    pages = [{"resultUrl": f"{base}/results?locator={encode_locator(start)}&maxRecords={page_size}"} for start in starts]
    next_offset = starts[-1] + page_size if starts else offset
    done = next_offset >= len(job.ids)
    next_url = None if done else f"{base}/resultPages?locator={encode_locator(next_offset)}&maxRecords={page_size}"
    return JSONResponse({"resultPages": pages, "nextRecordsUrl": next_url, "done": done})


def _max_records(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_RESULTS_PAGE
    if not raw.isdigit() or int(raw) < 1:
        raise api_error(f"Invalid maxRecords: {raw}")
    return int(raw)


# -- ingest jobs -----------------------------------------------------------------------------


def ingest_jobs(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET``: list ingest jobs; ``POST``: create one in state ``Open``."""
    if call.method == "GET":
        return _job_list(sandbox.jobs.all(IngestJob))
    body = call.json_object()
    operation = body.get("operation")
    if operation not in INGEST_OPERATIONS:
        raise invalid_job(f"Invalid operation for an ingest job: {operation}")
    sobject = sandbox.schema.get(body.get("object") or "")
    if sobject is None:
        raise invalid_job(f"Invalid object: {body.get('object')}")
    if (body.get("contentType") or "CSV") != "CSV":
        raise invalid_job("Only CSV content is supported")
    external_id = body.get("externalIdFieldName")
    if operation == "upsert":
        if not external_id:
            raise invalid_job("An upsert job needs externalIdFieldName")
        external_field = sobject.field(external_id)
        if external_field is None or not (external_field.external_id or external_field.name == "Id"):
            raise invalid_job(f"Invalid external id field: {external_id}")
    version = call.path_params["version"]
    job_id = sandbox.jobs.new_id()
    job = IngestJob(
        id=job_id,
        operation=operation,
        object_name=sobject.name,
        csv_format=CsvFormat.from_request(body),
        api_version=version,
        created_by=sandbox.store.integration_user_id,
        state=JobState.OPEN,
        external_id_field=external_id,
        content_url=f"services/data/v{version}/jobs/ingest/{job_id}/batches",
    )
    sandbox.jobs.add(job)
    return JSONResponse(job.info())


def ingest_job(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET`` job info; ``PATCH`` ``UploadComplete`` (process the rows) or ``Aborted``; ``DELETE``."""
    job = sandbox.jobs.get(call.path_params["job_id"], IngestJob)
    if call.method == "GET":
        return JSONResponse(job.info())
    if call.method == "DELETE":
        sandbox.jobs.remove(job.id)
        return Response(status_code=204)
    if call.json_object().get("state") == JobState.UPLOAD_COMPLETE.value:
        if job.state is not JobState.OPEN:
            raise invalid_job(f"Job {job.id} is not open: {job.state.value}")
        _process(sandbox, job)
        return JSONResponse(job.info() | {"state": JobState.UPLOAD_COMPLETE.value})
    _abort(job, call)
    return JSONResponse(job.info())


def ingest_batches(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``PUT .../batches``: the job's CSV data (one upload per job, as in Bulk 2.0)."""
    job = sandbox.jobs.get(call.path_params["job_id"], IngestJob)
    if job.state is not JobState.OPEN:
        raise invalid_job(f"Job {job.id} is not open for uploads: {job.state.value}")
    if job.uploaded:
        raise invalid_job("Only one upload of data is allowed per job")
    try:
        text = call.body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise invalid_job("The CSV data must be UTF-8") from exc
    job.header, job.rows = job.csv_format.read(text)
    job.uploaded = True
    return Response(status_code=201)


def ingest_results(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``successfulResults/``, ``failedResults/``, ``unprocessedrecords/`` (any letter case)."""
    job = sandbox.jobs.get(call.path_params["job_id"], IngestJob)
    renderers = {
        "successfulresults": job.successful_csv,
        "failedresults": job.failed_csv,
        "unprocessedrecords": job.unprocessed_csv,
    }
    render = renderers.get(call.path_params["results"].lower())
    if render is None:
        raise not_found()
    return Response(render(), media_type=CSV_MEDIA_TYPE)


def _abort(job: QueryJob | IngestJob, call: ApiCall) -> None:
    state = call.json_object().get("state")
    if state != JobState.ABORTED.value:
        raise invalid_job(f"Invalid state change: {state}")
    if job.current_state() in FINAL_STATES:
        raise invalid_job(f"Job {job.id} is already {job.state.value}")
    job.state = JobState.ABORTED


def _process(sandbox: SandboxRuntime, job: IngestJob) -> None:
    """Run every uploaded row through the store, each on its own (Bulk writes are not all-or-none)."""
    sobject = sandbox.schema.get(job.object_name)
    try:
        if not job.uploaded:
            raise invalid_job("InvalidBatch : No data uploaded")
        check_ingest_header(sobject, job.header, job.operation, job.external_id_field)
    except SalesforceError as exc:
        job.state = JobState.FAILED
        job.error_message = exc.message
        return
    job.start_processing(len(job.rows))
    write_rows = _update_rows if job.operation == "update" else _write_rows
    store = sandbox.store
    with store.lock:
        # One transaction per slice of rows rather than per row (each row still succeeds or fails
        # on its own). A slice's results count once it is committed: should an unexpected error end
        # the processing, the rows it rolled back are reported unprocessed, not as written.
        for start in range(0, len(job.rows), ROWS_PER_TRANSACTION):
            with store.transaction():
                results = write_rows(sandbox, job, sobject, job.rows[start : start + ROWS_PER_TRANSACTION])
            job.results.extend(results)


def _write_rows(
    sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, rows: list[list[str]]
) -> list[RowResult]:
    """One store call per row (the store rolls a failed one back to its own savepoint)."""
    return [_write_row(sandbox, job, sobject, row) for row in rows]


def _write_row(sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, row: list[str]) -> RowResult:
    result = RowResult(row=row)
    try:
        record_id, values = _parsed_row(sobject, job.header, row)
        result.record_id = record_id or ""
        writer = _ROW_WRITERS[job.operation]
        result.record_id, result.created = writer(sandbox, job, sobject, record_id, values)
    except SalesforceError as exc:
        result.error = error_text(exc)
    return result


def _update_rows(
    sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, rows: list[list[str]]
) -> list[RowResult]:
    """An update job's rows: each checked here as :func:`_update_row` checks it, then all written by
    one ``Store.update_each`` call, which reads the target records in chunks rather than one by one.
    The outcome of every row is the one :func:`_write_row` would give."""
    results = [RowResult(row=row) for row in rows]
    to_write: list[tuple[RowResult, dict]] = []
    for result in results:
        try:
            record_id, values = _parsed_row(sobject, job.header, result.row)
            result.record_id = record_id or ""
            _check_target(sandbox, record_id)
            to_write.append((result, values))
        except SalesforceError as exc:
            result.error = error_text(exc)
    updates = [(result.record_id, values) for result, values in to_write]
    errors = sandbox.store.update_each(sobject.name, updates)
    for (result, _), error in zip(to_write, errors, strict=True):
        if error is not None:
            result.error = error_text(error)
    return results


def _insert_row(sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    return sandbox.store.create(sobject.name, values), True


def _update_row(sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    record_id = _check_target(sandbox, record_id)
    sandbox.store.update(sobject.name, record_id, values)
    return record_id, False


def _upsert_row(sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    external = sobject.field(job.external_id_field or "Id")
    if external is None or external.name == "Id":
        writer = _update_row if record_id else _insert_row
        return writer(sandbox, job, sobject, record_id, values)
    external_value = values.pop(external.name, None)
    if external_value in (None, ""):
        raise SalesforceError("MISSING_ARGUMENT", f"{external.name} not specified", fields=[external.name])
    return sandbox.store.upsert(sobject.name, external.name, external_value, values)


def _delete_row(sandbox: SandboxRuntime, job: IngestJob, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    record_id = _check_target(sandbox, record_id)
    sandbox.store.delete(sobject.name, record_id)
    return record_id, False


# hardDelete soft-deletes like delete: the rows stay visible to queryAll.
_ROW_WRITERS = {
    "insert": _insert_row,
    "update": _update_row,
    "upsert": _upsert_row,
    "delete": _delete_row,
    "hardDelete": _delete_row,
}


def _check_target(sandbox: SandboxRuntime, record_id: str | None) -> str:
    """The id an update or delete row names, once present and clear of injected write faults."""
    if not record_id:
        raise SalesforceError("MISSING_ARGUMENT", "Id not specified in an update call", fields=["Id"])
    sandbox.faults.check_write(record_id)
    return record_id


def _parsed_row(sobject: SObject, header: list[str], row: list[str]) -> tuple[str | None, dict]:
    """A CSV row's Id (None without one) and its other values."""
    values = row_values(sobject, header, row)
    for key in list(values):
        if key.lower() == "id":
            return values.pop(key), values
    return None, values
