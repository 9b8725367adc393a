"""The sandbox's event bus: the Order change events a Salesforce org publishes, kept for replay.

Two topics, as Salesforce names them:
- ``/data/OrderChangeEvent``: Change Data Capture. The Avro payload has a ``ChangeEventHeader``
  (changeType, recordIds, changeOrigin, commitTimestamp, commitUser, and changedFields /
  nulledFields / diffFields as Salesforce encodes them: a hex bitmap over the schema's field
  positions) followed by the Order's fields, each ``["null", type]``: every set field on CREATE,
  just the changed ones on UPDATE, none on DELETE.
- ``/event/OrderStatusChangedEvent``: a platform event per change of an Order's Status.

Replay ids are opaque to clients (8 bytes here). Events are kept ``retention_seconds`` (72 hours,
as Salesforce keeps them); a subscription asking to resume from an id older than that is refused,
as Salesforce refuses it, so the subscriber knows it missed events.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import fastavro

from .changes import CREATE, DELETE, UPDATE, RecordChange
from .schema import Schema

CHANGE_EVENT_TOPIC = "/data/OrderChangeEvent"
STATUS_EVENT_TOPIC = "/event/OrderStatusChangedEvent"
DEFAULT_RETENTION_SECONDS = 72 * 3600
# Fields a change event leaves out: the record's id is in recordIds, the rest is bookkeeping.
_NOT_IN_CHANGE_EVENTS = {"Id", "IsDeleted", "SystemModstamp"}

CHANGE_EVENT_HEADER = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": "com.salesforce.eventbus",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {
                "type": "enum",
                "name": "ChangeType",
                "namespace": "com.salesforce.eventbus",
                "symbols": ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE",
                            "GAP_UNDELETE", "GAP_OVERFLOW", "SNAPSHOT"],
            },
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}

STATUS_EVENT_SCHEMA = {
    "type": "record",
    "name": "OrderStatusChangedEvent",
    "namespace": "com.sforce.eventbus",
    "fields": [
        {"name": "CreatedDate", "type": "long"},
        {"name": "CreatedById", "type": "string"},
        {"name": "EventUuid", "type": ["null", "string"], "default": None},
        {"name": "OrderId", "type": "string"},
        {"name": "OrderNumber", "type": ["null", "string"], "default": None},
        {"name": "OldStatus", "type": ["null", "string"], "default": None},
        {"name": "NewStatus", "type": ["null", "string"], "default": None},
    ],
}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_AVRO_TYPES = {"boolean": "boolean", "int": "int", "double": "double", "currency": "double", "percent": "double",
               "date": "int", "datetime": "long"}


def change_event_schema(schema: Schema) -> dict:
    """OrderChangeEvent's Avro schema: the header, then every Order field as an optional value."""
    order = schema.objects["Order"]
    fields = [{"name": "ChangeEventHeader", "type": CHANGE_EVENT_HEADER}]
    fields += [
        {"name": f.name, "type": ["null", _AVRO_TYPES.get(f.type, "string")], "default": None}
        for f in order.fields
        if f.name not in _NOT_IN_CHANGE_EVENTS
    ]
    return {"type": "record", "name": "OrderChangeEvent", "namespace": "com.sforce.eventbus", "fields": fields}


def field_bitmap(positions: list[int]) -> str:
    """Salesforce's bitmap of field positions: bit n set for the schema's n-th field, as ``0x`` hex."""
    bits = sum(1 << n for n in positions)
    text = format(bits, "X")
    return "0x" + ("0" * (len(text) % 2)) + text


def _ms(stamp: str) -> int:
    """Milliseconds since the epoch of a stamp, as ``datetime.timestamp() * 1000`` gives them.

    The store writes every stamp as ``YYYY-MM-DDThh:mm:ss.SSS+0000``, a Bulk job thousands a
    second: those take their whole second from a cache and the same float arithmetic as
    ``timestamp()`` (a parse per stamp was most of publishing an event)."""
    if len(stamp) == 28 and stamp[19] == "." and stamp.endswith("+0000") and stamp[20:23].isdigit():
        micros = _epoch_second(stamp[:19]) * 10**6 + int(stamp[20:23]) * 1000
        return int(micros / 10**6 * 1000)
    return int(datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)


@functools.lru_cache(maxsize=1024)
def _epoch_second(text: str) -> int:
    return int((datetime.strptime(text, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC) - _EPOCH).total_seconds())


_UUID_VERSION_4 = (0x4000 << 64) | (0x8000 << 48)  # the version (4) and variant (RFC 4122) bits
_UUID_FIXED_BITS = (0xF000 << 64) | (0xC000 << 48)
_UUID_RANDOM = random.Random()  # seeded from the system; apart from the random module's shared state


def random_uuid() -> str:
    """A random (version 4) UUID's text, as ``str(uuid.uuid4())`` but without a system call each:
    a Bulk job's events take three apiece. (Event ids need to be unique, not unguessable.)"""
    digits = f"{_UUID_RANDOM.getrandbits(128) & ~_UUID_FIXED_BITS | _UUID_VERSION_4:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _avro_value(avro_type: str, value: object) -> object:
    """A stored value (sandbox storage form) as its Avro type: dates as days, datetimes as ms."""
    if value is None:
        return None
    if avro_type == "int" and isinstance(value, str):  # a date
        return (date.fromisoformat(value) - date(1970, 1, 1)).days
    if avro_type == "long" and isinstance(value, str):  # a datetime
        return _ms(value)
    if avro_type == "boolean":
        return bool(value)
    if avro_type == "double":
        return float(value)
    return value if avro_type != "string" else str(value)


class PendingPayload:
    """An event whose Avro record is built and encoded, and whose event id is drawn, when a
    subscription first reads it (then kept).

    A Bulk job publishes up to two events per Order it changes, and building and encoding them
    was half of the job's CPU; most of them are never read before they expire. One object per
    event holds what the record is built from (fewer objects for the garbage collector to visit)."""

    __slots__ = ("_topic", "_build", "_change", "_sequence", "_committed_at", "_read")

    def __init__(self, topic: Topic, build: RecordBuilder, change: RecordChange, sequence: int, committed_at: float):
        self._topic: Topic | None = topic
        self._build: RecordBuilder | None = build
        self._change: RecordChange | None = change
        self._sequence = sequence
        self._committed_at = committed_at
        self._read: tuple[bytes, str] | None = None

    def read(self) -> tuple[bytes, str]:
        """The payload and the event id."""
        if self._read is None:
            record = self._build(self._topic, self._change, self._sequence, self._committed_at)
            self._read = (self._topic.encode(record), random_uuid())
            self._topic = self._build = self._change = None
        return self._read


Payload = bytes | PendingPayload
RecordBuilder = Callable[["Topic", RecordChange, int, float], dict]  # (topic, change, sequence, commit time)


@dataclass
class Topic:
    name: str
    schema: dict
    parsed_schema: dict = field(init=False)
    schema_id: str = field(init=False)
    events: deque[tuple[int, float, Payload, str | None]] = field(default_factory=deque)  # replay, time, payload, event id
    pruned_through: int = 0  # the highest replay id no longer kept (events after it are all here)
    last_replay: int = 0
    slots: dict[str, tuple[int, str]] = field(init=False)

    def __post_init__(self) -> None:
        self.parsed_schema = fastavro.parse_schema(self.schema)
        # Each optional field's position in the record and its Avro type, by name (the header is 0).
        self.slots = {
            spec["name"]: (position, spec["type"][1])
            for position, spec in enumerate(self.schema["fields"][1:], start=1)
            if isinstance(spec["type"], list)
        }
        canonical = json.dumps(self.schema, sort_keys=True, separators=(",", ":"))
        self.schema_id = hashlib.sha256(canonical.encode()).hexdigest()[:22]

    def encode(self, record: dict) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, self.parsed_schema, record)
        return out.getvalue()


def _change_event(topic: Topic, change: RecordChange, sequence: int, committed_at: float) -> dict:
    record: dict = {}
    changed_positions, nulled_positions = [], []
    for name, stored in change.values.items():  # (the Avro writer takes the schema's order)
        slot = topic.slots.get(name)
        if slot is None:
            continue
        position, avro_type = slot
        value = _avro_value(avro_type, stored)
        record[name] = value
        if change.change_type == UPDATE:
            changed_positions.append(position)
            if value is None:
                nulled_positions.append(position)
    record["ChangeEventHeader"] = {
        "entityName": change.sobject,
        "recordIds": [change.record_id],
        "changeType": change.change_type,
        "changeOrigin": change.origin,
        "transactionKey": random_uuid(),
        "sequenceNumber": sequence + 1,
        "commitTimestamp": _ms(change.commit_stamp),
        "commitNumber": int(committed_at * 1000) * 1000 + sequence,
        "commitUser": change.commit_user,
        "nulledFields": [field_bitmap(nulled_positions)] if nulled_positions else [],
        "diffFields": [],
        "changedFields": [field_bitmap(changed_positions)] if changed_positions else [],
    }
    if change.change_type == CREATE:
        record["ChangeEventHeader"]["changedFields"] = []
    return record


def _status_event(topic: Topic, change: RecordChange, sequence: int, committed_at: float) -> dict:
    return {
        "CreatedDate": _ms(change.commit_stamp),
        "CreatedById": change.commit_user,
        "EventUuid": random_uuid(),
        "OrderId": change.record_id,
        "OrderNumber": change.order_number,
        "OldStatus": change.status_before,
        "NewStatus": change.status_after,
    }


class ReplayIdInvalid(ValueError):
    """A CUSTOM replay id the bus cannot resume from (older than the retention, or never issued)."""


def replay_bytes(replay: int) -> bytes:
    return replay.to_bytes(8, "big")


def replay_int(replay_id: bytes) -> int:
    if len(replay_id) != 8:
        raise ReplayIdInvalid("malformed replay id")
    return int.from_bytes(replay_id, "big")


class EventBus:
    """The org's published events per topic, replayable within the retention."""

    def __init__(self, schema: Schema, retention_seconds: float = DEFAULT_RETENTION_SECONDS,
                 clock: Callable[[], float] = time.time):
        self.retention_seconds = retention_seconds
        self.clock = clock
        # One condition for publishers and every subscription: a publish wakes them all.
        self.changed = threading.Condition()
        self._replay = 0
        self.topics = {
            CHANGE_EVENT_TOPIC: Topic(CHANGE_EVENT_TOPIC, change_event_schema(schema)),
            STATUS_EVENT_TOPIC: Topic(STATUS_EVENT_TOPIC, STATUS_EVENT_SCHEMA),
        }

    def topic(self, name: str) -> Topic | None:
        return self.topics.get(name)

    def schema_by_id(self, schema_id: str) -> Topic | None:
        return next((t for t in self.topics.values() if t.schema_id == schema_id), None)

    # -- publishing --------------------------------------------------------------------------

    def publish(self, topic_name: str, payload: bytes, event_id: str | None = None) -> bytes:
        """Append an encoded event; returns its replay id."""
        with self.changed:
            topic = self.topics[topic_name]
            self._append(topic, payload, event_id)
            self._prune(topic)
            self.changed.notify_all()
            return replay_bytes(self._replay)

    def _append(self, topic: Topic, payload: Payload, event_id: str | None = None) -> None:
        self._replay += 1
        if isinstance(payload, bytes):
            event_id = event_id or random_uuid()
        topic.events.append((self._replay, self.clock(), payload, event_id))  # a pending payload has its own id
        topic.last_replay = self._replay

    def on_store_changes(self, changes: list[RecordChange]) -> None:
        """The store's listener: one change event per Order change, and a status event when Status moved.
        A transaction's events are appended under one hold of the lock and wake subscriptions once."""
        changes_topic, status_topic = self.topics[CHANGE_EVENT_TOPIC], self.topics[STATUS_EVENT_TOPIC]
        with self.changed:
            for number, change in enumerate(changes):
                committed_at = self.clock()
                self._append(changes_topic, PendingPayload(changes_topic, _change_event, change, number, committed_at))
                if change.change_type != DELETE and change.status_before != change.status_after:
                    self._append(status_topic, PendingPayload(status_topic, _status_event, change, number, committed_at))
            self._prune(changes_topic)
            self._prune(status_topic)
            self.changed.notify_all()

    # -- reading -----------------------------------------------------------------------------

    def _prune(self, topic: Topic) -> None:
        oldest_kept = self.clock() - self.retention_seconds
        while topic.events and topic.events[0][1] < oldest_kept:
            topic.pruned_through = topic.events.popleft()[0]

    def expire_all(self) -> None:
        """Drop every event kept so far, as if the retention had passed since (for tests of the gap)."""
        with self.changed:
            for topic in self.topics.values():
                if topic.events:
                    topic.pruned_through = topic.events[-1][0]
                    topic.events.clear()

    def start_after(self, topic: Topic, preset: str, replay_id: bytes) -> int:
        """The replay id a new subscription delivers events after (call with ``changed`` held)."""
        self._prune(topic)
        if preset == "LATEST":
            return self._replay
        if preset == "EARLIEST":
            return topic.pruned_through
        replay = replay_int(replay_id)
        if replay < topic.pruned_through or replay > self._replay:
            raise ReplayIdInvalid("the replay id is outside the retention window of the topic")
        return replay

    def events_after(self, topic: Topic, replay: int, limit: int) -> list[tuple[int, float, bytes, str]]:
        """Up to ``limit`` kept events after ``replay``, payloads encoded (call with ``changed`` held)."""
        self._prune(topic)
        found = []
        for number, at, payload, event_id in topic.events:
            if number > replay:
                if not isinstance(payload, bytes):
                    payload, event_id = payload.read()
                found.append((number, at, payload, event_id))
                if len(found) >= limit:
                    break
        return found

    def latest_replay(self) -> int:
        return self._replay

