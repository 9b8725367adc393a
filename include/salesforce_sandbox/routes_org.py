"""Org-level resources: API versions, the resource directory of a version, and limits (wire spec §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .bulk import QueryJob

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime

# The versions this sandbox answers for (any vNN.N works in URLs; these are the ones listed).
API_VERSIONS = {
    "55.0": "Summer '22",
    "56.0": "Winter '23",
    "57.0": "Spring '23",
    "58.0": "Summer '23",
    "59.0": "Winter '24",
    "60.0": "Spring '24",
    "61.0": "Summer '24",
    "62.0": "Winter '25",
}
DAILY_BULK_V2_QUERY_JOBS = 10_000
DAILY_BULK_BATCHES = 15_000
DAILY_BULK_API_REQUESTS = 5_000  # the older name of the Bulk allowance, which the wire spec §7 shows


async def versions(request: Request) -> Response:
    """``GET /services/data/``: needs no session, as on Salesforce."""
    return JSONResponse(
        [{"label": label, "url": f"/services/data/v{v}", "version": v} for v, label in API_VERSIONS.items()]
    )


def resources(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    base = f"/services/data/v{call.path_params['version']}"
    names = ("sobjects", "query", "queryAll", "limits", "composite", "jobs")
    directory = {name: f"{base}/{name}" for name in names}
    # The identity URL of the caller (jsforce reads it here when it logged in with a bare token).
    directory["identity"] = sandbox.auth.identity_url(f"{call.request.url.scheme}://{call.request.url.netloc}")
    return JSONResponse(directory)


def limits(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    daily = sandbox.usage.daily_limit
    query_jobs = len(sandbox.jobs.all(QueryJob))
    return JSONResponse(
        {
            "DailyApiRequests": {"Max": daily, "Remaining": max(daily - sandbox.usage.used, 0)},
            "DailyBulkApiBatches": {"Max": DAILY_BULK_BATCHES, "Remaining": DAILY_BULK_BATCHES},
            "DailyBulkApiRequests": {"Max": DAILY_BULK_API_REQUESTS, "Remaining": DAILY_BULK_API_REQUESTS},
            "DailyBulkV2QueryJobs": {
                "Max": DAILY_BULK_V2_QUERY_JOBS,
                "Remaining": max(DAILY_BULK_V2_QUERY_JOBS - query_jobs, 0),
            },
            "DailyBulkV2QueryFileStorageMB": {"Max": 976_562, "Remaining": 976_562},
            "DataStorageMB": {"Max": 1024, "Remaining": 1024},
            "FileStorageMB": {"Max": 1024, "Remaining": 1024},
        }
    )
