"""SOQL over REST: ``query``, ``queryAll`` and their ``nextRecordsUrl`` pages (wire spec §2)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from starlette.responses import JSONResponse, Response

from .cursors import ChildCursor, RootCursor, split_next_records_locator
from .errors import SalesforceError
from .wire import RecordsJSONResponse

if TYPE_CHECKING:
    from .gateway import ApiCall
    from .runtime import SandboxRuntime
    from .soql import PreparedQuery

DEFAULT_BATCH_SIZE = 2000
MIN_BATCH_SIZE = 200
MAX_BATCH_SIZE = 2000
CHILD_PAGE_SIZE = 200  # child subquery rows returned inline; the rest behind their own locator
_BATCH_SIZE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)


def query(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    return _run_query(sandbox, call, include_deleted=False)


def query_all(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    return _run_query(sandbox, call, include_deleted=True)


def query_more(sandbox: SandboxRuntime, call: ApiCall) -> Response:
    """``GET .../query/{locator}-{offset}`` (also under ``queryAll``): the next page of a cursor."""
    locator, offset = split_next_records_locator(call.path_params["next"])
    cursor = sandbox.cursors.get(locator)
    if offset > cursor.total:
        raise SalesforceError("INVALID_QUERY_LOCATOR", "invalid query locator")
    version = call.path_params["version"]
    if isinstance(cursor, RootCursor):
        return RecordsJSONResponse(_root_page(sandbox, cursor, locator, offset, version))
    return RecordsJSONResponse(_child_page(cursor, locator, offset, version))


def _run_query(sandbox: SandboxRuntime, call: ApiCall, include_deleted: bool) -> Response:
    soql = call.query_params.get("q")
    if not soql:
        raise SalesforceError("MALFORMED_QUERY", "A query string has to be specified")
    with sandbox.store.lock:
        prepared = sandbox.prepare_query(soql, include_deleted=include_deleted)
        if prepared.is_aggregate:
            return JSONResponse(_aggregate_result(prepared))
        ids = prepared.ids()
    cursor = RootCursor(prepared, ids, batch_size(call.headers.get("sforce-query-options")))
    return RecordsJSONResponse(_root_page(sandbox, cursor, None, 0, call.path_params["version"]))


def _aggregate_result(prepared: PreparedQuery) -> dict:
    if prepared.is_count_only:
        # COUNT() answers with the count as totalSize and no records.
        return {"totalSize": prepared.count(), "done": True, "records": []}
    records = prepared.aggregate_records()
    return {"totalSize": len(records), "done": True, "records": records}


def batch_size(options: str | None) -> int:
    """The page size asked for in ``Sforce-Query-Options``, clamped to 200..2000 as Salesforce does."""
    match = _BATCH_SIZE.search(options or "")
    if not match:
        return DEFAULT_BATCH_SIZE
    return max(MIN_BATCH_SIZE, min(MAX_BATCH_SIZE, int(match.group(1))))


def _root_page(sandbox: SandboxRuntime, cursor: RootCursor, locator: str | None, offset: int, version: str) -> dict:
    page_ids = cursor.ids[offset : offset + cursor.page_size]
    with sandbox.store.lock:
        records = cursor.prepared.fetch(page_ids) if page_ids else []
    if cursor.prepared.has_subqueries:
        for record in records:
            _cut_child_lists(sandbox, record, version)
    end = offset + len(page_ids)
    page = {"totalSize": cursor.total, "done": end >= cursor.total, "records": records}
    if not page["done"]:
        locator = locator or sandbox.cursors.open(cursor)
        page["nextRecordsUrl"] = next_records_url(version, locator, end)
    return page


def _cut_child_lists(sandbox: SandboxRuntime, record: dict, version: str) -> None:
    """Child subquery results longer than a child page keep their first page inline and get
    their own ``nextRecordsUrl``."""
    for key, value in record.items():
        if not _is_child_result(value) or len(value["records"]) <= CHILD_PAGE_SIZE:
            continue
        children = value["records"]
        locator = sandbox.cursors.open(ChildCursor(children, CHILD_PAGE_SIZE))
        record[key] = {
            "totalSize": len(children),
            "done": False,
            "nextRecordsUrl": next_records_url(version, locator, CHILD_PAGE_SIZE),
            "records": children[:CHILD_PAGE_SIZE],
        }


def _child_page(cursor: ChildCursor, locator: str, offset: int, version: str) -> dict:
    records = cursor.records[offset : offset + cursor.page_size]
    end = offset + len(records)
    page = {"totalSize": cursor.total, "done": end >= cursor.total, "records": records}
    if not page["done"]:
        page["nextRecordsUrl"] = next_records_url(version, locator, end)
    return page


def _is_child_result(value: object) -> bool:
    return isinstance(value, dict) and "records" in value and "totalSize" in value


def next_records_url(version: str, locator: str, offset: int) -> str:
    # Always under /query/, even for queryAll, as Salesforce does.
    return f"/services/data/v{version}/query/{locator}-{offset}"
