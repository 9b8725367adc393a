"""The plugin file: what Airflow registers, and that loading it (which every task does) stays cheap."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from salesforce_orders_ui.mount import LazyASGIApp, nav_entry

PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "external_orders_plugin.py"
BUILT: list[str] = []


def make_app() -> FastAPI:
    BUILT.append("built")
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    return app


def test_airflow_registers_the_app_and_the_navigation_entry():
    from airflow import plugins_manager

    plugins, errors = plugins_manager._get_plugins()
    assert not errors
    [plugin] = [p for p in plugins if p.name == "external_orders"]
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
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(','.join(m for m in ('fastapi', 'salesforce_orders_ui.app', 'airflow.api_fastapi.core_api.security') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(PLUGIN)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_lazy_app_is_built_once_on_its_first_request():
    lazy = LazyASGIApp(f"{__name__}:make_app")
    assert BUILT == []
    client = TestClient(lazy)
    assert client.get("/ping").json() == {"pong": "yes"}
    assert client.get("/ping").status_code == 200
    assert BUILT == ["built"]
