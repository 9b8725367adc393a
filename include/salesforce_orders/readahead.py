"""Read ahead: produce the next chunk of a stage in a background thread while this one is written.

Every stage alternates between Python work (decoding, transforming, building rows) and waiting
for the warehouse or Salesforce to answer. A wait releases the GIL, so a second thread that
reads and decodes the next chunk meanwhile turns waiting time into work time. ``depth`` bounds
how many chunks wait in memory: memory still does not grow with the run.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_END = object()
_POLL_SECONDS = 0.2  # how often a blocked producer checks whether the consumer has gone


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


def read_ahead(chunks: Iterable[T], *, depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """Yield ``chunks`` in order, each produced by a background thread up to ``depth`` chunks ahead.

    An exception raised while producing is raised here, at the chunk it replaced, with its own
    traceback. When the consumer stops early (an error, or it breaks off), the producer stops at
    its next chunk. The producer must use its own connections: nothing is shared but the chunks.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, not {depth}")
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stopped = threading.Event()

    def hand_over(item: object) -> bool:
        while not stopped.is_set():
            try:
                ready.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not hand_over(chunk):
                    return
            hand_over(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            hand_over(_Failure(error))

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    try:
        while True:
            item = ready.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stopped.set()
        producer.join()


__all__ = ["read_ahead"]
