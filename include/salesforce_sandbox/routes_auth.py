"""Login endpoints: the OAuth 2.0 token, authorize and revoke endpoints, SOAP ``login``, and the
identity URL (wire spec §1)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from .auth import ORG_ID, LoginRejected, soap_fault
from .gateway import session_id_of
from .runtime import SandboxRuntime
from .usage import CallKind

SOAP_MEDIA_TYPE = "text/xml; charset=utf-8"
INVALID_LOGIN_MESSAGE = "Invalid username, password, security token; or user locked out."


def instance_url(sandbox: SandboxRuntime, request: Request) -> str:
    """The URL clients should call after login, without a trailing slash."""
    return sandbox.base_url or request_origin(request)


def request_origin(request: Request) -> str:
    """``https://host[:port]`` as the client addressed it (``login.salesforce.com`` through the proxy)."""
    return f"{request.url.scheme}://{request.url.netloc}"


def _rejected(exc: LoginRejected) -> Response:
    return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=400)


async def _form(request: Request) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True))


async def oauth_token(request: Request) -> Response:
    sandbox: SandboxRuntime = request.app.state.sandbox
    sandbox.usage.record(CallKind.AUTH)
    form = await _form(request)
    try:
        answer = sandbox.auth.oauth_token(
            form, request.headers.get("authorization"), instance_url(sandbox, request), request_origin(request)
        )
    except LoginRejected as exc:
        return _rejected(exc)
    return JSONResponse(answer)


async def oauth_authorize(request: Request) -> Response:
    """The web server flow's first step: no login page, the org's user approves at once."""
    sandbox: SandboxRuntime = request.app.state.sandbox
    params = request.query_params
    redirect_uri = params.get("redirect_uri")
    try:
        if params.get("response_type") != "code":
            raise LoginRejected("unsupported_response_type", "response type not supported")
        code = sandbox.auth.authorize(params.get("client_id"), redirect_uri)
    except LoginRejected as exc:
        if exc.error == "unsupported_response_type" and redirect_uri:
            return _redirect(redirect_uri, {"error": exc.error, "error_description": exc.description})
        return _rejected(exc)
    answer = {"code": code}
    if params.get("state") is not None:
        answer["state"] = params["state"]
    return _redirect(redirect_uri or "", answer)


def _redirect(uri: str, params: dict[str, str]) -> Response:
    separator = "&" if "?" in uri else "?"
    return RedirectResponse(f"{uri}{separator}{urlencode(params)}", status_code=302)


async def oauth_revoke(request: Request) -> Response:
    """``POST`` form ``token=`` (or ``GET ?token=``): 200 when revoked, 400 ``invalid_token`` otherwise."""
    sandbox: SandboxRuntime = request.app.state.sandbox
    token = request.query_params.get("token") if request.method == "GET" else (await _form(request)).get("token")
    try:
        sandbox.auth.revoke(token)
    except LoginRejected as exc:
        return _rejected(exc)
    return Response(status_code=200)


def _bearer_refused(request: Request) -> Response | None:
    """The answer to a call whose bearer token is not a live session (None: it is one)."""
    sandbox: SandboxRuntime = request.app.state.sandbox
    sandbox.usage.record(CallKind.AUTH)
    token = session_id_of(request) or request.query_params.get("oauth_token")
    if not sandbox.auth.sessions.is_valid(token):
        return Response("Bad_OAuth_Token", status_code=403, media_type="text/plain")
    return None


async def _integration_user_identity(request: Request) -> dict:
    sandbox: SandboxRuntime = request.app.state.sandbox
    store = sandbox.store

    def read_user() -> dict:
        with store.lock:
            return store.get("User", store.integration_user_id)

    user = await run_in_threadpool(read_user)
    return sandbox.auth.identity(request_origin(request), instance_url(sandbox, request), user)


async def identity(request: Request) -> Response:
    """``GET|POST /id/{orgId}/{userId}``: who the bearer token belongs to."""
    if refused := _bearer_refused(request):
        return refused
    org_id, user_id = request.path_params["org_id"], request.path_params["user_id"]
    store = request.app.state.sandbox.store
    if org_id not in (ORG_ID, ORG_ID[:15]) or user_id not in (store.integration_user_id, store.integration_user_id[:15]):
        return Response("Bad_Id", status_code=403, media_type="text/plain")
    return JSONResponse(await _integration_user_identity(request))


async def userinfo(request: Request) -> Response:
    """``GET|POST /services/oauth2/userinfo``: the token's user (OpenID Connect), as the identity URL says."""
    if refused := _bearer_refused(request):
        return refused
    identity = await _integration_user_identity(request)
    return JSONResponse({"sub": identity["id"], **identity})


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
