"""sObject Collections: ``/composite/sobjects`` create, update and delete (wire spec §5), and
``/composite/sobjects/{sobject}/{field}`` upsert by external id.

Results come back in request order, one per record, with ``statusCode`` in errors. Every
write of a request runs in one store transaction; with ``allOrNone`` it is rolled back when any
record fails, and the records that did not fail then report ``ALL_OR_NONE_OPERATION_ROLLED_BACK``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from itertools import groupby
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from .errors import SalesforceError

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime

MAX_RECORDS = 200
MAX_RETRIEVE_IDS = 2000
ROLLED_BACK = SalesforceError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)

# One record's write: returns the record id, or raises SalesforceError.
RecordWrite = Callable[[], str]
# Every record's write, in request order: the record id, or the error, per record.
WriteAll = Callable[[], list[str | SalesforceError]]


class _RollBack(Exception):
    """Raised inside the transaction to undo an allOrNone request that had a failure."""


def collection(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    if call.method == "DELETE":
        ids = [i for i in (call.query_params.get("ids") or "").split(",") if i]
        all_or_none = (call.query_params.get("allOrNone") or "false").lower() == "true"
        if not ids:  # a malformed request (wire spec §5): 400, not an empty list of results
            raise SalesforceError("MISSING_ARGUMENT", "ids: the ids to delete must be given")
        _check_size(len(ids))
        writes = [_delete(sandbox, record_id) for record_id in ids]
        return JSONResponse(_run(sandbox, ids, _one_by_one(writes), all_or_none))
    body = call.json_object()
    records = body.get("records")
    if not isinstance(records, list):
        raise SalesforceError("JSON_PARSER_ERROR", "The request body needs a 'records' array")
    _check_size(len(records))
    all_or_none = bool(body.get("allOrNone", False))
    given_ids = [_given_id(record) for record in records]
    if call.method == "POST":
        write_all = _one_by_one([_create(sandbox, record) for record in records])
    else:
        write_all = partial(_update_all, sandbox, records)
    return JSONResponse(_run(sandbox, given_ids, write_all, all_or_none))


def upsert_collection(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``PATCH /composite/sobjects/{sobject}/{field}``: each record updated when its external id
    matches one, else created; results carry ``created``. Injected write failures (``fail_rows``)
    apply to the matched record's id, or to the external id value of a record not created yet."""
    sobject = sandbox.schema.get(call.path_params["sobject"])
    if sobject is None:
        raise SalesforceError("INVALID_TYPE", f"sObject type '{call.path_params['sobject']}' is not supported.")
    field_name = call.path_params["field"]
    body = call.json_object()
    records = body.get("records")
    if not isinstance(records, list):
        raise SalesforceError("JSON_PARSER_ERROR", "The request body needs a 'records' array")
    _check_size(len(records))
    created: set[int] = set()

    def write(position: int, record: Any) -> RecordWrite:
        def run() -> str:
            name, values = _record_type(sandbox, record)
            if name != sobject.name:
                raise SalesforceError("INVALID_TYPE", f"records of {name} cannot be upserted as {sobject.name}")
            value = next((v for k, v in values.items() if k.lower() == field_name.lower()), None)
            if value in (None, ""):
                raise SalesforceError("MISSING_ARGUMENT", f"{field_name} not specified", fields=[field_name])
            store = sandbox.store
            try:
                existing = store.get_by_external_id(sobject.name, field_name, str(value), fields=["Id"])["Id"]
            except SalesforceError:
                existing = None
            sandbox.faults.check_write(existing or str(value))
            record_id, was_created = store.upsert(sobject.name, field_name, str(value), values)
            if was_created:
                created.add(position)
            return record_id

        return run

    writes = [write(position, record) for position, record in enumerate(records)]
    results = _run(sandbox, [None] * len(records), _one_by_one(writes), bool(body.get("allOrNone", False)))
    for position, result in enumerate(results):
        if result["success"]:
            result["created"] = position in created
    return JSONResponse(results)


def _check_size(count: int) -> None:
    if count > MAX_RECORDS:
        raise SalesforceError(
            "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {MAX_RECORDS} records into this call"
        )


def _given_id(record: Any) -> str | None:
    return record.get("id") or record.get("Id") if isinstance(record, dict) else None


def _run(
    sandbox: SandboxRuntime, given_ids: list[str | None], write_all: WriteAll, all_or_none: bool
) -> list[dict]:
    # One transaction for the request (one commit, not one per record); without allOrNone a
    # failed record still writes nothing and the others stand.
    store = sandbox.store
    outcomes: list[str | SalesforceError] = []
    with store.lock:
        try:
            with store.transaction():
                outcomes = write_all()
                if all_or_none and any(isinstance(o, SalesforceError) for o in outcomes):
                    raise _RollBack
        except _RollBack:
            outcomes = [o if isinstance(o, SalesforceError) else ROLLED_BACK for o in outcomes]
    return [_result(given_id, outcome) for given_id, outcome in zip(given_ids, outcomes, strict=True)]


def _one_by_one(writes: list[RecordWrite]) -> WriteAll:
    return lambda: [_attempt(write) for write in writes]


def _attempt(write: RecordWrite) -> str | SalesforceError:
    try:
        return write()
    except SalesforceError as exc:
        return exc


def _result(given_id: str | None, outcome: str | SalesforceError) -> dict:
    if isinstance(outcome, SalesforceError):
        result: dict = {"success": False, "errors": [outcome.to_collection_error()]}
        if given_id:
            result = {"id": given_id} | result
        return result
    return {"id": outcome, "success": True, "errors": []}


def _record_type(sandbox: SandboxRuntime, record: Any) -> tuple[str, dict]:
    if not isinstance(record, dict):
        raise SalesforceError("JSON_PARSER_ERROR", "Each record must be a JSON object")
    attributes = record.get("attributes") or {}
    type_name = attributes.get("type") if isinstance(attributes, dict) else None
    if not type_name:
        raise SalesforceError("INVALID_TYPE", "Must send a concrete entity type.")
    sobject = sandbox.schema.get(type_name)
    if sobject is None:
        raise SalesforceError("INVALID_TYPE", f"sObject type '{type_name}' is not supported.")
    values = {k: v for k, v in record.items() if k != "attributes"}
    return sobject.name, values


def _create(sandbox: SandboxRuntime, record: Any) -> RecordWrite:
    def write() -> str:
        name, values = _record_type(sandbox, record)
        if "id" in values or "Id" in values:
            raise SalesforceError("INVALID_FIELD", "Cannot specify Id in an insert call", fields=["Id"])
        return sandbox.store.create(name, values)

    return write


def _update_all(sandbox: SandboxRuntime, records: list[Any]) -> list[str | SalesforceError]:
    """Every record checked here in request order, then written by ``Store.update_each`` a run of
    records of one object at a time (it reads a run's records together rather than one by one)."""
    outcomes: list[str | SalesforceError] = []
    to_write: list[tuple[int, str, str, dict]] = []  # (position, sobject, record id, values)
    for position, record in enumerate(records):
        try:
            name, record_id, values = _update_target(sandbox, record)
        except SalesforceError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(record_id)
            to_write.append((position, name, record_id, values))
    for name, run in groupby(to_write, key=itemgetter(1)):
        run = list(run)
        errors = sandbox.store.update_each(name, [(record_id, values) for _, _, record_id, values in run])
        for (position, *_), error in zip(run, errors, strict=True):
            if error is not None:
                outcomes[position] = error
    return outcomes


def _update_target(sandbox: SandboxRuntime, record: Any) -> tuple[str, str, dict]:
    """An update record's object, id and values, once clear of injected write faults."""
    name, values = _record_type(sandbox, record)
    record_id = values.pop("id", None) or values.pop("Id", None)
    if not record_id:
        raise SalesforceError("MISSING_ARGUMENT", "Id not specified in an update call")
    sandbox.faults.check_write(record_id)
    return name, record_id, values


def _delete(sandbox: SandboxRuntime, record_id: str) -> RecordWrite:
    def write() -> str:
        sobject = sandbox.schema.by_prefix(record_id)
        if sobject is None:
            raise SalesforceError("MALFORMED_ID", f"malformed id {record_id}")
        sandbox.faults.check_write(record_id)
        sandbox.store.delete(sobject.name, record_id)
        return record_id

    return write


def retrieve(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET /composite/sobjects/{sobject}?ids=&fields=`` (or ``POST`` ``{"ids": [...], "fields": [...]}``
    for long id lists): the records in the order asked, ``null`` for an id with no record."""
    sobject = sandbox.schema.get(call.path_params["sobject"])
    if sobject is None:
        raise SalesforceError("NOT_FOUND", "The requested resource does not exist", status=404)
    if call.method == "POST":
        body = call.json_object()
        ids, fields = body.get("ids"), body.get("fields")
        if not isinstance(ids, list) or not isinstance(fields, list):
            raise SalesforceError("JSON_PARSER_ERROR", "The request body needs 'ids' and 'fields' arrays")
    else:
        ids = [i for i in (call.query_params.get("ids") or "").split(",") if i]
        fields = [f.strip() for f in (call.query_params.get("fields") or "").split(",") if f.strip()]
    if not fields:
        raise SalesforceError("MISSING_ARGUMENT", "fields: the fields to retrieve must be given")
    if not ids:
        raise SalesforceError("MISSING_ARGUMENT", "ids: the ids to retrieve must be given")
    if len(ids) > MAX_RETRIEVE_IDS:
        raise SalesforceError(
            "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {MAX_RETRIEVE_IDS} records into this call"
        )
    for name in fields:
        if sobject.field(name) is None:
            raise SalesforceError(
                "INVALID_FIELD", f"No such column '{name}' on entity '{sobject.name}'.", fields=[name]
            )
    records: list[dict | None] = []
    with sandbox.store.lock:
        for record_id in ids:
            try:
                records.append(sandbox.store.get(sobject.name, str(record_id), fields=fields))
            except SalesforceError as exc:
                if exc.status != 404:
                    raise
                records.append(None)
    return JSONResponse(records)
