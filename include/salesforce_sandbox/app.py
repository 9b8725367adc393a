"""The sandbox's HTTP application: the route table and the Salesforce-shaped 404/405 answers."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from . import (
    composite,
    routes_admin,
    routes_auth,
    routes_bulk,
    routes_bulk_v1,
    routes_composite,
    routes_org,
    routes_query,
    routes_sobjects,
)
from .gateway import ErrorRenderer, Handler, KindOf, api_endpoint, read_or_write, rest_error
from .runtime import SandboxRuntime
from .usage import CallKind
from .wire import RequestHeadLimit, SalesforceHeaderCase


class ApiVersionConvertor(Convertor[str]):
    """``59.0`` in ``/services/data/v59.0/...``: any major.minor version is accepted."""

    regex = r"[0-9]+\.[0-9]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("apiver", ApiVersionConvertor())

READ = ["GET"]
RECORD_METHODS = ["GET", "PATCH", "DELETE"]


def _api(
    path: str, handler: Handler, kind: KindOf, methods: Sequence[str] = READ, render_error: ErrorRenderer = rest_error
) -> list[Route]:
    """The route with and without a trailing slash (clients use both)."""
    endpoint = api_endpoint(kind, handler, render_error)
    bare = path.rstrip("/")
    paths = [bare, bare + "/"] if bare else ["/"]
    return [Route(p, endpoint, methods=list(methods)) for p in paths]


def _versioned_routes() -> list[BaseRoute]:
    sobject_kind = read_or_write(CallKind.SOBJECT_READ, CallKind.SOBJECT_WRITE)
    return [
        *_api("/", routes_org.resources, CallKind.DESCRIBE),
        *_api("/limits", routes_org.limits, CallKind.LIMITS),
        # SOQL
        *_api("/query", routes_query.query, CallKind.QUERY),
        *_api("/queryAll", routes_query.query_all, CallKind.QUERY),
        *_api("/query/{next}", routes_query.query_more, CallKind.QUERY_MORE),
        *_api("/queryAll/{next}", routes_query.query_more, CallKind.QUERY_MORE),
        # sObjects: fixed sub-resources before the id patterns that would also match them
        *_api("/sobjects", routes_sobjects.describe_global, CallKind.DESCRIBE),
        *_api("/sobjects/{sobject}/describe", routes_sobjects.describe, CallKind.DESCRIBE),
        *_api("/sobjects/{sobject}/updated", routes_sobjects.updated, CallKind.SOBJECT_READ),
        *_api("/sobjects/{sobject}/deleted", routes_sobjects.deleted, CallKind.SOBJECT_READ),
        *_api(
            "/sobjects/{sobject}",
            routes_sobjects.sobject_root,
            read_or_write(CallKind.DESCRIBE, CallKind.SOBJECT_WRITE),
            ["GET", "POST"],
        ),
        *_api("/sobjects/{sobject}/{record_id}", routes_sobjects.sobject_record, sobject_kind, RECORD_METHODS),
        *_api(
            "/sobjects/{sobject}/{field}/{value}", routes_sobjects.sobject_by_external_id, sobject_kind, RECORD_METHODS
        ),
        # Composite and sObject Collections
        *_api("/composite", composite.composite, CallKind.COMPOSITE, ["POST"]),
        *_api("/composite/sobjects", routes_composite.collection, CallKind.COMPOSITE, ["POST", "PATCH", "DELETE"]),
        *_api("/composite/sobjects/{sobject}", routes_composite.retrieve, CallKind.COMPOSITE, ["GET", "POST"]),
        *_api("/composite/sobjects/{sobject}/{field}", routes_composite.upsert_collection, CallKind.COMPOSITE, ["PATCH"]),
        # Bulk API 2.0
        *_api("/jobs/query", routes_bulk.query_jobs, CallKind.BULK_QUERY, ["GET", "POST"]),
        *_api("/jobs/query/{job_id}", routes_bulk.query_job, CallKind.BULK_QUERY, RECORD_METHODS),
        *_api("/jobs/query/{job_id}/results", routes_bulk.query_results, CallKind.BULK_QUERY),
        *_api("/jobs/query/{job_id}/resultPages", routes_bulk.query_result_pages, CallKind.BULK_QUERY),
        *_api("/jobs/ingest", routes_bulk.ingest_jobs, CallKind.BULK_INGEST, ["GET", "POST"]),
        *_api("/jobs/ingest/{job_id}", routes_bulk.ingest_job, CallKind.BULK_INGEST, RECORD_METHODS),
        *_api("/jobs/ingest/{job_id}/batches", routes_bulk.ingest_batches, CallKind.BULK_INGEST, ["PUT"]),
        *_api("/jobs/ingest/{job_id}/{results}", routes_bulk.ingest_results, CallKind.BULK_INGEST),
    ]


def _bulk_v1_routes() -> list[BaseRoute]:
    def bulk(path: str, handler: Handler, methods: Sequence[str] = READ) -> list[Route]:
        return _api(path, handler, CallKind.BULK_V1, methods, routes_bulk_v1.render_error)

    return [
        *bulk("/job", routes_bulk_v1.create_job, ["POST"]),
        *bulk("/job/{job_id}", routes_bulk_v1.job_resource, ["GET", "POST"]),
        *bulk("/job/{job_id}/batch", routes_bulk_v1.batches, ["GET", "POST"]),
        *bulk("/job/{job_id}/batch/{batch_id}", routes_bulk_v1.batch_resource),
        *bulk("/job/{job_id}/batch/{batch_id}/request", routes_bulk_v1.batch_request),
        *bulk("/job/{job_id}/batch/{batch_id}/result", routes_bulk_v1.batch_result),
        *bulk("/job/{job_id}/batch/{batch_id}/result/{result_id}", routes_bulk_v1.query_result),
        Route("/{rest:path}", routes_bulk_v1.invalid_url, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]


def _routes(versioned: list[BaseRoute]) -> list[BaseRoute]:
    return [
        Route("/services/oauth2/token", routes_auth.oauth_token, methods=["POST"]),
        Route("/services/oauth2/authorize", routes_auth.oauth_authorize, methods=["GET"]),
        Route("/services/oauth2/revoke", routes_auth.oauth_revoke, methods=["GET", "POST"]),
        Route("/id/{org_id}/{user_id}", routes_auth.identity, methods=["GET", "POST"]),
        Route("/services/oauth2/userinfo", routes_auth.userinfo, methods=["GET", "POST"]),
        Route("/services/Soap/u/{version:apiver}", routes_auth.soap_login, methods=["POST"]),
        Route("/services/data", routes_org.versions, methods=["GET"]),
        Route("/services/data/", routes_org.versions, methods=["GET"]),
        Mount("/services/data/v{version:apiver}", routes=versioned),
        Mount("/services/async/{version:apiver}", routes=_bulk_v1_routes()),
        Mount("/__sandbox", routes=routes_admin.ROUTES),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods, answered as Salesforce does: a JSON array of errors."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        body = [{"errorCode": "METHOD_NOT_ALLOWED", "message": f"HTTP Method '{request.method}' not allowed."}]
    elif status == 404:
        body = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    else:
        body = [{"errorCode": "UNKNOWN_EXCEPTION", "message": str(getattr(exc, "detail", "error"))}]
    sandbox: SandboxRuntime = request.app.state.sandbox
    return JSONResponse(body, status_code=status, headers={"Sforce-Limit-Info": sandbox.usage.header()})


def create_app(sandbox: SandboxRuntime) -> Starlette:
    versioned = _versioned_routes()
    app = Starlette(
        routes=_routes(versioned),
        exception_handlers={HTTPException: _http_error},
        middleware=[Middleware(SalesforceHeaderCase), Middleware(RequestHeadLimit)],
    )
    app.state.sandbox = sandbox
    app.state.api_routes = versioned  # what composite subrequests are matched against
    return app
