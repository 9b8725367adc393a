"""What the plugin (plugin.py) needs at import time: the mount point, the navigation entry and a lazy app.

Every Airflow process loads plugins, each task included, so nothing here may import FastAPI or
Airflow's API server: :class:`LazyASGIApp` builds the real app on the first request it serves,
which only happens inside the api-server.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

DAG_ID = "salesforce_orders_import"
URL_PREFIX = "/external-orders"
VIEW_NAME = "External Orders"

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


class LazyASGIApp:
    """An ASGI app that imports and builds ``"module:factory"`` when it first receives a request."""

    def __init__(self, factory_path: str) -> None:
        self.factory_path = factory_path
        self._app: ASGIApp | None = None

    def _build(self) -> ASGIApp:
        module_name, _, factory_name = self.factory_path.partition(":")
        return getattr(importlib.import_module(module_name), factory_name)()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


def nav_entry(base_path: str = "/") -> dict[str, Any]:
    """The Airflow UI navigation entry: the page, embedded under ``/external-orders`` in the UI."""
    base = base_path if base_path.endswith("/") else base_path + "/"
    return {
        "name": VIEW_NAME,
        "href": f"{base}{URL_PREFIX.strip('/')}/",
        "url_route": URL_PREFIX.strip("/"),
        "destination": "nav",
        "category": "browse",
    }
