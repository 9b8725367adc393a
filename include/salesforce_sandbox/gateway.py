"""The path every API request takes before and after its handler.

In order: injected latency, an injected 503, the session check (``Authorization: Bearer`` or
``X-SFDC-Session``), the rate limit and the daily allowance, counting the call, the handler
itself (run in the thread pool: the store is synchronous), and error rendering. Every answer,
errors included, carries ``Sforce-Limit-Info``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .changes import CHANGE_ORIGIN, change_origin
from .errors import SalesforceError
from .usage import CallKind
from .wire import decompressed_body

if TYPE_CHECKING:
    from .runtime import SandboxRuntime

log = logging.getLogger(__name__)

Handler = Callable[["SandboxRuntime", "ApiCall"], Response]
KindOf = CallKind | Callable[[str], CallKind]
# Renders an error the way the API answering it does (REST: a JSON array; Bulk 1.0: its own shape).
ErrorRenderer = Callable[[SalesforceError, Request], Response]


@dataclass
class ApiCall:
    """One authenticated API request, as a handler sees it."""

    request: Request
    body: bytes
    session_id: str

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def path_params(self) -> dict[str, Any]:
        return self.request.path_params

    @property
    def query_params(self) -> Any:
        return self.request.query_params

    @property
    def headers(self) -> Any:
        return self.request.headers

    def json(self) -> Any:
        """The request body as JSON; malformed JSON is Salesforce's JSON_PARSER_ERROR."""
        try:
            return json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise SalesforceError("JSON_PARSER_ERROR", f"Unexpected character in request body: {exc}") from exc

    def json_object(self) -> dict:
        data = self.json()
        if not isinstance(data, dict):
            raise SalesforceError("JSON_PARSER_ERROR", "Cannot deserialize instance of object from the request body")
        return data


def read_or_write(read: CallKind, write: CallKind) -> Callable[[str], CallKind]:
    """A call kind that depends on the HTTP method: GET/HEAD read, everything else writes."""
    return lambda method: read if method in ("GET", "HEAD") else write


def rest_error(exc: SalesforceError, request: Request) -> Response:
    return error_response(exc)


def api_endpoint(
    kind: KindOf, handler: Handler, render_error: ErrorRenderer = rest_error
) -> Callable[[Request], Awaitable[Response]]:
    """Wrap ``handler`` into a Starlette endpoint with the gateway around it."""

    async def endpoint(request: Request) -> Response:
        sandbox: SandboxRuntime = request.app.state.sandbox
        latency = sandbox.faults.latency_seconds()
        if latency:
            await anyio.sleep(latency)
        body = await request.body()
        call_kind = kind(request.method) if callable(kind) else kind
        response = await run_in_threadpool(_serve, sandbox, request, body, call_kind, handler, render_error)
        response.headers["Sforce-Limit-Info"] = sandbox.usage.header()
        return response

    endpoint.handler = handler  # type: ignore[attr-defined]  # composite subrequests call it directly
    return endpoint


def _serve(
    sandbox: SandboxRuntime, request: Request, body: bytes, kind: CallKind, handler: Handler,
    render_error: ErrorRenderer,
) -> Response:
    try:
        session_id = admit(sandbox, request)
        sandbox.usage.record(kind)
        try:
            body = decompressed_body(request, body)
        except ValueError as exc:  # the wire code Salesforce answers here is unconfirmed
            raise SalesforceError("JSON_PARSER_ERROR", f"Unable to read the request body: {exc}") from exc
        # Writes made by this call carry its origin into their change events (the worker thread's own context).
        CHANGE_ORIGIN.set(change_origin(request.path_params.get("version", ""), request.headers.get("sforce-call-options", "")))
        return handler(sandbox, ApiCall(request, body, session_id))
    except SalesforceError as exc:
        return render_error(exc, request)
    except Exception:  # a bug in the sandbox: answer as Salesforce does, keep the trace
        log.exception("unhandled error serving %s %s", request.method, request.url.path)
        return render_error(SalesforceError("UNKNOWN_EXCEPTION", "An unexpected error occurred.", status=500), request)


def admit(sandbox: SandboxRuntime, request: Request) -> str:
    """Let the call in, or raise the error Salesforce would answer; returns the session id."""
    faults = sandbox.faults
    if faults.take_unavailable():
        raise SalesforceError("SERVER_UNAVAILABLE", "Service temporarily unavailable. Please try again.", status=503)
    session_id = session_id_of(request)
    if not sandbox.auth.sessions.is_valid(session_id) or faults.session_expired(session_id):
        raise SalesforceError("INVALID_SESSION_ID", "Session expired or invalid", status=401)
    if faults.take_rate_limited():
        raise request_limit_exceeded()
    if sandbox.usage.exhausted():
        faults.note_limit_exceeded()
        raise request_limit_exceeded()
    return session_id


def session_id_of(request: Request) -> str:
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() in ("bearer", "oauth") and token.strip():
        return token.strip()
    return request.headers.get("x-sfdc-session", "").strip()


def request_limit_exceeded() -> SalesforceError:
    return SalesforceError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.", status=403)


def error_response(exc: SalesforceError) -> Response:
    return JSONResponse(exc.to_rest(), status_code=exc.status)
