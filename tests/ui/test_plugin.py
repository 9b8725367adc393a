"""The plugin: registered by the package's entry point, what Airflow registers, and that loading it (which every task does) stays cheap."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

from fastapi import FastAPI
from fastapi.testclient import TestClient

from salesforce_orders_ui.mount import LazyASGIApp, nav_entry

BUILT: list[str] = []


def make_app() -> FastAPI:
    BUILT.append("built")
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_the_installed_package_declares_the_plugin_entry_point():
    [entry_point] = [ep for ep in entry_points(group="airflow.plugins") if ep.name == "external_orders"]
    assert entry_point.value == "salesforce_orders_ui.plugin:ExternalOrdersPlugin"
    assert entry_point.dist.name == "salesforce-orders-airflow"


def test_airflow_registers_the_app_and_the_navigation_entry_once_from_the_entry_point():
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert not errors  # a second registration (e.g. a copy in the plugins folder) would be an error here
    [plugin] = [p for p in plugins if p.name == "external_orders"]
    assert type(plugin.source).__name__ == "EntryPointSource"
    assert "salesforce-orders-airflow" in str(plugin.source)
    [app] = plugin.fastapi_apps
    assert app["url_prefix"] == "/external-orders" and isinstance(app["app"], LazyASGIApp)
    assert plugin.external_views == [
        {"name": "External Orders", "href": "/external-orders/", "url_route": "external-orders", "destination": "nav",
         "category": "browse"}
    ]


def test_the_navigation_entry_follows_airflows_base_path():
    assert nav_entry("/airflow")["href"] == "/airflow/external-orders/"


def test_loading_the_plugin_builds_no_web_app():
    code = (
        "import sys, salesforce_orders_ui.plugin; "
        "print(','.join(m for m in ('fastapi', 'salesforce_orders_ui.app', 'airflow.api_fastapi.core_api.security') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_lazy_app_is_built_once_on_its_first_request():
    lazy = LazyASGIApp(f"{__name__}:make_app")
    assert BUILT == []
    client = TestClient(lazy)
    assert client.get("/ping").json() == {"pong": "yes"}
    assert client.get("/ping").status_code == 200
    assert BUILT == ["built"]
