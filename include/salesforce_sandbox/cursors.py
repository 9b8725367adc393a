"""Query locators: the server-side cursors behind ``nextRecordsUrl``.

A root cursor is a snapshot of the matching root ids taken when the query ran; each page
fetches its rows by id, so later pages see the rows as they are then (as Salesforce does)
but never gain or lose members. A child cursor holds the remaining records of one child
subquery that was cut at the child page size.

Cursors expire after 15 minutes without use, and the store keeps a bounded number (the
least recently used go first); an expired locator answers ``INVALID_QUERY_LOCATOR``.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .errors import SalesforceError
from .soql import PreparedQuery

LOCATOR_PREFIX = "01g"  # the key prefix Salesforce uses for query locators
IDLE_TIMEOUT_SECONDS = 15 * 60
MAX_CURSORS = 2000
_ALPHABET = string.ascii_letters + string.digits


@dataclass
class RootCursor:
    prepared: PreparedQuery  # fetches the rows of a page by id
    ids: list[str]
    page_size: int

    @property
    def total(self) -> int:
        return len(self.ids)


@dataclass
class ChildCursor:
    records: list[dict]
    page_size: int

    @property
    def total(self) -> int:
        return len(self.records)


Cursor = RootCursor | ChildCursor


class CursorStore:
    def __init__(
        self,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        max_cursors: int = MAX_CURSORS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._idle_timeout = idle_timeout
        self._max_cursors = max_cursors
        self._clock = clock
        self._lock = threading.Lock()
        self._cursors: OrderedDict[str, tuple[Cursor, float]] = OrderedDict()

    def open(self, cursor: Cursor) -> str:
        """Keep ``cursor`` and return its locator (``01g`` + 15 characters)."""
        locator = LOCATOR_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(15))
        with self._lock:
            self._expire()
            self._cursors[locator] = (cursor, self._clock())
            while len(self._cursors) > self._max_cursors:
                self._cursors.popitem(last=False)
        return locator

    def get(self, locator: str) -> Cursor:
        with self._lock:
            self._expire()
            entry = self._cursors.get(locator)
            if entry is None:
                raise SalesforceError("INVALID_QUERY_LOCATOR", "invalid query locator")
            self._cursors[locator] = (entry[0], self._clock())
            self._cursors.move_to_end(locator)
            return entry[0]

    def close(self, locator: str) -> None:
        with self._lock:
            self._cursors.pop(locator, None)

    def clear(self) -> None:
        with self._lock:
            self._cursors.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cursors)

    def _expire(self) -> None:
        oldest_allowed = self._clock() - self._idle_timeout
        while self._cursors:
            locator, (_, last_used) = next(iter(self._cursors.items()))
            if last_used >= oldest_allowed:
                break
            del self._cursors[locator]


def split_next_records_locator(value: str) -> tuple[str, int]:
    """``01gXXXX-2000`` -> (``01gXXXX``, 2000); a malformed value is an invalid locator."""
    locator, sep, offset = value.rpartition("-")
    if not sep or not locator or not offset.isdigit():
        raise SalesforceError("INVALID_QUERY_LOCATOR", "invalid query locator")
    return locator, int(offset)
