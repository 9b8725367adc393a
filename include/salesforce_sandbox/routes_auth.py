"""Login endpoints: the OAuth 2.0 token endpoint and SOAP ``login`` (wire spec §1)."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .auth import LoginRejected, soap_fault
from .runtime import SandboxRuntime
from .usage import CallKind

SOAP_MEDIA_TYPE = "text/xml; charset=utf-8"
INVALID_LOGIN_MESSAGE = "Invalid username, password, security token; or user locked out."


def instance_url(sandbox: SandboxRuntime, request: Request) -> str:
    """The URL clients should call after login, without a trailing slash."""
    return sandbox.base_url or f"{request.url.scheme}://{request.url.netloc}"


async def oauth_token(request: Request) -> Response:
    sandbox: SandboxRuntime = request.app.state.sandbox
    sandbox.usage.record(CallKind.AUTH)
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))
    try:
        answer = sandbox.auth.oauth_token(form, request.headers.get("authorization"), instance_url(sandbox, request))
    except LoginRejected as exc:
        return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=400)
    return JSONResponse(answer)


async def soap_login(request: Request) -> Response:
    sandbox: SandboxRuntime = request.app.state.sandbox
    sandbox.usage.record(CallKind.AUTH)
    body = await request.body()
    try:
        envelope = sandbox.auth.soap_login(body, instance_url(sandbox, request), request.path_params["version"])
    except LoginRejected:
        return Response(soap_fault("INVALID_LOGIN", INVALID_LOGIN_MESSAGE), status_code=500,
                        media_type=SOAP_MEDIA_TYPE)
    return Response(envelope, media_type=SOAP_MEDIA_TYPE)
