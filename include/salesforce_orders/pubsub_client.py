"""A client of Salesforce's Pub/Sub API (gRPC, ``eventbus.v1.PubSub``) for asyncio code.

Authentication is Salesforce's: the ``accesstoken`` (a session of the import's Salesforce
connection), ``instanceurl`` and ``tenantid`` (the org id) metadata on every call. ``subscribe``
keeps Salesforce's flow control: it asks for ``BATCH`` events and asks again for what was delivered
once the server owes fewer than half, so a slow consumer is never flooded and a fast one never waits.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import fastavro
import grpc

from salesforce_pubsub_api import pubsub_api_pb2 as pb
from salesforce_pubsub_api import pubsub_api_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SALESFORCE_ENDPOINT = "api.pubsub.salesforce.com:7443"
BATCH = 100  # Salesforce's most events a subscription may have requested at once
REPLAY_ID_INVALID = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed"
# Keep the HTTP/2 connection checked while the topic is quiet (Salesforce's own keep-alive is 270 s).
_CHANNEL_OPTIONS = [("grpc.keepalive_time_ms", 60_000), ("grpc.keepalive_timeout_ms", 20_000)]


@dataclass(frozen=True)
class PubSubCredentials:
    """What a Pub/Sub call is authorised with; the token is a secret and never logged."""

    access_token: str
    instance_url: str
    tenant_id: str

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("accesstoken", self.access_token), ("instanceurl", self.instance_url), ("tenantid", self.tenant_id))

    def __repr__(self) -> str:  # dataclass's repr would show the token
        return f"PubSubCredentials(instance_url={self.instance_url!r}, tenant_id={self.tenant_id!r})"


class ReplayIdRefused(Exception):
    """The stored replay id is no longer retained (older than the topic's retention)."""


def error_code(exc: grpc.aio.AioRpcError) -> str | None:
    """Salesforce's ``error-code`` trailer of a failed call."""
    return dict(exc.trailing_metadata() or ()).get("error-code")


class PubSubClient:
    """One channel to the Pub/Sub API; use as ``async with PubSubClient(...) as client``."""

    def __init__(self, endpoint: str, credentials: PubSubCredentials, ca_pem: bytes | None = None):
        self.endpoint = endpoint
        self.credentials = credentials
        self._channel = grpc.aio.secure_channel(
            endpoint, grpc.ssl_channel_credentials(root_certificates=ca_pem), options=_CHANNEL_OPTIONS
        )
        self._stub = pb_grpc.PubSubStub(self._channel)
        self._schemas: dict[str, Any] = {}

    async def __aenter__(self) -> PubSubClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._channel.close()

    async def schema_id(self, topic: str) -> str:
        info = await self._stub.GetTopic(pb.TopicRequest(topic_name=topic), metadata=self.credentials.metadata())
        return info.schema_id

    async def decode(self, event: pb.ConsumerEvent) -> dict:
        """The event's Avro payload as a dict (its schema fetched once per schema id)."""
        schema_id = event.event.schema_id
        if schema_id not in self._schemas:
            info = await self._stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=self.credentials.metadata())
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(info.schema_json))
        return fastavro.schemaless_reader(io.BytesIO(event.event.payload), self._schemas[schema_id])

    def field_names(self, schema_id: str) -> list[str]:
        """The top-level field names of a fetched schema, in order (the positions of changedFields' bitmap)."""
        return [f["name"] for f in self._schemas[schema_id]["fields"]]

    async def subscribe(self, topic: str, replay_id: bytes | None) -> AsyncIterator[pb.FetchResponse]:
        """Every FetchResponse of a subscription resuming after ``replay_id`` (None: from the latest).

        Raises :class:`ReplayIdRefused` when the server no longer has ``replay_id``."""
        requests: asyncio.Queue[pb.FetchRequest | None] = asyncio.Queue()
        first = pb.FetchRequest(topic_name=topic, num_requested=BATCH)
        if replay_id:
            first.replay_preset, first.replay_id = pb.CUSTOM, replay_id
        else:
            first.replay_preset = pb.LATEST
        await requests.put(first)

        async def outgoing() -> AsyncIterator[pb.FetchRequest]:
            while (request := await requests.get()) is not None:
                yield request

        call = self._stub.Subscribe(outgoing(), metadata=self.credentials.metadata())
        try:
            async for response in call:
                owed = response.pending_num_requested
                if owed < BATCH // 2:  # the server caps what is owed at 100: asking twice is harmless
                    await requests.put(pb.FetchRequest(num_requested=BATCH - owed))
                yield response
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT and error_code(exc) == REPLAY_ID_INVALID:
                raise ReplayIdRefused(exc.details()) from None
            raise
        finally:
            await requests.put(None)
            call.cancel()
