"""``POST /composite``: up to 25 REST subrequests in one call, later ones using earlier answers
through ``@{referenceId.path}`` references, optionally all-or-none (wire spec §5).

Each subrequest runs the same handler its URL reaches on its own, with the caller's session, and
is not counted as an API call of its own (the composite request is one call). With ``allOrNone``
the first failure rolls every write back: the failed subrequest keeps its error, all the others
answer ``PROCESSING_HALTED``. Without it, a failure stands alone, except that subrequests
referring to a failed one cannot run.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match

from .errors import SalesforceError
from .gateway import ApiCall

if TYPE_CHECKING:
    from .runtime import SandboxRuntime

log = logging.getLogger(__name__)

MAX_SUBREQUESTS = 25
MAX_QUERIES_AND_COLLECTIONS = 5
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)((?:\.[A-Za-z0-9_]+|\[\d+\])*)\}")
_PATH_STEP = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]")
_VERSIONED_PATH = re.compile(r"^/services/data/v(?P<version>[0-9]+\.[0-9]+)(?P<rest>/.*)?$")
_REFERENCE_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
ROLLED_BACK_MESSAGE = "The transaction was rolled back since another operation in the same transaction failed."
# Resources a subrequest may reach (Bulk jobs and composite itself are not among them).
_ALLOWED_PREFIXES = ("/sobjects", "/query", "/queryAll", "/composite/sobjects", "/limits")
_COUNTED_PREFIXES = ("/query", "/queryAll", "/composite/sobjects")


class _Halted(Exception):
    """Raised inside the transaction to roll an allOrNone request back."""


@dataclass
class Subrequest:
    method: str
    url: str
    reference_id: str
    body: Any
    headers: dict[str, str]


def composite(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    body = call.json_object()
    subrequests = _subrequests(body.get("compositeRequest"))
    all_or_none = bool(body.get("allOrNone", False))
    routes: list[BaseRoute] = call.request.app.state.api_routes
    answers: dict[str, dict] = {}  # referenceId -> its answer, for references
    results: list[dict] = []
    store = sandbox.store
    with store.lock:
        try:
            with store.transaction():
                for sub in subrequests:
                    result = _run_one(sandbox, call, routes, sub, answers)
                    results.append(result)
                    answers[sub.reference_id] = result
                    if all_or_none and result["httpStatusCode"] >= 400:
                        raise _Halted
        except _Halted:
            failed = len(results) - 1
            results = [
                results[failed] if position == failed else _halted(sub.reference_id, ROLLED_BACK_MESSAGE)
                for position, sub in enumerate(subrequests)
            ]
    return JSONResponse({"compositeResponse": results})


def _subrequests(raw: Any) -> list[Subrequest]:
    if not isinstance(raw, list) or not raw:
        raise SalesforceError("INVALID_API_INPUT", "compositeRequest must be a non-empty array of subrequests")
    if len(raw) > MAX_SUBREQUESTS:
        raise SalesforceError(
            "INVALID_API_INPUT", f"Composite requests can have at most {MAX_SUBREQUESTS} subrequests: got {len(raw)}"
        )
    subrequests, seen = [], set()
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"subrequest {position} is not a JSON object")
        method, url, reference_id = item.get("method"), item.get("url"), item.get("referenceId")
        if method not in ("GET", "POST", "PATCH", "PUT", "DELETE") or not isinstance(url, str) or not url:
            raise SalesforceError("INVALID_API_INPUT", f"subrequest {position} needs a method and a url")
        if not isinstance(reference_id, str) or not _REFERENCE_ID.match(reference_id):
            raise SalesforceError("INVALID_API_INPUT", f"subrequest {position} needs a referenceId (letters, digits, _)")
        if reference_id in seen:
            raise SalesforceError("INVALID_API_INPUT", f"Duplicate referenceId: {reference_id}")
        seen.add(reference_id)
        headers = item.get("httpHeaders") or {}
        subrequests.append(Subrequest(method, url, reference_id, item.get("body"), dict(headers)))
    counted = sum(1 for s in subrequests if _resource_of(s.url).startswith(_COUNTED_PREFIXES))
    if counted > MAX_QUERIES_AND_COLLECTIONS:
        raise SalesforceError(
            "INVALID_API_INPUT",
            f"Composite requests can have at most {MAX_QUERIES_AND_COLLECTIONS} query or sObject Collections "
            f"subrequests: got {counted}",
        )
    return subrequests


def _resource_of(url: str) -> str:
    match = _VERSIONED_PATH.match(urlsplit(url).path)
    return (match.group("rest") or "/") if match else ""


def _run_one(
    sandbox: SandboxRuntime, call: ApiCall, routes: list[BaseRoute], sub: Subrequest, answers: dict[str, dict]
) -> dict:
    try:
        url = _resolve_text(sub.url, answers)
        body = _resolve_value(sub.body, answers)
    except SalesforceError as exc:
        return _answer(sub.reference_id, exc.status, exc.to_rest())
    try:
        response = _dispatch(sandbox, call, routes, sub.method, url, body, sub.headers)
    except SalesforceError as exc:
        return _answer(sub.reference_id, exc.status, exc.to_rest())
    except Exception:  # a bug in the sandbox: answered as Salesforce would, trace kept
        log.exception("unhandled error in composite subrequest %s %s", sub.method, url)
        error = SalesforceError("UNKNOWN_EXCEPTION", "An unexpected error occurred.", status=500)
        return _answer(sub.reference_id, 500, error.to_rest())
    content = json.loads(response.body) if response.body else None
    headers = {}
    if response.status_code == 201 and isinstance(content, dict) and content.get("id"):
        headers["Location"] = f"{urlsplit(url).path.rstrip('/')}/{content['id']}"
    return _answer(sub.reference_id, response.status_code, content, headers)


def _answer(reference_id: str, status: int, body: Any, headers: dict | None = None) -> dict:
    return {"body": body, "httpHeaders": headers or {}, "httpStatusCode": status, "referenceId": reference_id}


def _halted(reference_id: str, message: str) -> dict:
    return _answer(reference_id, 400, [{"errorCode": "PROCESSING_HALTED", "message": message}])


def _dispatch(
    sandbox: SandboxRuntime, call: ApiCall, routes: list[BaseRoute], method: str, url: str, body: Any,
    headers: dict[str, str],
) -> Response:
    parts = urlsplit(url)
    match = _VERSIONED_PATH.match(parts.path)
    resource = (match.group("rest") or "/") if match else ""
    if match is None or not resource.startswith(_ALLOWED_PREFIXES):
        raise SalesforceError("INVALID_API_INPUT", f"A composite subrequest cannot reach {parts.path}")
    scope = {
        "type": "http",
        "method": method,
        "path": resource,
        "root_path": "",
        "query_string": parts.query.encode(),
        "headers": [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items()]
        + [(b"content-type", b"application/json")],
        "app": call.request.app,
    }
    for route in routes:
        found, child = route.matches(scope)
        if found is Match.FULL:
            handler = child["endpoint"].handler  # the gateway's endpoint keeps its handler
            request = Request(scope | child | {"path": parts.path,
                                               "path_params": {"version": match.group("version"),
                                                               **child["path_params"]}})
            data = b"" if body is None else json.dumps(body).encode()
            return handler(sandbox, ApiCall(request, data, call.session_id))
        if found is Match.PARTIAL:
            raise SalesforceError("METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed.", status=405)
    raise SalesforceError("NOT_FOUND", "The requested resource does not exist", status=404)


def _lookup(expression: str, reference_id: str, path: str, answers: dict[str, dict]) -> Any:
    answer = answers.get(reference_id)
    if answer is None or answer["httpStatusCode"] >= 400:
        raise SalesforceError(
            "PROCESSING_HALTED",
            f"Invalid reference specified. No value for {expression} found in {reference_id}. "
            "Provided referenceId must be the referenceId of an earlier, successful subrequest.",
        )
    value: Any = answer["body"]
    for name, index in _PATH_STEP.findall(path):
        try:
            value = value[int(index)] if index else value[name]
        except (KeyError, IndexError, TypeError, ValueError):
            raise SalesforceError(
                "PROCESSING_HALTED", f"Invalid reference specified. No value for {expression} found in {reference_id}."
            ) from None
    return value


def _resolve_text(text: str, answers: dict[str, dict]) -> str:
    return _REFERENCE.sub(lambda m: str(_lookup(m.group(0)[2:-1], m.group(1), m.group(2), answers)), text)


def _resolve_value(value: Any, answers: dict[str, dict]) -> Any:
    """References inside a JSON body: a string that is one reference takes the value as it is."""
    if isinstance(value, str):
        whole = _REFERENCE.fullmatch(value)
        if whole:
            return _lookup(value[2:-1], whole.group(1), whole.group(2), answers)
        return _resolve_text(value, answers)
    if isinstance(value, list):
        return [_resolve_value(item, answers) for item in value]
    if isinstance(value, dict):
        return {key: _resolve_value(item, answers) for key, item in value.items()}
    return value
