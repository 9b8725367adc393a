"""The event trigger: Salesforce's Order change events, gathered into asset events for the import.

Runs in Airflow's triggerer behind an ``AssetWatcher`` (``airflow_dags/import_dag.py``). It
subscribes to the Pub/Sub API with the import's own Salesforce connection (its session, instance
URL and org id) and, while ``events.enabled`` is on in the Variable:

- gathers the Orders changed within ``events.window_seconds`` of a first change into one
  ``TriggerEvent`` (``{"order_ids": [...]}``): one import run for a burst of activations;
- ignores the echoes of the import's own write-back (their ``changeOrigin`` names the import's client);
- an event that names no order (one it cannot read, Salesforce's overflow event) makes the run it
  starts read every change since the watermark;
- reads the Variable again before handing changes on: turned off, it hands nothing more on and
  unsubscribes (and reads the Variable every minute, as while off);
- keeps the replay id of what it handed on in the warehouse's ``sync_state``, so a restarted
  triggerer resumes where it stopped: an event seen twice only re-syncs an order again (harmless),
  none is skipped;
- when the stored replay id is older than Salesforce's retention (72 hours), says so in its log
  and starts from the latest event: the orders changed in between are the scheduled import's.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from asgiref.sync import sync_to_async

log = logging.getLogger(__name__)

# While events are off, the Variable is read again this often (turning them on needs no restart).
DISABLED_RECHECK_SECONDS = 60.0
MAX_RECONNECT_DELAY_SECONDS = 60.0
# How often the position is stored while nothing is handed on (echoes, keep-alives).
POSITION_SAVE_SECONDS = 30.0
# The trigger's waits between attempts (a test replaces it to see them without waiting).
_pause = asyncio.sleep


@dataclass
class _Subscription:
    """What one subscription needs, read from Airflow (connection, Variable) and the warehouse."""

    credentials: Any
    endpoint: str
    ca_pem: bytes | None
    replays: Any
    topic: str
    window_seconds: float
    echo_client: str


def _open(config: Any) -> _Subscription:
    """Log in with the import's connection and find where the subscription stopped (blocking I/O)."""
    from .order_events import ReplayStore
    from .pubsub_client import SALESFORCE_ENDPOINT, PubSubCredentials
    from .salesforce import SalesforceOrdersHook
    from .warehouse.engines import engine_from_connection

    hook = SalesforceOrdersHook(config.salesforce_conn_id)
    sf = hook.conn
    extras = hook.get_connection(hook.conn_id).extra_dejson
    ca_bundle = extras.get("ca_bundle")
    credentials = PubSubCredentials(
        access_token=sf.session_id,
        instance_url=f"https://{sf.sf_instance}",
        tenant_id=sf.session_id.split("!", 1)[0],  # a session id starts with its org's id
    )
    events = config.events
    return _Subscription(
        credentials=credentials,
        endpoint=events.pubsub_endpoint or extras.get("pubsub_endpoint") or SALESFORCE_ENDPOINT,
        ca_pem=Path(ca_bundle).read_bytes() if ca_bundle else None,
        replays=ReplayStore(engine_from_connection(config.warehouse_conn_id), config.warehouse_schema, events.topic),
        topic=events.topic,
        window_seconds=events.window_seconds,
        echo_client=events.echo_client,
    )


class OrderEventsTrigger(BaseEventTrigger):
    """Order change events → one TriggerEvent per burst, carrying the changed Order ids.

    ``config``: the import's configuration as the Variable's JSON object; None (the DAG's choice)
    reads the Variable each time the trigger (re)connects.
    """

    def __init__(self, config: dict[str, Any] | None = None):
        super().__init__()
        self.config = config

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {"config": self.config}

    def _load_config(self) -> Any:
        from .config import load_config, parse_config

        return parse_config(self.config) if self.config is not None else load_config()

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # grpc (and fastavro) load in a worker thread: importing them would hold up the triggerer's loop.
        grpc = await sync_to_async(importlib.import_module)("grpc")
        await sync_to_async(importlib.import_module)("salesforce_orders.pubsub_client")
        failures = 0
        while True:
            try:
                config = await sync_to_async(self._load_config)()
            except Exception as exc:  # a Variable that does not parse: read again, as while events are off
                log.warning("Order change events: the config cannot be read (%s); reading it again in %.0f s",
                            str(exc)[:500], DISABLED_RECHECK_SECONDS)
                await _pause(DISABLED_RECHECK_SECONDS)
                continue
            if not config.events.enabled:
                await _pause(DISABLED_RECHECK_SECONDS)
                continue
            try:
                # aclosing: stopping the trigger closes the inner generators at once (their finally blocks run).
                async with aclosing(self._follow(config)) as events:
                    async for event in events:
                        failures = 0
                        yield event
                failures = 0
            except Exception as exc:
                # Never raised to Airflow: the triggerer starts a failed watcher's trigger again at
                # once, so a refused login (a changed password) or a warehouse that is down would be
                # tried every second, each time a Salesforce login (invalid ones lock the user out).
                failures += 1
                delay = min(2.0 ** failures, MAX_RECONNECT_DELAY_SECONDS)
                if isinstance(exc, grpc.aio.AioRpcError | OSError | ConnectionError):
                    status = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
                    log.warning("Order change events: subscription lost (%s); reconnecting in %.0f s", status, delay)
                else:
                    log.warning("Order change events: cannot subscribe (%s: %s); trying again in %.0f s",
                                type(exc).__name__, str(exc)[:500], delay)
                await _pause(delay)

    async def _follow(self, config: Any) -> AsyncIterator[TriggerEvent]:
        """One subscription, until it fails; a refused replay id ends it after forgetting the id."""
        from .pubsub_client import PubSubClient, ReplayIdRefused

        sub = await sync_to_async(_open)(config)
        replay_id = await sync_to_async(sub.replays.load)()
        log.info("Order change events: subscribing to %s at %s, %s", sub.topic, sub.endpoint,
                 f"resuming after replay id {replay_id.hex()}" if replay_id else "from the latest event")
        async with PubSubClient(sub.endpoint, sub.credentials, sub.ca_pem) as client:
            try:
                async with aclosing(self._gather(client, sub, replay_id)) as events:
                    async for event in events:
                        yield event
            except ReplayIdRefused:
                log.warning(
                    "Order change events: the stored replay id %s is older than the topic keeps events (Salesforce: "
                    "72 hours). Orders changed since are missed by the events; the scheduled import covers them. "
                    "Subscribing from the latest event.", replay_id.hex() if replay_id else None)
                await sync_to_async(sub.replays.save)(None)

    async def _still_enabled(self) -> bool:
        """Whether ``events.enabled`` is still on (the Variable read again before each hand-on)."""
        try:
            config = await sync_to_async(self._load_config)()
        except Exception:  # a Variable that does not parse just now: what was gathered is handed on
            return True
        return bool(config.events.enabled)

    async def _gather(self, client: Any, sub: _Subscription, replay_id: bytes | None) -> AsyncIterator[TriggerEvent]:
        """Answers read by a task of their own; changes within the window of a first one go out together."""
        from .order_events import is_echo, order_change

        answers: asyncio.Queue = asyncio.Queue()

        async def read() -> None:
            try:
                async for response in client.subscribe(sub.topic, replay_id):
                    await answers.put(response)
                await answers.put(ConnectionError("the Pub/Sub API ended the subscription"))
            except BaseException as exc:  # handed to the consumer, which raises it
                await answers.put(exc)

        reader = asyncio.create_task(read())
        loop = asyncio.get_running_loop()
        order_ids: dict[str, None] = {}
        changes, unreadable, seen_up_to, deadline = 0, 0, None, None
        position_saved_at = -POSITION_SAVE_SECONDS
        try:
            while True:
                timeout = None if deadline is None else max(0.0, deadline - loop.time())
                try:
                    answer = await asyncio.wait_for(answers.get(), timeout)
                except TimeoutError:
                    if not await self._still_enabled():
                        # Turned off meanwhile: nothing more is handed on (these changes are the
                        # schedule's), and the subscription ends; run() then reads the Variable every minute.
                        log.info("Order change events: events.enabled was turned off; %d changes not handed on (the "
                                 "scheduled import reads them), unsubscribing", changes)
                        await sync_to_async(sub.replays.save)(seen_up_to)
                        return
                    try:
                        # An event that could not be read names no order: the run then reads every
                        # change since the watermark (no order ids), which has it too.
                        ids = [] if unreadable else list(order_ids)
                        yield TriggerEvent({"order_ids": ids, "changes": changes, "unreadable": unreadable})
                    finally:
                        # Saved once handed on (also when the triggerer stops the trigger right after):
                        # only a crash in between sends these again, never loses them.
                        await sync_to_async(sub.replays.save)(seen_up_to)
                    order_ids, changes, unreadable, deadline = {}, 0, 0, None
                    continue
                if isinstance(answer, BaseException):
                    raise answer
                for event in answer.events:
                    seen_up_to = event.replay_id
                    try:
                        change = order_change(await client.decode(event))
                    except Exception as exc:  # a payload its schema does not read: an order changed, unknown which
                        log.warning(
                            "A change event (replay id %s) could not be read (%s: %s): the run it starts reads every change "
                            "since the watermark", bytes(event.replay_id).hex(), type(exc).__name__, str(exc)[:200],
                        )
                        unreadable += 1
                    else:
                        if change is None or is_echo(change, sub.echo_client):
                            continue
                        if not change.names_the_orders:
                            # Salesforce's overflow event: Orders changed, too many to name. Like an
                            # event that could not be read, the run it starts reads every change.
                            log.warning(
                                "A change event (replay id %s) is Salesforce's overflow event (%s): the run it starts "
                                "reads every change since the watermark", bytes(event.replay_id).hex(), change.change_type,
                            )
                            unreadable += 1
                        order_ids.update(dict.fromkeys(change.order_ids))
                    changes += 1
                    if deadline is None:
                        deadline = loop.time() + sub.window_seconds
                if deadline is None and loop.time() >= position_saved_at + POSITION_SAVE_SECONDS:
                    # Nothing waits to be handed on: remember now and then how far the topic has been
                    # read (echoes, or a keep-alive's latest replay id), so a restart need not re-read
                    # it all. Not at every answer: each save is a warehouse write, beside the import's.
                    position = seen_up_to if answer.events else answer.latest_replay_id
                    if position:
                        await sync_to_async(sub.replays.save)(position)
                        position_saved_at = loop.time()
        finally:
            reader.cancel()
