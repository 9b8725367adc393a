"""Run the sandbox: a seeded store behind the HTTPS app, on uvicorn in a background thread.

    with SandboxServer(port=0, orders=200) as srv:
        Salesforce(session_id=srv.credentials["session_id"], instance_url=srv.url, session=...)
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn

from .admin import AdminClient
from .app import create_app
from .auth import Credentials
from .events import DEFAULT_RETENTION_SECONDS, EventBus
from .faults import Faults
from .proxy import ConnectProxy
from .pubsub import DEFAULT_KEEPALIVE_SECONDS, PubSubServer
from .runtime import DEFAULT_DAILY_API_LIMIT, SandboxRuntime
from .schema import build_schema
from .store import Store
from .tls import DEFAULT_STATE_DIR, certificate_dns_names, ensure_certificate, ensure_jwt_keypair

STARTUP_TIMEOUT_SECONDS = 30.0


class SandboxServer:
    """A local Salesforce-compatible org on ``https://localhost:<port>``."""

    def __init__(
        self,
        port: int = 0,
        db_path: str | Path = ":memory:",
        orders: int = 500,
        seed: int = 7,
        with_imported_status: bool = True,
        daily_api_limit: int = DEFAULT_DAILY_API_LIMIT,
        state_dir: Path | None = None,
        host: str = "127.0.0.1",
        *,
        reseed: bool = False,
        public_url: str | None = None,
        generator_options: dict[str, Any] | None = None,
        credentials: Credentials | None = None,
        proxy_port: int | None = None,
        pubsub_port: int | None = 0,
        event_retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        pubsub_keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
        clock: Callable[[], datetime] | None = None,
        multi_currency: bool = True,
    ):
        self.host = host
        self.state_dir = Path(state_dir) if state_dir is not None else Path.cwd() / DEFAULT_STATE_DIR
        self._requested_port = port
        self._db_path = db_path
        self._orders = orders
        self._seed = seed
        self._with_imported_status = with_imported_status
        self._multi_currency = multi_currency  # False: an org without multi-currency (build_schema)
        self._daily_api_limit = daily_api_limit
        self._reseed = reseed
        # Where clients reach the server when that is not localhost (e.g. a container's service name).
        self._public_url = public_url.rstrip("/") if public_url else None
        self._generator_options = generator_options or {}
        self._credentials = credentials or Credentials()
        # The CONNECT proxy for clients that hard-code login.salesforce.com: None = no proxy, 0 = a free port.
        self._proxy_port = proxy_port
        self._proxy: ConnectProxy | None = None
        # The Pub/Sub API (gRPC) on a port of its own: None = not served, 0 = a free port.
        self._pubsub_port = pubsub_port
        self._event_retention_seconds = event_retention_seconds
        self._pubsub_keepalive_seconds = pubsub_keepalive_seconds
        # The org's clock (None: the wall clock): its "now", the stamps of its writes and, unless
        # generator_options give a "now", the moment the generated org is anchored at.
        self._clock = clock
        self._pubsub: PubSubServer | None = None
        self._runtime: SandboxRuntime | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._admin: AdminClient | None = None
        self.seed_summary: dict | None = None  # what seeding created, None when existing data was kept

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SandboxServer:
        """Seed (unless the database already holds orders), listen, and return once serving."""
        if self._thread is not None:
            raise RuntimeError("the sandbox server is already running")
        cert = ensure_certificate(self.state_dir)
        jwt_keys = ensure_jwt_keypair(self.state_dir)
        # Bind first: with port=0 the port, and so the URL sessions are issued for, is known up front.
        self._socket = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((self.host, self._requested_port))
            self._runtime = self._seeded_runtime(jwt_keys.public_key_path)
            config = uvicorn.Config(
                create_app(self._runtime),
                ssl_certfile=str(cert.cert_path),
                ssl_keyfile=str(cert.key_path),
                log_level="warning",
                access_log=False,
                lifespan="off",
                # h11 sends header names as the app gives them (httptools lower-cases them all),
                # and the app writes its own Date header: uvicorn's would go out lower-case.
                http="h11",
                server_header=False,
                date_header=False,
            )
            self._server = uvicorn.Server(config)
            self._thread = threading.Thread(
                target=self._server.run, kwargs={"sockets": [self._socket]}, name="salesforce-sandbox", daemon=True
            )
            self._thread.start()
            self._wait_until_started()
            if self._pubsub_port is not None:
                self._pubsub = PubSubServer(
                    self._runtime, self._runtime.events, instance_url=self.public_url,
                    cert_pem=cert.cert_path.read_bytes(), key_pem=cert.key_path.read_bytes(),
                    host=self.host, port=self._pubsub_port, keepalive_seconds=self._pubsub_keepalive_seconds,
                ).start()
            if self._proxy_port is not None:
                tunnel_hosts = [*certificate_dns_names(), "127.0.0.1"]
                self._proxy = ConnectProxy(("127.0.0.1", self.port), tunnel_hosts, port=self._proxy_port).start()
        except BaseException:
            self.stop()
            raise
        self._admin = AdminClient(self.url, self.ca_path)
        return self

    def _seeded_runtime(self, jwt_public_key_path: Path) -> SandboxRuntime:
        schema = build_schema(with_imported_status=self._with_imported_status, multi_currency=self._multi_currency)
        store = Store(self._db_path, schema=schema, clock=self._clock)
        runtime = SandboxRuntime(
            store,
            credentials=self._credentials,
            daily_api_limit=self._daily_api_limit,
            jwt_public_key_path=jwt_public_key_path,
            base_url=self.public_url,
            event_retention_seconds=self._event_retention_seconds,
        )
        if self._reseed or store.count("Order", include_deleted=True) == 0:
            self.seed_summary = runtime.reseed(
                self._orders, self._seed, self._with_imported_status, self._multi_currency, **self._generator_options
            )
        return runtime

    def _wait_until_started(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the sandbox server failed to start (see the log above)")
            if time.monotonic() > deadline:
                raise RuntimeError("the sandbox server did not start in time")
            time.sleep(0.02)

    def stop(self) -> None:
        if self._pubsub is not None:
            self._pubsub.stop()
        if self._proxy is not None:
            self._proxy.stop()
        if self._server is not None:
            # Clients keep TLS connections alive; waiting for them to close would stall the stop.
            self._server.should_exit = self._server.force_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        if self._runtime is not None:
            self._runtime.store.conn.close()
        if self._admin is not None:
            self._admin.close()
        self._server = self._thread = self._socket = self._runtime = self._admin = self._proxy = self._pubsub = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what clients need -----------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the sandbox server is not running")
        return self._socket.getsockname()[1]

    @property
    def url(self) -> str:
        """``https://localhost:<port>``, no trailing slash."""
        return f"https://localhost:{self.port}"

    @property
    def public_url(self) -> str:
        """The URL clients are told to use (login answers' ``instance_url``): ``--public-url`` or :attr:`url`."""
        return self._public_url or self.url

    @property
    def ca_path(self) -> Path:
        """The self-signed certificate (PEM) clients must trust."""
        return ensure_certificate(self.state_dir).cert_path.resolve()

    @property
    def jwt_private_key_path(self) -> Path:
        """The key a JWT bearer client signs with (the sandbox holds the matching public key)."""
        return ensure_jwt_keypair(self.state_dir).private_key_path.resolve()

    @property
    def runtime(self) -> SandboxRuntime:
        if self._runtime is None:
            raise RuntimeError("the sandbox server is not running")
        return self._runtime

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def pubsub_endpoint(self) -> str:
        """``localhost:<port>`` of the Pub/Sub API (gRPC over TLS, the same certificate as HTTPS)."""
        if self._pubsub is None:
            raise RuntimeError("the sandbox runs without its Pub/Sub API (start it with pubsub_port=0 or --pubsub-port)")
        return f"localhost:{self._pubsub.port}"

    def drop_pubsub_subscriptions(self) -> None:
        """End every open Pub/Sub subscription with UNAVAILABLE (clients must reconnect and resume)."""
        if self._pubsub is None:
            raise RuntimeError("the sandbox runs without its Pub/Sub API")
        self._pubsub.drop_subscriptions()

    @property
    def events(self) -> EventBus:
        return self.runtime.events

    @property
    def faults(self) -> Faults:
        return self.runtime.faults

    @property
    def admin(self) -> AdminClient:
        """A client of the control endpoint (``/__sandbox/``)."""
        if self._admin is None:
            raise RuntimeError("the sandbox server is not running")
        return self._admin

    @property
    def credentials(self) -> dict[str, str]:
        return self._credentials.as_dict()

    @property
    def proxy_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the CONNECT proxy (started with ``proxy_port``)."""
        if self._proxy is None:
            raise RuntimeError("the sandbox runs without its proxy (start it with proxy_port=0 or --proxy-port)")
        return self._proxy.url

    def client_environment(self) -> dict[str, str]:
        """Environment for a client that logs in at login.salesforce.com: its HTTPS goes through the
        proxy to the sandbox, and it trusts the sandbox certificate (Python requests, Node)."""
        ca = str(self.ca_path)
        return {
            "HTTPS_PROXY": self.proxy_url,
            "https_proxy": self.proxy_url,
            "NO_PROXY": "localhost,127.0.0.1",
            "no_proxy": "localhost,127.0.0.1",
            "REQUESTS_CA_BUNDLE": ca,
            "NODE_EXTRA_CA_CERTS": ca,
        }

    def connection_extras(self) -> dict[str, str]:
        """The Airflow connection's extras that reach this sandbox."""
        return {
            "security_token": self._credentials.security_token,
            "instance_url": self.public_url,
            "login_url": self.public_url,
            "ca_bundle": str(self.ca_path),
            **({"pubsub_endpoint": self.pubsub_endpoint} if self._pubsub is not None else {}),
        }

    def airflow_connection(self) -> dict[str, Any]:
        """The Airflow connection (JSON form of ``AIRFLOW_CONN_<ID>``) for this sandbox."""
        return {
            "conn_type": "salesforce",
            "login": self._credentials.username,
            "password": self._credentials.password,
            "extra": self.connection_extras(),
        }

    def airflow_connection_json(self) -> str:
        return json.dumps(self.airflow_connection())
