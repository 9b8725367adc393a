"""Progress lines for long stages: records done, rate and (where Salesforce is called) API calls."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("salesforce_orders.progress")


class Progress:
    """Logs ``<stage>: <done> <what> (<rate>/s[, N API calls])`` at most every ``every`` seconds,
    and a closing line with the totals. ``api_calls`` reads the calls made so far, when the
    stage talks to Salesforce."""

    def __init__(self, stage: str, what: str, *, every: float = 10.0, api_calls: Callable[[], int] | None = None):
        self.stage, self.what, self.every, self.api_calls = stage, what, every, api_calls
        self.started = self.last = time.monotonic()
        self.done = 0

    def add(self, count: int, detail: str = "") -> None:
        self.done += count
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._log(now, detail)

    def finish(self, detail: str = "") -> float:
        """Log the totals; returns the seconds since the start."""
        now = time.monotonic()
        self._log(now, detail, closing=True)
        return now - self.started

    def _log(self, now: float, detail: str, closing: bool = False) -> None:
        elapsed = max(now - self.started, 1e-9)
        calls = f", {self.api_calls()} API calls" if self.api_calls is not None else ""
        extra = f", {detail}" if detail else ""
        verb = "done" if closing else "so far"
        log.info("%s %s: %d %s in %.1f s (%.0f/s%s%s)", self.stage, verb, self.done, self.what, elapsed, self.done / elapsed, calls, extra)
