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
    api_error,
    check_ingest_header,
    decode_locator,
    encode_locator,
    invalid_job,
    is_upsert_key,
)
from .errors import SalesforceError, not_found
from .ingest import RowSpec, apply_rows
from .wire import maybe_gzip

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime

CSV_MEDIA_TYPE = "text/csv"
RESULT_PAGES_PER_ANSWER = 5  # result URLs per resultPages answer, as on Salesforce
RESULT_PAGES_SINCE = (58, 0)  # the API version that brought resultPages: before it, the resource does not exist
FINAL_STATES = (JobState.JOB_COMPLETE, JobState.FAILED, JobState.ABORTED)


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
        if prepared.has_offset:
            raise api_error("OFFSET is not supported in Bulk Query")
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
    job.start_processing(len(ids), sandbox.faults.bulk_job_delay_seconds())
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
    next five (``nextRecordsUrl``, null with ``done`` when there are no more). Before API version
    58.0 the resource does not exist: 404 ``NOT_FOUND``, as on Salesforce."""
    major, _, minor = call.path_params["version"].partition(".")
    if (int(major), int(minor or 0)) < RESULT_PAGES_SINCE:
        raise not_found()
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
        if not is_upsert_key(sobject, external_id):
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
    job.upload_error = job.csv_format.line_ending_error(text)
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
    headers: dict[str, str] = {}
    body = maybe_gzip(call.request, render().encode(), headers)  # compressed when asked, as query results are
    return Response(body, media_type=CSV_MEDIA_TYPE, headers=headers)


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
        if job.upload_error:
            raise invalid_job(job.upload_error)
        check_ingest_header(sobject, job.header, job.operation, job.external_id_field)
    except SalesforceError as exc:
        job.state = JobState.FAILED
        job.error_message = exc.message
        return
    job.start_processing(len(job.rows), sandbox.faults.bulk_job_delay_seconds())
    spec = RowSpec(job.operation, job.header, job.external_id_field)
    # A slice's results count once it is committed: should an unexpected error end the
    # processing, the rows it rolled back are reported unprocessed, not as written.
    for results in apply_rows(sandbox, spec, sobject, job.rows):
        job.results.extend(results)
