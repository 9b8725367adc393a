"""The event trigger against the sandbox's Pub/Sub API, with the import's connection and a real
warehouse (SQLite and PostgreSQL): a burst of changes becomes one event with the order ids, the
import's own write-back is ignored, the replay id survives a restart, a lost subscription is
resumed, and a replay id past the retention is reported and left to the schedule.

Each test waits for the trigger's events (the safety net only fails a hung test); where the trigger
must be subscribed before a change, it resumes from a stored replay id, so no change is missed
however late it connects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from salesforce_orders import event_trigger
from salesforce_orders.config import parse_config
from salesforce_orders.event_trigger import OrderEventsTrigger
from salesforce_orders.order_events import ReplayStore
from salesforce_orders.warehouse import engine_from_connection
from salesforce_orders_local.airflow_env import connection_env
from salesforce_sandbox.events import CHANGE_EVENT_TOPIC, replay_bytes
from tests.conftest import activatable_orders
from tests.sandbox.conftest import sandbox_session

SAFETY_NET_SECONDS = 90
ECHO_CLIENT = "salesforce-orders-import"


def activate(org: Any, order_id: str) -> None:
    """Activate as a user would in Salesforce (not through the import's API client)."""
    with org.store.lock:
        org.store.update("Order", order_id, {"Status": "Activated"})


def write_back_echo(org: Any, order_id: str) -> None:
    """The import's own write-back: an API call naming the import's client."""
    response = sandbox_session(org).patch(
        f"{org.url}/services/data/v59.0/sobjects/Order/{order_id}",
        json={"Description": "written back"},
        headers={"Authorization": f"Bearer {org.credentials['session_id']}", "Sforce-Call-Options": f"client={ECHO_CLIENT}"},
    )
    assert response.status_code == 204, response.text


class Running:
    """A trigger's run() consumed event by event."""

    def __init__(self, config: dict | None):
        self.events: AsyncIterator = OrderEventsTrigger(config).run()

    async def next(self) -> dict:
        return (await asyncio.wait_for(anext(self.events), SAFETY_NET_SECONDS)).payload

    async def stop(self) -> None:
        await self.events.aclose()


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory, org_size: tuple[int, int]) -> Iterator[Any]:
    """The module's org, with a short Pub/Sub keep-alive: an idle subscription reports its position at once."""
    from salesforce_sandbox.server import SandboxServer

    orders, seed = org_size
    with SandboxServer(port=0, orders=orders, seed=seed, state_dir=tmp_path_factory.mktemp("sandbox"),
                       pubsub_keepalive_seconds=0.2) as server:
        yield server


@pytest.fixture
def trigger_config(harness) -> dict:
    return {**harness.config, "events": {"enabled": True, "window_seconds": 0.5, "echo_client": ECHO_CLIENT}}


@pytest.fixture
def replays(harness, trigger_config) -> ReplayStore:
    config = parse_config(trigger_config)
    return ReplayStore(engine_from_connection(config.warehouse_conn_id), config.warehouse_schema, CHANGE_EVENT_TOPIC)


@pytest.fixture
def from_now(org, replays) -> Callable[[], None]:
    """Store the topic's current position: a trigger started after resumes there."""
    return lambda: replays.save(replay_bytes(org.events.latest_replay()))


def run(scenario) -> Any:
    return asyncio.run(scenario)


def test_a_burst_of_activations_becomes_one_event(org, trigger_config, from_now, replays):
    first, second, third = activatable_orders(org, 3)
    from_now()

    async def scenario() -> None:
        trigger = Running(trigger_config)
        activate(org, first)
        activate(org, second)
        event = await trigger.next()
        assert set(event["order_ids"]) <= {first, second} and first in event["order_ids"]
        if second not in event["order_ids"]:  # the window closed between the two: the next event has it
            assert (await trigger.next())["order_ids"] == [second]
        activate(org, third)
        assert (await trigger.next())["order_ids"] == [third]
        await trigger.stop()

    run(scenario())
    # The stored position is past what was handed on.
    assert int.from_bytes(replays.load(), "big") >= org.events.topic(CHANGE_EVENT_TOPIC).last_replay


def test_the_imports_own_write_back_starts_nothing(org, trigger_config, from_now):
    echoed, changed = activatable_orders(org, 2)
    from_now()
    write_back_echo(org, echoed)
    activate(org, changed)

    async def scenario() -> None:
        trigger = Running(trigger_config)
        event = await trigger.next()
        assert event["order_ids"] == [changed]  # the echo, published first, was skipped
        assert event["changes"] == 1
        await trigger.stop()

    run(scenario())


def test_a_restarted_trigger_resumes_from_the_stored_replay_id(org, trigger_config, from_now):
    before, while_stopped = activatable_orders(org, 2)
    from_now()

    async def first_life() -> None:
        trigger = Running(trigger_config)
        activate(org, before)
        assert (await trigger.next())["order_ids"] == [before]
        await trigger.stop()

    run(first_life())
    activate(org, while_stopped)  # nobody subscribed

    async def second_life() -> None:
        trigger = Running(trigger_config)
        assert (await trigger.next())["order_ids"] == [while_stopped]  # not `before` again
        await trigger.stop()

    run(second_life())


def test_a_lost_subscription_is_resumed(org, trigger_config, from_now, replays):
    first, during_outage = activatable_orders(org, 2)
    from_now()

    async def scenario() -> None:
        trigger = Running(trigger_config)
        activate(org, first)
        assert (await trigger.next())["order_ids"] == [first]
        org.drop_pubsub_subscriptions()
        activate(org, during_outage)
        assert (await trigger.next())["order_ids"] == [during_outage]
        await trigger.stop()

    run(scenario())


def test_a_replay_id_past_the_retention_is_reported_and_left_to_the_schedule(org, trigger_config, replays, caplog):
    missed, later = activatable_orders(org, 2)
    stale = replay_bytes(org.events.latest_replay())
    replays.save(stale)
    activate(org, missed)
    org.events.expire_all()  # three days later: Salesforce no longer has it
    caplog.set_level(logging.WARNING, logger="salesforce_orders.event_trigger")

    async def scenario() -> None:
        trigger = Running(trigger_config)
        first_event = asyncio.ensure_future(trigger.next())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SAFETY_NET_SECONDS
        # Refused, reported, subscribed from the latest event: a keep-alive stores the new position.
        while "older than the topic keeps events" not in caplog.text or replays.load() in (None, stale):
            assert loop.time() < deadline and not first_event.done(), "the trigger never resubscribed"
            await asyncio.sleep(0.05)
        activate(org, later)
        assert (await first_event)["order_ids"] == [later]  # the expired change is the schedule's
        await trigger.stop()

    run(scenario())
    assert "the scheduled import covers them" in caplog.text


def test_a_refused_login_is_tried_again_with_backoff_and_never_ends_the_trigger(org, harness, trigger_config, from_now, monkeypatch, caplog):
    """The connection's password was changed in Salesforce before in Airflow: the login is refused.
    The trigger says so and tries again after a growing pause; it never raises (the triggerer would
    start it again at once: a Salesforce login a second, and invalid logins lock the user out).
    Once the connection is right again, the changes since its stored position come through."""
    (changed,) = activatable_orders(org, 1)
    from_now()
    good = connection_env("salesforce_default", org.airflow_connection())
    for key, value in connection_env("salesforce_default", {**org.airflow_connection(), "password": "changed-in-salesforce"}).items():
        monkeypatch.setenv(key, value)
    caplog.set_level(logging.WARNING, logger="salesforce_orders.event_trigger")
    pauses: list[float] = []

    async def pause(seconds: float) -> None:  # (not waited: each pause is an attempt that failed)
        pauses.append(seconds)
        if len(pauses) == 2:  # the connection is fixed in Airflow
            for key, value in good.items():
                monkeypatch.setenv(key, value)
        await asyncio.sleep(0)

    monkeypatch.setattr(event_trigger, "_pause", pause)
    activate(org, changed)

    async def scenario() -> None:
        trigger = Running(trigger_config)
        assert (await trigger.next())["order_ids"] == [changed]
        await trigger.stop()

    run(scenario())
    assert pauses == [2.0, 4.0]  # backing off, not tried again at once
    assert "cannot subscribe (SalesforceAuthenticationFailed" in caplog.text


def test_events_turned_off_while_subscribed_start_nothing_more(org, harness, trigger_config, from_now, monkeypatch):
    """The trigger reads the Variable (the DAG's trigger has no config of its own). Turned off while
    it is subscribed, the changes it gathered are not handed on (the schedule's, as while off) and it
    unsubscribes; turned on again, it hands on what changes after."""
    first, while_off, after = activatable_orders(org, 3)
    harness.set_config(events=trigger_config["events"])
    from_now()
    pauses: list[float] = []

    async def pause(seconds: float) -> None:  # the trigger waiting to read the Variable again: events are off
        pauses.append(seconds)
        harness.set_config(events=trigger_config["events"])
        activate(org, after)
        await asyncio.sleep(0)

    monkeypatch.setattr(event_trigger, "_pause", pause)

    async def scenario() -> None:
        trigger = Running(None)
        activate(org, first)
        assert (await trigger.next())["order_ids"] == [first]
        harness.set_config(events={**trigger_config["events"], "enabled": False})
        activate(org, while_off)
        assert (await trigger.next())["order_ids"] == [after]  # never while_off
        await trigger.stop()

    run(scenario())
    assert pauses == [event_trigger.DISABLED_RECHECK_SECONDS]
