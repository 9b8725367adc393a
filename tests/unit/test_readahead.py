"""read_ahead: chunks produced by a background thread, in order, bounded, errors raised where they belong."""

from __future__ import annotations

import threading

import pytest

from salesforce_orders.readahead import ReadAhead, after_the_first, read_ahead


def counted(count: int, produced: list[int]):
    """Chunks 0 .. count-1, each noted in ``produced`` as it is made."""
    for n in range(count):
        produced.append(n)
        yield n


def test_yields_every_chunk_in_order_from_another_thread():
    threads = []

    def chunks():
        for n in range(50):
            threads.append(threading.current_thread())
            yield [n, n + 1]

    assert list(read_ahead(chunks())) == [[n, n + 1] for n in range(50)]
    assert threading.current_thread() not in threads


def test_the_producer_runs_at_most_depth_chunks_ahead():
    """The consumer lets the producer get as far ahead as it can before each chunk it takes (it
    waits for the producer to get there, an event); no chunk is produced further ahead than
    depth waiting chunks plus the one being handed over."""
    depth, total = 2, 10
    taken = 0
    ahead: list[int] = []  # per chunk: how far ahead of the consumer it was produced
    changed = threading.Condition()

    def chunks():
        for n in range(total):
            with changed:
                ahead.append(n - taken)
                changed.notify_all()
            yield n

    def far_enough() -> bool:  # the queue full, and one more chunk in the producer's hand
        return len(ahead) >= min(total, taken + depth + 1)

    reader = read_ahead(chunks(), depth=depth)  # the producer starts with the first request
    for expected in range(total):
        assert next(reader) == expected
        taken += 1
        with changed:
            assert changed.wait_for(far_enough, timeout=60)
    assert list(reader) == []
    assert max(ahead) <= depth + 1
    assert min(ahead[depth:]) >= depth  # and it did run ahead as far as the queue allows


def test_a_producer_error_is_raised_to_the_consumer_after_the_chunks_before_it():
    def chunks():
        yield 1
        yield 2
        raise LookupError("staged batch 3 is unreadable")

    reader = read_ahead(chunks())
    assert [next(reader), next(reader)] == [1, 2]
    with pytest.raises(LookupError, match="staged batch 3"):
        next(reader)


def test_the_producer_stops_when_the_consumer_stops():
    produced: list[int] = []
    reader = read_ahead(counted(1000, produced))
    for chunk in reader:
        if chunk == 3:
            break
    reader.close()  # what leaving a for loop's generator does when it is collected: it joins the producer
    assert len(produced) < 10
    assert not [t for t in threading.enumerate() if t.name == "read-ahead"]


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth"):
        next(read_ahead([1], depth=0))


def test_a_reader_started_early_produces_before_its_chunks_are_asked_for_and_stops_when_closed():
    """ReadAhead.start(): the producer begins at once (its waiting overlaps the stage's other
    work) and gets a chunk ahead; closed without being read, it stops and its source is left."""
    produced: list[int] = []
    first_made = threading.Event()

    def chunks():
        for n in range(100):
            produced.append(n)
            first_made.set()
            yield n

    reader = ReadAhead(chunks(), depth=1, name="started-early")
    reader.start()
    assert first_made.wait(timeout=60)
    reader.close()

    assert 1 <= len(produced) <= 3  # the queue's one, the one handed over, and the one made meanwhile
    assert not any(t.name == "started-early" for t in threading.enumerate())


def test_a_reader_started_early_yields_every_chunk_in_order_once():
    reader = ReadAhead(iter(range(20)), depth=2)
    reader.start()
    reader.start()  # a second start changes nothing

    assert list(reader) == list(range(20))


def test_after_the_first_calls_back_once_the_first_chunk_has_come():
    calls: list[str] = []

    def chunks():
        calls.append("asked")
        yield 1
        calls.append("asked")
        yield 2

    seen = [(chunk, list(calls)) for chunk in after_the_first(chunks(), lambda: calls.append("then"))]

    assert seen == [(1, ["asked", "then"]), (2, ["asked", "then", "asked"])]
    assert list(after_the_first(iter(()), lambda: calls.append("never"))) == [] and "never" not in calls


def test_chunks_read_ahead_already_are_not_read_ahead_again():
    """read_ahead over a ReadAhead takes its chunks as they are: one producer thread, not two."""
    producers: list[str] = []

    def chunks():
        for n in range(10):
            producers.append(threading.current_thread().name)
            yield n

    assert list(read_ahead(ReadAhead(chunks(), name="the-one-producer"))) == list(range(10))
    assert set(producers) == {"the-one-producer"}
