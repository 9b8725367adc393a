"""API usage: calls counted by kind, and the org's daily API allowance.

Every authenticated REST or Bulk (1.0 and 2.0) request counts one call against the daily allowance, as
on Salesforce. Logins are counted under ``auth`` but not against the allowance. Requests the
sandbox refuses before serving them (injected 503s, an exhausted allowance, an invalid
session) are not counted.
"""

from __future__ import annotations

import threading
from enum import StrEnum


class CallKind(StrEnum):
    QUERY = "query"
    QUERY_MORE = "query_more"
    SOBJECT_READ = "sobject_read"
    SOBJECT_WRITE = "sobject_write"
    DESCRIBE = "describe"
    COMPOSITE = "composite"
    BULK_QUERY = "bulk_query"
    BULK_INGEST = "bulk_ingest"
    BULK_V1 = "bulk_v1"
    LIMITS = "limits"
    AUTH = "auth"


class ApiUsage:
    """Thread-safe call counters and the daily allowance."""

    def __init__(self, daily_limit: int):
        self._lock = threading.Lock()
        self._daily_limit = daily_limit
        self._calls = dict.fromkeys(CallKind, 0)

    @property
    def daily_limit(self) -> int:
        return self._daily_limit

    @daily_limit.setter
    def daily_limit(self, value: int) -> None:
        with self._lock:
            self._daily_limit = value

    @property
    def used(self) -> int:
        """Calls counted against the daily allowance."""
        with self._lock:
            return self._used()

    def exhausted(self) -> bool:
        with self._lock:
            return self._used() >= self._daily_limit

    def record(self, kind: CallKind) -> None:
        with self._lock:
            self._calls[kind] += 1

    def header(self) -> str:
        """The ``Sforce-Limit-Info`` header value."""
        with self._lock:
            return f"api-usage={self._used()}/{self._daily_limit}"

    def snapshot(self) -> dict:
        with self._lock:
            calls = {kind.value: count for kind, count in self._calls.items()}
            calls["total"] = sum(self._calls.values())
            return {"calls": calls, "api_usage": {"used": self._used(), "max": self._daily_limit}}

    def reset(self) -> None:
        """Start a new day: all counters back to zero."""
        with self._lock:
            self._calls = dict.fromkeys(CallKind, 0)

    def _used(self) -> int:
        return sum(count for kind, count in self._calls.items() if kind is not CallKind.AUTH)
