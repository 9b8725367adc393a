"""The event trigger's gathering of change events, with a stand-in for the Pub/Sub client: an event
whose payload cannot be read does not end the trigger; the run it starts reads every change."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
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
        events = event_trigger.OrderEventsTrigger({"events": {"enabled": True}})._gather(Client(payloads), subscription, None)
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



def test_salesforces_overflow_event_names_no_order_and_the_run_reads_every_change(caplog):
    """One transaction changed more Orders than Salesforce sends events for: its overflow event names
    none. Counted like an event that could not be read, never dropped."""
    overflow = {"ChangeEventHeader": {"changeType": "GAP_OVERFLOW", "entityName": "Order", "recordIds": [], "changeOrigin": ""}}
    payload, replays = first_event({b"\x01": overflow, b"\x02": change("801000000000002AAA")})

    assert payload == {"order_ids": [], "changes": 2, "unreadable": 1}
    assert replays.saved == [b"\x02"]
    assert "overflow event (GAP_OVERFLOW)" in caplog.text


class InletEvents:
    """``inlet_events[asset]``: the asset's events after a time, as Airflow's accessor answers."""

    def __init__(self, events: list) -> None:
        self.events = events

    def __getitem__(self, asset):
        return self

    def after(self, iso: str) -> InletEvents:
        return InletEvents([e for e in self.events if e.timestamp > datetime.fromisoformat(iso)])

    def limit(self, n: int) -> list:
        return self.events[:n]


def asset_event(minute: int, order_ids: list[str], unreadable: int = 0) -> SimpleNamespace:
    payload = {"order_ids": order_ids, "changes": max(1, len(order_ids)), "unreadable": unreadable}
    return SimpleNamespace(timestamp=datetime(2026, 3, 1, 12, minute, tzinfo=UTC), extra={"from_trigger": True, "payload": payload})


def test_an_event_run_given_an_event_that_names_no_order_reads_every_change_not_just_the_others_orders():
    """Events arriving while a run is active come to the next run together (its triggering events),
    or after its own (taken too): one that names no order (unreadable, an overflow) among them makes
    the run an ordinary one from the watermark; a run of the other events' orders alone would leave
    its change to the next scheduled run."""
    from salesforce_orders.airflow_dags.import_dag import ORDER_CHANGES, _event_run_order_ids

    def order_ids(triggering: list, later: list) -> list[str]:
        return _event_run_order_ids({"triggering_asset_events": {ORDER_CHANGES: triggering}, "inlet_events": InletEvents(triggering + later)})

    a, b = "801000000000001AAA", "801000000000002AAA"
    assert order_ids([asset_event(1, [a])], [asset_event(2, [b])]) == [a, b]
    assert order_ids([asset_event(1, [], unreadable=1), asset_event(2, [a])], []) == []
    assert order_ids([asset_event(1, [a])], [asset_event(2, [], unreadable=1)]) == []
    assert order_ids([asset_event(1, [a]), asset_event(2, [b], unreadable=1)], []) == []
