"""The control endpoint under ``/__sandbox/`` for tests, benchmarks and the CLI.

It needs no Salesforce session and answers only clients on the loopback interface.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .runtime import SandboxRuntime

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ReseedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    orders: int = Field(500, ge=0)
    seed: int = 7
    with_imported_status: bool = True
    multi_currency: bool = True
    dirty_share: float | None = Field(None, ge=0.0, le=1.0)


def _sandbox(request: Request) -> SandboxRuntime:
    return request.app.state.sandbox


def _refuse_remote(request: Request) -> Response | None:
    if request.client is None or request.client.host not in LOOPBACK_HOSTS:
        return JSONResponse({"error": "the sandbox control endpoint answers local clients only"}, status_code=403)
    return None


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    data = json.loads(raw or b"{}")
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


def _bad_request(message: Any) -> Response:
    return JSONResponse({"error": message}, status_code=400)


async def stats(request: Request) -> Response:
    return _refuse_remote(request) or JSONResponse(_sandbox(request).stats())


async def reset_stats(request: Request) -> Response:
    if refused := _refuse_remote(request):
        return refused
    _sandbox(request).usage.reset()
    return JSONResponse(_sandbox(request).stats())


async def faults(request: Request) -> Response:
    """``GET`` the settings, ``POST`` changes (merged into them), ``DELETE`` to clear all."""
    if refused := _refuse_remote(request):
        return refused
    sandbox = _sandbox(request)
    if request.method == "DELETE":
        sandbox.clear_faults()
    elif request.method == "POST":
        try:
            sandbox.set_faults(await _json_body(request))
        except ValidationError as exc:
            return _bad_request(json.loads(exc.json(include_url=False)))
        except ValueError as exc:
            return _bad_request(str(exc))
    return JSONResponse(sandbox.faults.settings.model_dump())


async def reset(request: Request) -> Response:
    """Re-seed the org: ``{"orders": 500, "seed": 7, "with_imported_status": true, "multi_currency": true}``."""
    if refused := _refuse_remote(request):
        return refused
    try:
        options = ReseedRequest.model_validate(await _json_body(request))
    except ValidationError as exc:
        return _bad_request(json.loads(exc.json(include_url=False)))
    except ValueError as exc:
        return _bad_request(str(exc))
    extra = {"dirty_share": options.dirty_share} if options.dirty_share is not None else {}
    sandbox = _sandbox(request)
    summary = await run_in_threadpool(
        sandbox.reseed, options.orders, options.seed, options.with_imported_status, options.multi_currency, **extra
    )
    return JSONResponse({"summary": summary, "counts": await run_in_threadpool(sandbox.record_counts)})


async def info(request: Request) -> Response:
    """Where the sandbox is and how to log in (local development credentials)."""
    if refused := _refuse_remote(request):
        return refused
    sandbox = _sandbox(request)
    return JSONResponse({"url": sandbox.base_url, "credentials": sandbox.credentials.as_dict()})


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


ROUTES = [
    Route("/health", health, methods=["GET"]),
    Route("/info", info, methods=["GET"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/stats/reset", reset_stats, methods=["POST"]),
    Route("/faults", faults, methods=["GET", "POST", "DELETE"]),
    Route("/reset", reset, methods=["POST"]),
]
