"""The sandbox's Pub/Sub API through a real gRPC client over TLS: topics and schemas, the change
events an Order's create / activation / delete publish (Avro, Salesforce's ChangeEventHeader),
replay presets, flow control, keep-alives, retention and the errors Salesforce answers."""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterator

import fastavro
import grpc
import pytest

from salesforce_pubsub_api import pubsub_api_pb2 as pb
from salesforce_pubsub_api import pubsub_api_pb2_grpc as pb_grpc
from salesforce_sandbox.auth import ORG_ID
from salesforce_sandbox.events import CHANGE_EVENT_TOPIC, STATUS_EVENT_TOPIC
from salesforce_sandbox.server import SandboxServer
from tests.sandbox.conftest import sandbox_session

SAFETY_NET_SECONDS = 60  # a hung stream fails the test; answers come in milliseconds


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    # A short keep-alive interval: an idle subscription answers within a test's patience.
    with SandboxServer(port=0, orders=20, state_dir=tmp_path_factory.mktemp("pubsub"),
                       pubsub_keepalive_seconds=0.5) as server:
        yield server


@pytest.fixture(scope="module")
def stub(org: SandboxServer) -> Iterator[pb_grpc.PubSubStub]:
    credentials = grpc.ssl_channel_credentials(root_certificates=org.ca_path.read_bytes())
    with grpc.secure_channel(org.pubsub_endpoint, credentials) as channel:
        yield pb_grpc.PubSubStub(channel)


def auth(org: SandboxServer, **override: str) -> list[tuple[str, str]]:
    metadata = {"accesstoken": org.credentials["session_id"], "instanceurl": org.url, "tenantid": ORG_ID} | override
    return list(metadata.items())


class Subscription:
    """One Subscribe stream: FetchRequests are sent with :meth:`request`, answers read with :meth:`next`."""

    def __init__(self, stub: pb_grpc.PubSubStub, metadata: list, first: pb.FetchRequest):
        self._requests: queue.Queue = queue.Queue()
        self._requests.put(first)
        self._answers: queue.Queue = queue.Queue()
        self.call = stub.Subscribe(iter(self._requests.get, None), metadata=metadata)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for answer in self.call:
                self._answers.put(answer)
        except grpc.RpcError as exc:
            self._answers.put(exc)

    def request(self, n: int) -> None:
        self._requests.put(pb.FetchRequest(num_requested=n))

    def next(self) -> pb.FetchResponse:
        answer = self._answers.get(timeout=SAFETY_NET_SECONDS)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def events(self, count: int) -> list[pb.ConsumerEvent]:
        """The next answers' events until there are at least ``count`` (keep-alives skipped)."""
        found: list[pb.ConsumerEvent] = []
        while len(found) < count:
            found += self.next().events
        return found

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()


@pytest.fixture
def subscribe(stub: pb_grpc.PubSubStub, org: SandboxServer):
    opened: list[Subscription] = []

    def open_(topic: str = CHANGE_EVENT_TOPIC, preset: int = pb.LATEST, replay_id: bytes = b"", n: int = 100,
              **metadata: str) -> Subscription:
        first = pb.FetchRequest(topic_name=topic, replay_preset=preset, replay_id=replay_id, num_requested=n)
        opened.append(Subscription(stub, auth(org, **metadata), first))
        return opened[-1]

    yield open_
    for subscription in opened:
        subscription.close()


def decoder(stub: pb_grpc.PubSubStub, org: SandboxServer, schema_id: str):
    info = stub.GetSchema(pb.SchemaRequest(schema_id=schema_id), metadata=auth(org))
    schema = fastavro.parse_schema(json.loads(info.schema_json))
    names = [f["name"] for f in json.loads(info.schema_json)["fields"]]

    def decode(event: pb.ConsumerEvent) -> dict:
        return fastavro.schemaless_reader(io.BytesIO(event.event.payload), schema)

    decode.field_names = names  # type: ignore[attr-defined]
    return decode


def bitmap_fields(bitmap: list[str], names: list[str]) -> set[str]:
    bits = int(bitmap[0], 16) if bitmap else 0
    return {name for position, name in enumerate(names) if bits >> position & 1}


def draft_order(org: SandboxServer) -> str:
    """A Draft order with one product, made directly in the store (no API origin)."""
    store = org.runtime.store
    with store.lock:
        entry = store.conn.execute('SELECT Id, Pricebook2Id, UnitPrice FROM "PricebookEntry" LIMIT 1').fetchone()
        account = store.conn.execute('SELECT Id FROM "Account" LIMIT 1').fetchone()[0]
        order_id = store.create("Order", {"AccountId": account, "Status": "Draft", "EffectiveDate": "2026-01-15",
                                          "Pricebook2Id": entry[1]})
        store.create("OrderItem", {"OrderId": order_id, "PricebookEntryId": entry[0], "Quantity": 1,
                                   "UnitPrice": entry[2]})
    return order_id


def activate_through_api(org: SandboxServer, order_id: str, client: str) -> None:
    response = sandbox_session(org).patch(
        f"{org.url}/services/data/v59.0/sobjects/Order/{order_id}",
        json={"Status": "Activated"},
        headers={"Authorization": f"Bearer {org.credentials['session_id']}", "Sforce-Call-Options": f"client={client}"},
    )
    assert response.status_code == 204, response.text


def test_topic_and_schema(stub, org):
    topic = stub.GetTopic(pb.TopicRequest(topic_name=CHANGE_EVENT_TOPIC), metadata=auth(org))
    assert (topic.topic_name, topic.can_subscribe, topic.tenant_guid) == (CHANGE_EVENT_TOPIC, True, ORG_ID)
    schema = json.loads(stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=auth(org)).schema_json)
    assert schema["name"] == "OrderChangeEvent"
    assert schema["fields"][0]["name"] == "ChangeEventHeader"
    assert {"Status", "OrderNumber", "ActivatedDate"} <= {f["name"] for f in schema["fields"]}

    with pytest.raises(grpc.RpcError) as missing:
        stub.GetTopic(pb.TopicRequest(topic_name="/data/NoSuchChangeEvent"), metadata=auth(org))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_order_change_publishes_change_and_status_events(stub, org, subscribe):
    changes = subscribe(CHANGE_EVENT_TOPIC)
    statuses = subscribe(STATUS_EVENT_TOPIC)
    changes.next(), statuses.next()  # the first keep-alive: both streams are open before the changes
    order_id = draft_order(org)
    activate_through_api(org, order_id, client="orders-test")
    with org.runtime.store.lock:
        org.runtime.store.update("Order", order_id, {"Status": "Draft"})
        org.runtime.store.delete("Order", order_id)

    created, activated, back_to_draft, deleted = changes.events(4)[:4]
    decode = decoder(stub, org, created.event.schema_id)
    header = decode(activated)["ChangeEventHeader"]
    assert header["changeType"] == "UPDATE" and header["recordIds"] == [order_id]
    assert header["entityName"] == "Order"
    assert header["changeOrigin"] == "com/salesforce/api/rest/59.0;client=orders-test"
    assert header["commitUser"] == org.runtime.store.integration_user_id
    assert {"Status", "StatusCode", "ActivatedDate"} <= bitmap_fields(header["changedFields"], decode.field_names)
    assert decode(activated)["Status"] == "Activated"
    assert decode(created)["ChangeEventHeader"]["changeType"] == "CREATE"
    assert decode(created)["ChangeEventHeader"]["changeOrigin"] == ""  # not through the API
    assert decode(created)["OrderNumber"]
    assert "ActivatedDate" in bitmap_fields(decode(back_to_draft)["ChangeEventHeader"]["nulledFields"], decode.field_names)
    assert decode(deleted)["ChangeEventHeader"]["changeType"] == "DELETE"

    status_events = statuses.events(3)[:3]  # created (Draft), Activated, back to Draft; the delete keeps its status
    status_decode = decoder(stub, org, status_events[0].event.schema_id)
    assert [(status_decode(e)["OldStatus"], status_decode(e)["NewStatus"]) for e in status_events] == [
        (None, "Draft"), ("Draft", "Activated"), ("Activated", "Draft")]
    assert {status_decode(e)["OrderId"] for e in status_events} == {order_id}


def test_replay_presets(org, subscribe):
    for _ in range(4):
        draft_order(org)  # a CREATE event each
    # EARLIEST: everything the topic keeps, oldest first.
    everything = subscribe(preset=pb.EARLIEST).events(4)[:4]
    replays = [e.replay_id for e in everything]
    assert replays == sorted(replays)
    # CUSTOM: everything after the given replay id, in order.
    custom = subscribe(preset=pb.CUSTOM, replay_id=everything[0].replay_id)
    assert [e.replay_id for e in custom.events(3)[:3]] == replays[1:4]
    # LATEST: only what is published from now on.
    latest = subscribe(preset=pb.LATEST)
    assert not latest.next().events  # the keep-alive: subscribed, nothing new yet
    newest = org.events.latest_replay()
    order_id = draft_order(org)
    event = latest.events(1)[0]
    assert int.from_bytes(event.replay_id, "big") == newest + 1
    assert order_id


def test_flow_control(org, subscribe):
    for _ in range(3):
        draft_order(org)  # 3 CREATE events at least
    stream = subscribe(preset=pb.EARLIEST, n=2)
    answer = stream.next()
    while not answer.events:
        answer = stream.next()
    delivered = list(answer.events)
    while len(delivered) < 2:
        answer = stream.next()
        delivered += answer.events
    assert len(delivered) == 2 and answer.pending_num_requested == 0
    # Events are waiting, but none were asked for: the next answer is a keep-alive.
    idle = stream.next()
    assert not idle.events and idle.pending_num_requested == 0
    assert idle.latest_replay_id == delivered[-1].replay_id  # not past the events still waiting
    stream.request(1)
    third = stream.events(1)[0]
    assert third.replay_id > delivered[-1].replay_id
    # A request beyond 100 is capped at 100.
    capped = subscribe(preset=pb.LATEST, n=500).next()
    assert capped.pending_num_requested == 100


def test_keepalive_carries_the_latest_replay_id(org, subscribe):
    draft_order(org)
    stream = subscribe(preset=pb.LATEST, n=5)
    keepalive = stream.next()
    assert list(keepalive.events) == [] and keepalive.pending_num_requested == 5
    assert int.from_bytes(keepalive.latest_replay_id, "big") == org.events.latest_replay()


def test_replay_id_beyond_the_retention_is_refused(org, subscribe):
    draft_order(org)
    oldest = subscribe(preset=pb.EARLIEST).events(1)[0]
    real_clock = org.events.clock
    org.events.clock = lambda: real_clock() + org.events.retention_seconds + 3600  # three days later
    try:
        stream = subscribe(preset=pb.CUSTOM, replay_id=oldest.replay_id)
        with pytest.raises(grpc.RpcError) as refused:
            stream.next()
    finally:
        org.events.clock = real_clock
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("error-code", "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.validation.failed") in (
        refused.value.trailing_metadata())


@pytest.mark.parametrize("override", [
    {"accesstoken": "00D000000000001!AQnot.a.session"},
    {"tenantid": "00D000000000002AAA"},
    {"instanceurl": "https://other.my.salesforce.com"},
])
def test_bad_credentials_are_refused(stub, org, subscribe, override):
    with pytest.raises(grpc.RpcError) as refused:
        stub.GetTopic(pb.TopicRequest(topic_name=CHANGE_EVENT_TOPIC), metadata=auth(org, **override))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("error-code", "sfdc.platform.eventbus.grpc.service.auth.error") in refused.value.trailing_metadata()
    with pytest.raises(grpc.RpcError) as stream_refused:
        subscribe(**override).next()
    assert stream_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_session_issued_by_login_is_accepted(stub, org):
    creds = org.credentials
    token = sandbox_session(org).post(f"{org.url}/services/oauth2/token", data={
        "grant_type": "password", "client_id": creds["consumer_key"], "client_secret": creds["consumer_secret"],
        "username": creds["username"], "password": creds["password"] + creds["security_token"]}).json()
    assert isinstance(token, dict) and "access_token" in token, token
    topic = stub.GetTopic(pb.TopicRequest(topic_name=CHANGE_EVENT_TOPIC),
                          metadata=auth(org, accesstoken=token["access_token"]))
    assert topic.can_subscribe
