"""The event trigger's gathering of change events, with a stand-in for the Pub/Sub client: an event
whose payload cannot be read does not end the trigger; the run it starts reads every change."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from salesforce_orders import event_trigger


class Replays:
    def __init__(self) -> None:
        self.saved: list[bytes | None] = []

    def load(self) -> None:
        return None

    def save(self, replay_id: bytes | None) -> None:
        self.saved.append(replay_id)


class Client:
    """Answers one batch of events, then keeps the subscription open; ``payloads`` by replay id (an
    exception: the payload does not decode)."""

    def __init__(self, payloads: dict[bytes, object]) -> None:
        self.payloads = payloads

    async def subscribe(self, topic: str, replay_id: bytes | None):
        yield SimpleNamespace(events=[SimpleNamespace(replay_id=r) for r in self.payloads], latest_replay_id=list(self.payloads)[-1])
        await asyncio.Event().wait()  # open until the trigger is done with it

    async def decode(self, event: SimpleNamespace) -> object:
        payload = self.payloads[event.replay_id]
        if isinstance(payload, Exception):
            raise payload
        return payload


def change(order_id: str) -> dict:
    return {"ChangeEventHeader": {"changeType": "UPDATE", "entityName": "Order", "recordIds": [order_id], "changeOrigin": ""}}


def first_event(payloads: dict[bytes, object]) -> tuple[dict, Replays]:
    replays = Replays()
    subscription = event_trigger._Subscription(None, "", None, replays, "/data/OrderChangeEvent", 0, "salesforce-orders-import")

    async def run() -> dict:
        events = event_trigger.OrderEventsTrigger()._gather(Client(payloads), subscription, None)
        try:
            return (await anext(events)).payload
        finally:
            await events.aclose()

    return asyncio.run(run()), replays


def test_an_event_that_does_not_decode_starts_a_run_that_reads_every_change_and_the_trigger_goes_on(caplog):
    payload, replays = first_event({b"\x01": ValueError("bad avro"), b"\x02": change("801000000000002AAA")})

    assert payload == {"order_ids": [], "changes": 2, "unreadable": 1}
    assert replays.saved == [b"\x02"]  # past both: the run reads the unreadable one's change too
    assert "could not be read (ValueError: bad avro)" in caplog.text and "replay id 01" in caplog.text


def test_readable_events_name_their_orders():
    payload, _ = first_event({b"\x01": change("801000000000001AAA"), b"\x02": change("801000000000002AAA")})

    assert payload == {"order_ids": ["801000000000001AAA", "801000000000002AAA"], "changes": 2, "unreadable": 0}
