"""Injected faults: the failures a real org produces now and then, on demand and reproducibly.

Settings come from the admin endpoint (``POST /__sandbox/faults``; keys given replace their
current value, others are kept; ``DELETE`` clears everything). The random 503 share draws
from a generator seeded by ``seed``, so a run with the same settings fails the same calls.
"""

from __future__ import annotations

import random
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import SalesforceError


class FaultSettings(BaseModel):
    """The switches. Defaults mean "no fault"."""

    model_config = ConfigDict(extra="forbid")

    error_503_share: float = Field(0.0, ge=0.0, le=1.0, description="share of API calls answered 503")
    error_503_burst: int = Field(0, ge=0, description="the next N API calls answer 503")
    rate_limit_after: int | None = Field(None, ge=0, description="REQUEST_LIMIT_EXCEEDED after N more calls")
    daily_api_limit: int | None = Field(None, ge=0, description="override the daily API allowance")
    session_expires_after: int | None = Field(
        None, ge=0, description="the session in use becomes invalid after N more calls"
    )
    lock_rows: list[str] = Field(default_factory=list, description="ids whose writes fail UNABLE_TO_LOCK_ROW")
    lock_rows_times: int | None = Field(None, ge=1, description="fail a locked id only this many times")
    fail_rows: dict[str, tuple[str, str]] = Field(
        default_factory=dict, description="id -> [errorCode, message]: permanent write failure"
    )
    unreadable_objects: list[str] = Field(
        default_factory=list,
        description="objects the integration user's profile cannot read: a query naming them answers INVALID_TYPE, as Salesforce does",
    )
    latency_ms: int = Field(0, ge=0, description="added to every API call")
    bulk_job_delay_ms: int = Field(0, ge=0, description="added to every Bulk job's processing time (Salesforce's queue)")
    seed: int = Field(1, description="seed of the random 503 share")


class Faults:
    """The live fault state, consulted by the API gateway and by every write."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._apply(FaultSettings())

    def _apply(self, settings: FaultSettings) -> None:
        self._settings = settings
        self._rng = random.Random(settings.seed)
        self._burst_left = settings.error_503_burst
        self._calls_before_rate_limit = settings.rate_limit_after
        self._calls_before_session_expiry = settings.session_expires_after
        self._lock_failures: dict[str, int] = {}
        self._expired_sessions: set[str] = set()
        self._injected = dict.fromkeys(
            ("error_503", "request_limit_exceeded", "invalid_session", "unable_to_lock_row", "record_failure"), 0
        )

    # -- admin -----------------------------------------------------------------------------

    def update(self, changes: dict[str, Any]) -> FaultSettings:
        """Merge ``changes`` into the current settings and re-arm every counter."""
        with self._lock:
            merged = self._settings.model_dump() | changes
            settings = FaultSettings.model_validate(merged)
            injected = self._injected
            expired = self._expired_sessions
            self._apply(settings)
            # Counters of what was injected so far, and sessions already expired, survive an update.
            self._injected = injected
            self._expired_sessions = expired
            return settings

    def clear(self) -> None:
        with self._lock:
            self._apply(FaultSettings())

    @property
    def settings(self) -> FaultSettings:
        with self._lock:
            return self._settings

    def injected(self) -> dict[str, int]:
        with self._lock:
            return dict(self._injected)

    # -- per API call ----------------------------------------------------------------------

    def unreadable(self, sobject: str) -> bool:
        return sobject.lower() in {name.lower() for name in self._settings.unreadable_objects}

    def latency_seconds(self) -> float:
        return self._settings.latency_ms / 1000.0

    def bulk_job_delay_seconds(self) -> float:
        return self._settings.bulk_job_delay_ms / 1000.0

    def take_unavailable(self) -> bool:
        """Whether this call answers 503 (a burst first, then the random share)."""
        with self._lock:
            if self._burst_left > 0:
                self._burst_left -= 1
            elif not (self._settings.error_503_share and self._rng.random() < self._settings.error_503_share):
                return False
            self._injected["error_503"] += 1
            return True

    def session_expired(self, token: str) -> bool:
        """Whether ``token`` is (or, as the countdown runs out on this call, becomes) invalid."""
        with self._lock:
            if token in self._expired_sessions:
                self._injected["invalid_session"] += 1
                return True
            if self._calls_before_session_expiry is None:
                return False
            if self._calls_before_session_expiry > 0:
                self._calls_before_session_expiry -= 1
                return False
            # One-shot: this session dies; a fresh login gets a session that stays valid.
            self._calls_before_session_expiry = None
            self._expired_sessions.add(token)
            self._injected["invalid_session"] += 1
            return True

    def take_rate_limited(self) -> bool:
        with self._lock:
            if self._calls_before_rate_limit is None:
                return False
            if self._calls_before_rate_limit > 0:
                self._calls_before_rate_limit -= 1
                return False
            self._injected["request_limit_exceeded"] += 1
            return True

    def note_limit_exceeded(self) -> None:
        """Count a REQUEST_LIMIT_EXCEEDED answered because the daily allowance ran out."""
        with self._lock:
            self._injected["request_limit_exceeded"] += 1

    # -- per record write ------------------------------------------------------------------

    def check_write(self, record_id: str | None) -> None:
        """Raise the configured failure for a write to ``record_id``, if any."""
        if not record_id:
            return
        with self._lock:
            failure = self._settings.fail_rows.get(record_id)
            if failure is not None:
                self._injected["record_failure"] += 1
                raise SalesforceError(failure[0], failure[1])
            if record_id not in self._settings.lock_rows:
                return
            times = self._settings.lock_rows_times
            failed = self._lock_failures.get(record_id, 0)
            if times is not None and failed >= times:
                return
            self._lock_failures[record_id] = failed + 1
            self._injected["unable_to_lock_row"] += 1
        raise SalesforceError(
            "UNABLE_TO_LOCK_ROW",
            f"unable to obtain exclusive access to this record or 1 records: {record_id}",
        )
