"""What the store tells listeners after each committed change to an Order (the source of the
sandbox's change events), and who made it.

Salesforce records where a change came from in a change event's ``changeOrigin``: for an API
call, ``com/salesforce/api/rest/59.0;client=<the Sforce-Call-Options client>``. The HTTP gateway
sets :data:`CHANGE_ORIGIN` for the request it serves; writes made directly on the store (tests,
the admin CLI) carry an empty origin, as changes made in Salesforce's own UI do.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

CHANGE_ORIGIN: ContextVar[str] = ContextVar("salesforce_sandbox_change_origin", default="")

CREATE, UPDATE, DELETE = "CREATE", "UPDATE", "DELETE"


def change_origin(api_version: str, call_options: str) -> str:
    """``changeOrigin`` of a REST call: its API version and the ``client`` of its ``Sforce-Call-Options``."""
    options = dict(
        part.strip().split("=", 1) for part in call_options.split(",") if "=" in part
    )
    client = options.get("client", "")
    return f"com/salesforce/api/rest/{api_version};client={client}"


@dataclass(frozen=True)
class RecordChange:
    """One committed create, update or delete of a record."""

    change_type: str  # CREATE / UPDATE / DELETE
    sobject: str
    record_id: str
    values: dict[str, Any]  # the fields as written (every field on create, the changed ones on update)
    commit_stamp: str  # the record's new SystemModstamp
    commit_user: str
    origin: str = ""
    status_before: str | None = None
    status_after: str | None = None
    order_number: str | None = None
    changed_fields: tuple[str, ...] = field(default=())
