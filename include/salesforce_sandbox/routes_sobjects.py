"""sObject REST: records by id or external id, describe, and change tracking (wire spec §4, §8)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from .errors import SalesforceError, not_found
from .schema import SObject

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime

def sobject_of(sandbox: SandboxRuntime, name: str) -> SObject:
    sobject = sandbox.schema.get(name)
    if sobject is None:
        raise not_found()
    return sobject


def record_body(call: ApiCall) -> dict[str, Any]:
    """The field values of a create/update body (``attributes`` is metadata, not a field)."""
    values = call.json_object()
    values.pop("attributes", None)
    return values


# -- describe --------------------------------------------------------------------------------


def describe_global(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    return JSONResponse(
        {
            "encoding": "UTF-8",
            "maxBatchSize": 200,
            "sobjects": [_basic_info(o) for o in sandbox.schema.objects.values()],
        }
    )


def describe(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    return JSONResponse(sobject_of(sandbox, call.path_params["sobject"]).describe())


def _basic_info(sobject: SObject) -> dict:
    full = sobject.describe()
    keys = ("name", "label", "labelPlural", "keyPrefix", "custom", "createable", "updateable",
            "deletable", "queryable", "retrieveable", "searchable", "urls")
    return {key: full[key] for key in keys}


# -- /sobjects/{sobject} ---------------------------------------------------------------------


def sobject_root(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET``: basic information; ``POST``: create a record."""
    sobject = sobject_of(sandbox, call.path_params["sobject"])
    if call.method == "GET":
        return JSONResponse({"objectDescribe": _basic_info(sobject), "recentItems": []})
    values = record_body(call)
    with sandbox.store.lock:
        record_id = sandbox.store.create(sobject.name, values)
    return JSONResponse({"id": record_id, "success": True, "errors": []}, status_code=201)


def sobject_record(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET|PATCH|DELETE /sobjects/{sobject}/{id}``."""
    sobject = sobject_of(sandbox, call.path_params["sobject"])
    record_id = call.path_params["record_id"]
    store = sandbox.store
    if call.method == "GET":
        fields = _fields_param(call)
        with store.lock:
            return JSONResponse(store.get(sobject.name, record_id, fields=fields))
    if call.method == "PATCH":
        values = record_body(call)
        sandbox.faults.check_write(record_id)
        with store.lock:
            store.update(sobject.name, record_id, values)
        return Response(status_code=204)
    sandbox.faults.check_write(record_id)
    with store.lock:
        store.delete(sobject.name, record_id)
    return Response(status_code=204)


def sobject_by_external_id(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET|PATCH|DELETE /sobjects/{sobject}/{field}/{value}``: read, upsert or delete by external id."""
    sobject = sobject_of(sandbox, call.path_params["sobject"])
    field_name = call.path_params["field"]
    value = call.path_params["value"]
    store = sandbox.store
    if call.method == "GET":
        with store.lock:
            return JSONResponse(store.get_by_external_id(sobject.name, field_name, value, fields=_fields_param(call)))
    if call.method == "DELETE":
        with store.lock:
            record_id = store.get_by_external_id(sobject.name, field_name, value, fields=["Id"])["Id"]
        sandbox.faults.check_write(record_id)
        with store.lock:
            store.delete(sobject.name, record_id)
        return Response(status_code=204)
    values = record_body(call)
    sandbox.faults.check_write(_existing_id(sandbox, sobject, field_name, value))
    with store.lock:
        record_id, created = store.upsert(sobject.name, field_name, value, values)
    body = {"id": record_id, "success": True, "errors": [], "created": created}
    return JSONResponse(body, status_code=201 if created else 200)


def _existing_id(sandbox: SandboxRuntime, sobject: SObject, field_name: str, value: str) -> str | None:
    """The id an upsert would update, if exactly one record matches (for write faults)."""
    try:
        with sandbox.store.lock:
            return sandbox.store.get_by_external_id(sobject.name, field_name, value, fields=["Id"])["Id"]
    except SalesforceError:
        return None


def _fields_param(call: ApiCall) -> list[str] | None:
    raw = call.query_params.get("fields")
    if not raw:
        return None
    return [name.strip() for name in raw.split(",") if name.strip()]


# -- change tracking -------------------------------------------------------------------------


def updated(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    sobject = sobject_of(sandbox, call.path_params["sobject"])
    start, end = _replication_window(call)
    with sandbox.store.lock:
        return JSONResponse(sandbox.store.updated(sobject.name, start, end))


def deleted(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    sobject = sobject_of(sandbox, call.path_params["sobject"])
    start, end = _replication_window(call)
    with sandbox.store.lock:
        return JSONResponse(sandbox.store.deleted(sobject.name, start, end))


def _replication_window(call: ApiCall) -> tuple[dt.datetime, dt.datetime]:
    # The store checks the window itself (order, 30 days back), as Salesforce does.
    return (
        parse_replication_datetime(call.query_params.get("start"), "start"),
        parse_replication_datetime(call.query_params.get("end"), "end"),
    )


def parse_replication_datetime(raw: str | None, name: str) -> dt.datetime:
    """An ISO 8601 datetime with an offset, as simple-salesforce sends it (%-encoded on the
    wire, so already decoded here). A datetime without an offset is refused."""
    if not raw:
        raise SalesforceError("MISSING_ARGUMENT", f"Missing required parameter: {name}")
    # A literal "+" in a query string decodes to a space.
    text = raw.strip().replace(" ", "+")
    if text.endswith(":"):
        raise SalesforceError(
            "INVALID_REPLICATION_DATE",
            f"{name}: '{raw}' has no time zone offset (a naive datetime?); "
            "send e.g. 2026-01-02T03:04:05+00:00",
        )
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SalesforceError("INVALID_REPLICATION_DATE", f"{name}: '{raw}' is not a valid ISO 8601 datetime") from exc
    if moment.tzinfo is None:
        raise SalesforceError(
            "INVALID_REPLICATION_DATE",
            f"{name}: '{raw}' has no time zone offset; send e.g. 2026-01-02T03:04:05+00:00",
        )
    return moment.astimezone(dt.UTC)
