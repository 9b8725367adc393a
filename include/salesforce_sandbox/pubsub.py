"""The sandbox's Pub/Sub API: Salesforce's ``eventbus.v1.PubSub`` gRPC service over TLS, on a port of its own.

Every call carries the metadata Salesforce requires (``accesstoken``, ``instanceurl``, ``tenantid``);
a session the org did not issue, another instance or another org is refused with ``UNAUTHENTICATED``
and Salesforce's ``error-code`` trailer. ``Subscribe`` is Salesforce's flow-controlled stream: the
client asks for ``num_requested`` events (at most 100 outstanding), the server sends at most that
many and says in ``pending_num_requested`` how many it still owes; with nothing to send it answers
an empty keep-alive ``FetchResponse`` (carrying the latest replay id) every ``keepalive_seconds``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures

import grpc

from salesforce_pubsub_api import pubsub_api_pb2 as pb
from salesforce_pubsub_api import pubsub_api_pb2_grpc as pb_grpc

from .auth import ORG_ID
from .events import EventBus, ReplayIdInvalid, replay_bytes
from .runtime import SandboxRuntime

log = logging.getLogger(__name__)

MAX_NUM_REQUESTED = 100
DEFAULT_KEEPALIVE_SECONDS = 270.0  # Salesforce's interval
# Salesforce's error codes, sent as the ``error-code`` trailing metadata.
AUTH_ERROR = "sfdc.platform.eventbus.grpc.service.auth.error"
TOPIC_NOT_FOUND = "sfdc.platform.eventbus.grpc.topic.not.found"
SCHEMA_NOT_FOUND = "sfdc.platform.eventbus.grpc.schema.not.found"
REPLAY_ID_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
FETCH_INVALID = "sfdc.platform.eventbus.grpc.fetch.request.invalid"


def _abort(context: grpc.ServicerContext, status: grpc.StatusCode, code: str, message: str) -> None:
    context.set_trailing_metadata((("error-code", code),))
    context.abort(status, message)


class PubSubService(pb_grpc.PubSubServicer):
    def __init__(self, runtime: SandboxRuntime, bus: EventBus, instance_url: str, keepalive_seconds: float):
        self.runtime = runtime
        self.bus = bus
        self.instance_url = instance_url.rstrip("/")
        self.keepalive_seconds = keepalive_seconds
        self._stopping = threading.Event()
        self._generation = 0  # bumped by drop_subscriptions: streams of an older generation end

    def drop_subscriptions(self) -> None:
        """End every open subscription with UNAVAILABLE, as a server restart or a network cut would."""
        with self.bus.changed:
            self._generation += 1
            self.bus.changed.notify_all()

    def stop(self) -> None:
        self._stopping.set()
        with self.bus.changed:
            self.bus.changed.notify_all()

    # -- authentication ----------------------------------------------------------------------

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata())
        token = metadata.get("accesstoken", "")
        sessions_ok = self.runtime.auth.sessions.is_valid(token) and not self.runtime.faults.session_expired(token)
        instance_ok = metadata.get("instanceurl", "").rstrip("/") == self.instance_url
        tenant = metadata.get("tenantid", "")
        tenant_ok = bool(tenant) and ORG_ID.startswith(tenant[:15]) and len(tenant) in (15, 18)
        if not (sessions_ok and instance_ok and tenant_ok):
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, AUTH_ERROR,
                   "An error occurred while trying to authenticate. Check the accesstoken, instanceurl and "
                   "tenantid headers and try again.")

    def _topic(self, context: grpc.ServicerContext, name: str):
        topic = self.bus.topic(name)
        if topic is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, TOPIC_NOT_FOUND,
                   f"Topic not found or you don't have access to it: {name}")
        return topic

    # -- unary calls -------------------------------------------------------------------------

    def GetTopic(self, request: pb.TopicRequest, context: grpc.ServicerContext) -> pb.TopicInfo:  # noqa: N802
        self._authenticate(context)
        topic = self._topic(context, request.topic_name)
        return pb.TopicInfo(topic_name=topic.name, tenant_guid=ORG_ID, can_publish=True, can_subscribe=True,
                            schema_id=topic.schema_id, rpc_id=str(uuid.uuid4()))

    def GetSchema(self, request: pb.SchemaRequest, context: grpc.ServicerContext) -> pb.SchemaInfo:  # noqa: N802
        self._authenticate(context)
        topic = self.bus.schema_by_id(request.schema_id)
        if topic is None:
            _abort(context, grpc.StatusCode.NOT_FOUND, SCHEMA_NOT_FOUND, f"Schema not found: {request.schema_id}")
        return pb.SchemaInfo(schema_json=json.dumps(topic.schema), schema_id=topic.schema_id, rpc_id=str(uuid.uuid4()))

    def Publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> pb.PublishResponse:  # noqa: N802
        self._authenticate(context)
        return self._publish(request, context)

    def PublishStream(self, request_iterator, context):  # noqa: N802
        self._authenticate(context)
        for request in request_iterator:
            yield self._publish(request, context)

    def _publish(self, request: pb.PublishRequest, context: grpc.ServicerContext) -> pb.PublishResponse:
        topic = self._topic(context, request.topic_name)
        results = []
        for event in request.events:
            if event.schema_id != topic.schema_id:
                results.append(pb.PublishResult(
                    error=pb.Error(code=pb.PUBLISH, msg=f"schema {event.schema_id} is not the topic's schema"),
                    correlation_key=event.id))
                continue
            replay = self.bus.publish(topic.name, event.payload, event.id or None)
            results.append(pb.PublishResult(replay_id=replay, correlation_key=event.id))
        return pb.PublishResponse(results=results, schema_id=topic.schema_id, rpc_id=str(uuid.uuid4()))

    # -- the subscription --------------------------------------------------------------------

    def Subscribe(self, request_iterator: Iterator[pb.FetchRequest], context: grpc.ServicerContext):  # noqa: N802
        self._authenticate(context)
        first = next(request_iterator, None)
        if first is None:
            return
        topic = self._topic(context, first.topic_name)
        if first.num_requested <= 0:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, FETCH_INVALID, "num_requested must be greater than 0")
        bus = self.bus
        with bus.changed:
            try:
                position = bus.start_after(topic, pb.ReplayPreset.Name(first.replay_preset), first.replay_id)
            except ReplayIdInvalid as exc:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, REPLAY_ID_INVALID,
                       f"The Replay ID validation failed: {exc}")
        flow = _Credit(bus, min(first.num_requested, MAX_NUM_REQUESTED))
        reader = threading.Thread(target=flow.read, args=(request_iterator,), daemon=True,
                                  name="pubsub-subscribe-reader")
        reader.start()
        rpc_id = str(uuid.uuid4())
        generation = self._generation
        next_keepalive = time.monotonic() + self.keepalive_seconds
        while context.is_active() and not self._stopping.is_set():
            with bus.changed:
                if generation != self._generation:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "The subscription was closed by the server.")
                events = bus.events_after(topic, position, flow.credit) if flow.credit > 0 else []
                if events:
                    flow.credit -= len(events)
                    position = events[-1][0]
                pending = flow.credit
                # What the subscription has seen up to: the topic's newest event unless some still wait for credit.
                waiting = bool(bus.events_after(topic, position, 1))
                latest = replay_bytes(position if waiting else max(position, topic.last_replay))
                if not events:
                    wait = next_keepalive - time.monotonic()
                    if wait > 0:
                        # Woken by a publish or a new FetchRequest; the cap re-checks a cancelled stream.
                        bus.changed.wait(min(wait, 1.0))
                        continue
            next_keepalive = time.monotonic() + self.keepalive_seconds
            yield pb.FetchResponse(
                events=[
                    pb.ConsumerEvent(
                        event=pb.ProducerEvent(id=event_id, schema_id=topic.schema_id, payload=payload),
                        replay_id=replay_bytes(replay),
                    )
                    for replay, _at, payload, event_id in events
                ],
                latest_replay_id=replay_bytes(position) if events else latest,
                rpc_id=rpc_id,
                pending_num_requested=pending,
            )


class _Credit:
    """How many events a subscription may still send: what its FetchRequests asked for, at most 100."""

    def __init__(self, bus: EventBus, credit: int):
        self.bus = bus
        self.credit = credit

    def read(self, requests: Iterator[pb.FetchRequest]) -> None:
        try:
            for request in requests:
                with self.bus.changed:
                    self.credit = min(self.credit + max(request.num_requested, 0), MAX_NUM_REQUESTED)
                    self.bus.changed.notify_all()
        except grpc.RpcError:  # the client went away: the sending loop notices through its context
            pass


class PubSubServer:
    """The gRPC server on ``host:port`` with the sandbox's certificate."""

    def __init__(self, runtime: SandboxRuntime, bus: EventBus, *, instance_url: str, cert_pem: bytes, key_pem: bytes,
                 host: str = "127.0.0.1", port: int = 0, keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS):
        self.service = PubSubService(runtime, bus, instance_url, keepalive_seconds)
        # Each open subscription holds a worker: room for the triggerer's, tests' and tools' streams.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="pubsub"))
        pb_grpc.add_PubSubServicer_to_server(self.service, self._server)
        self.port = self._server.add_secure_port(
            f"{host}:{port}", grpc.ssl_server_credentials([(key_pem, cert_pem)])
        )
        if not self.port:
            raise RuntimeError(f"the Pub/Sub API could not listen on {host}:{port}")

    def drop_subscriptions(self) -> None:
        self.service.drop_subscriptions()

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self.service.stop()
        self._server.stop(grace=None).wait(10)
