"""Read ahead: produce the next chunk of a stage in a background thread while this one is written.

Every stage alternates between Python work (decoding, transforming, building rows) and waiting
for the warehouse or Salesforce to answer. A wait releases the GIL, so a second thread that
reads and decodes the next chunk meanwhile turns waiting time into work time. ``depth`` bounds
how many chunks wait in memory: memory still does not grow with the run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()
_POLL_SECONDS = 0.2  # how often a blocked producer checks whether the consumer has gone


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class ReadAhead(Generic[T]):
    """``chunks`` produced by a background thread up to ``depth`` chunks ahead, from :meth:`start`
    on, or from the first chunk asked for: a producer started before its chunks are wanted does
    its waiting (Salesforce preparing a Bulk job's result pages, say) while the stage does other
    work. Iterated once; :meth:`close` (also at the end of the iteration) stops the producer at
    its next chunk. The producer must use its own connections: nothing is shared but the chunks.
    """

    def __init__(self, chunks: Iterable[T], *, depth: int = 1, name: str = "read-ahead"):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._chunks = chunks
        self._ready: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._producer = threading.Thread(target=self._produce, name=name, daemon=True)
        self._start_lock = threading.Lock()

    def start(self) -> None:
        with self._start_lock:
            if self._producer.ident is None and not self._stopped.is_set():  # not started yet, nor closed
                self._producer.start()

    def close(self) -> None:
        self._stopped.set()
        with self._start_lock:
            if self._producer.ident is not None:
                self._producer.join()
        close_source = getattr(self._chunks, "close", None)
        if close_source is not None:  # a generator left half-way: its clean-up (downloads, connections) runs now
            close_source()

    def __iter__(self) -> Iterator[T]:
        self.start()
        try:
            while True:
                item = self._ready.get()
                if item is _END:
                    return
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            self.close()

    def _hand_over(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for chunk in self._chunks:
                if not self._hand_over(chunk):
                    return
            self._hand_over(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            self._hand_over(_Failure(error))


def read_ahead(chunks: Iterable[T], *, depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """Yield ``chunks`` in order, each produced by a background thread up to ``depth`` chunks ahead.

    An exception raised while producing is raised here, at the chunk it replaced, with its own
    traceback. When the consumer stops early (an error, or it breaks off), the producer stops at
    its next chunk. The producer must use its own connections: nothing is shared but the chunks.
    Chunks a :class:`ReadAhead` produces already are taken from it as they are (no second thread).
    """
    reader = chunks if isinstance(chunks, ReadAhead) else ReadAhead(chunks, depth=depth, name=name)  # (depth < 1: refused here)
    yield from reader


def after_the_first(chunks: Iterable[T], then: Callable[[], object]) -> Iterator[T]:
    """``chunks``, calling ``then`` once the first of them has come (not at all if none does)."""
    called = False
    for chunk in chunks:
        if not called:
            called = True
            then()
        yield chunk


__all__ = ["ReadAhead", "after_the_first", "read_ahead"]
