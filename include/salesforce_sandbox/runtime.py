"""Everything one running sandbox org holds: data, sessions, usage, faults, cursors and jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .auth import Authenticator, Credentials
from .bulk import JobRegistry
from .cursors import CursorStore
from .errors import SalesforceError
from .events import DEFAULT_RETENTION_SECONDS, EventBus
from .faults import Faults, FaultSettings
from .generator import generate
from .schema import Schema, build_schema
from .soql import PreparedQuery, QueryEngine
from .store import Store, as_utc
from .usage import ApiUsage

DEFAULT_DAILY_API_LIMIT = 15_000


class SandboxRuntime:
    """The state behind the HTTP app. ``base_url`` is where clients reach it (``instance_url``
    and ``serverUrl`` in login answers); without it, the URL of the login request is used."""

    def __init__(
        self,
        store: Store,
        *,
        credentials: Credentials | None = None,
        daily_api_limit: int = DEFAULT_DAILY_API_LIMIT,
        jwt_public_key_path: Path | None = None,
        base_url: str = "",
        event_retention_seconds: float = DEFAULT_RETENTION_SECONDS,
    ):
        self.store = store
        self.auth = Authenticator(
            credentials or Credentials(), lambda: store.integration_user_id, jwt_public_key_path
        )
        self.usage = ApiUsage(daily_api_limit)
        self.faults = Faults()
        self.cursors = CursorStore()
        self.jobs = JobRegistry()
        self.base_url = base_url.rstrip("/")
        # Order changes become Pub/Sub events once their transaction commits.
        self.events = EventBus(store.schema, event_retention_seconds)
        store.change_listeners.append(self.events.on_store_changes)
        self._configured_daily_limit = daily_api_limit
        self._engine: QueryEngine | None = None
        self._engine_schema: Schema | None = None

    @property
    def credentials(self) -> Credentials:
        return self.auth.credentials

    @property
    def schema(self) -> Schema:
        return self.store.schema

    def prepare_query(self, soql: str, *, include_deleted: bool = False) -> PreparedQuery:
        """Parse and resolve ``soql`` against the current schema; date literals such as TODAY
        follow the store's clock. Call with ``store.lock`` held, like every store call."""
        if self._engine is None or self._engine_schema is not self.store.schema:
            self._engine = QueryEngine(self.store.conn, self.store.schema)
            self._engine_schema = self.store.schema
        prepared = self._engine.prepare(soql, include_deleted=include_deleted, now=as_utc(self.store.clock()))
        if self.faults.unreadable(prepared.object_name):  # as for an object the org does not have
            raise SalesforceError("INVALID_TYPE", f"sObject type '{prepared.object_name}' is not supported.")
        return prepared

    # -- admin operations ------------------------------------------------------------------

    def set_faults(self, changes: dict[str, Any]) -> FaultSettings:
        settings = self.faults.update(changes)
        self.usage.daily_limit = (
            settings.daily_api_limit if settings.daily_api_limit is not None else self._configured_daily_limit
        )
        return settings

    def clear_faults(self) -> None:
        self.faults.clear()
        self.usage.daily_limit = self._configured_daily_limit

    def reseed(
        self, orders: int, seed: int, with_imported_status: bool = True, multi_currency: bool = True, **generator_options: Any
    ) -> dict:
        """Replace the org's data (and Order Status picklist, and whether it has multi-currency)
        with a freshly generated set."""
        with self.store.lock:
            self.store.set_schema(build_schema(with_imported_status=with_imported_status, multi_currency=multi_currency))
            self.store.reset()
            summary = generate(self.store, orders=orders, seed=seed, **generator_options)
        self.cursors.clear()
        self.jobs.clear()
        return summary

    def stats(self) -> dict:
        return self.usage.snapshot() | {
            "faults_injected": self.faults.injected(),
            "open_cursors": len(self.cursors),
        }

    def record_counts(self) -> dict[str, int]:
        with self.store.lock:
            return {name: self.store.count(name) for name in self.store.schema.objects}
