"""sObject Collections: ``/composite/sobjects`` create, update and delete (wire spec §5).

Results come back in request order, one per record, with ``statusCode`` in errors. With
``allOrNone`` every write runs in one store transaction that is rolled back when any record
fails; the records that did not fail then report ``ALL_OR_NONE_OPERATION_ROLLED_BACK``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from .errors import SalesforceError

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime

MAX_RECORDS = 200
ROLLED_BACK = SalesforceError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)

# One record's write: returns the record id, or raises SalesforceError.
RecordWrite = Callable[[], str]


class _RollBack(Exception):
    """Raised inside the transaction to undo an allOrNone request that had a failure."""


def collection(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    if call.method == "DELETE":
        ids = [i for i in (call.query_params.get("ids") or "").split(",") if i]
        all_or_none = (call.query_params.get("allOrNone") or "false").lower() == "true"
        _check_size(len(ids))
        writes = [(record_id, _delete(sandbox, record_id)) for record_id in ids]
        return JSONResponse(_run(sandbox, writes, all_or_none))
    body = call.json_object()
    records = body.get("records")
    if not isinstance(records, list):
        raise SalesforceError("JSON_PARSER_ERROR", "The request body needs a 'records' array")
    _check_size(len(records))
    all_or_none = bool(body.get("allOrNone", False))
    make_write = _create if call.method == "POST" else _update
    writes = [(_given_id(record), make_write(sandbox, record)) for record in records]
    return JSONResponse(_run(sandbox, writes, all_or_none))


def _check_size(count: int) -> None:
    if count > MAX_RECORDS:
        raise SalesforceError(
            "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {MAX_RECORDS} records into this call"
        )


def _given_id(record: Any) -> str | None:
    return record.get("id") or record.get("Id") if isinstance(record, dict) else None


def _run(sandbox: SandboxRuntime, writes: list[tuple[str | None, RecordWrite]], all_or_none: bool) -> list[dict]:
    store = sandbox.store
    outcomes: list[str | SalesforceError] = []
    with store.lock:
        if not all_or_none:
            return [_result(given_id, _attempt(write)) for given_id, write in writes]
        try:
            with store.transaction():
                outcomes = [_attempt(write) for _, write in writes]
                if any(isinstance(o, SalesforceError) for o in outcomes):
                    raise _RollBack
        except _RollBack:
            outcomes = [o if isinstance(o, SalesforceError) else ROLLED_BACK for o in outcomes]
    return [_result(given_id, outcome) for (given_id, _), outcome in zip(writes, outcomes, strict=True)]


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


def _update(sandbox: SandboxRuntime, record: Any) -> RecordWrite:
    def write() -> str:
        name, values = _record_type(sandbox, record)
        record_id = values.pop("id", None) or values.pop("Id", None)
        if not record_id:
            raise SalesforceError("MISSING_ARGUMENT", "Id not specified in an update call")
        sandbox.faults.check_write(record_id)
        sandbox.store.update(name, record_id, values)
        return record_id

    return write


def _delete(sandbox: SandboxRuntime, record_id: str) -> RecordWrite:
    def write() -> str:
        sobject = sandbox.schema.by_prefix(record_id)
        if sobject is None:
            raise SalesforceError("MALFORMED_ID", f"malformed id {record_id}")
        sandbox.faults.check_write(record_id)
        sandbox.store.delete(sobject.name, record_id)
        return record_id

    return write
