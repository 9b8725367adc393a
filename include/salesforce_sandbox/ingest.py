"""Ingest rows run through the store's rules, shared by Bulk API 2.0 jobs and Bulk API 1.0 batches.

Each row succeeds or fails on its own. Rows are written in slices of ``ROWS_PER_TRANSACTION``,
one store transaction each (a failed row rolls back to its own savepoint); updates read their
target records in chunks rather than one by one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .bulk import RowResult, error_text, header_fields, row_values
from .errors import SalesforceError
from .schema import SObject

if TYPE_CHECKING:
    from .runtime import SandboxRuntime

ROWS_PER_TRANSACTION = 1_000  # ingest rows written per store transaction


@dataclass(frozen=True)
class RowSpec:
    """What every row of one upload shares: the operation, the CSV header, the external id field."""

    operation: str
    header: list[str]
    external_id_field: str | None = None


def apply_rows(sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, rows: list[list[str]]) -> Iterator[list[RowResult]]:
    """The rows' results, one committed slice at a time."""
    write_rows = _update_rows if spec.operation == "update" else _write_rows
    store = sandbox.store
    with store.lock:
        for start in range(0, len(rows), ROWS_PER_TRANSACTION):
            with store.transaction():
                results = write_rows(sandbox, spec, sobject, rows[start : start + ROWS_PER_TRANSACTION])
            yield results


def _write_rows(
    sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, rows: list[list[str]]
) -> list[RowResult]:
    """One store call per row (the store rolls a failed one back to its own savepoint)."""
    fields = header_fields(sobject, spec.header)
    return [_write_row(sandbox, spec, sobject, fields, row) for row in rows]


def _write_row(
    sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, fields: list[str | None], row: list[str]
) -> RowResult:
    result = RowResult(row=row)
    try:
        record_id, values = _parsed_row(sobject, spec.header, fields, row)
        result.record_id = record_id or ""
        writer = _ROW_WRITERS[spec.operation]
        result.record_id, result.created = writer(sandbox, spec, sobject, record_id, values)
    except SalesforceError as exc:
        result.error = error_text(exc)
    return result


def _update_rows(
    sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, rows: list[list[str]]
) -> list[RowResult]:
    """An update job's rows: each checked here as :func:`_update_row` checks it, then all written by
    one ``Store.update_each`` call, which reads the target records in chunks rather than one by one.
    The outcome of every row is the one :func:`_write_row` would give."""
    results = [RowResult(row=row) for row in rows]
    fields = header_fields(sobject, spec.header)
    to_write: list[tuple[RowResult, dict]] = []
    for result in results:
        try:
            record_id, values = _parsed_row(sobject, spec.header, fields, result.row)
            result.record_id = record_id or ""
            _check_target(sandbox, record_id)
            to_write.append((result, values))
        except SalesforceError as exc:
            result.error = error_text(exc)
    updates = [(result.record_id, values) for result, values in to_write]
    errors = sandbox.store.update_each(sobject.name, updates)
    for (result, _), error in zip(to_write, errors, strict=True):
        if error is not None:
            result.error = error_text(error)
    return results


def _insert_row(sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    return sandbox.store.create(sobject.name, values), True


def _update_row(sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    record_id = _check_target(sandbox, record_id)
    sandbox.store.update(sobject.name, record_id, values)
    return record_id, False


def _upsert_row(sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    external = sobject.field(spec.external_id_field or "Id")
    if external is None or external.name == "Id":
        writer = _update_row if record_id else _insert_row
        return writer(sandbox, spec, sobject, record_id, values)
    external_value = values.pop(external.name, None)
    if external_value in (None, ""):
        raise SalesforceError("MISSING_ARGUMENT", f"{external.name} not specified", fields=[external.name])
    return sandbox.store.upsert(sobject.name, external.name, external_value, values)


def _delete_row(sandbox: SandboxRuntime, spec: RowSpec, sobject: SObject, record_id: str | None,
                values: dict) -> tuple[str, bool]:
    record_id = _check_target(sandbox, record_id)
    sandbox.store.delete(sobject.name, record_id)
    return record_id, False


# hardDelete soft-deletes like delete: the rows stay visible to queryAll.
_ROW_WRITERS = {
    "insert": _insert_row,
    "update": _update_row,
    "upsert": _upsert_row,
    "delete": _delete_row,
    "hardDelete": _delete_row,
}


def _check_target(sandbox: SandboxRuntime, record_id: str | None) -> str:
    """The id an update or delete row names, once present and clear of injected write faults."""
    if not record_id:
        raise SalesforceError("MISSING_ARGUMENT", "Id not specified in an update call", fields=["Id"])
    sandbox.faults.check_write(record_id)
    return record_id


def _parsed_row(
    sobject: SObject, header: list[str], fields: list[str | None], row: list[str]
) -> tuple[str | None, dict]:
    """A CSV row's Id (None without one) and its other values (keyed by API name: Id's is "Id")."""
    values = row_values(sobject, header, row, fields)
    return values.pop("Id", None), values
