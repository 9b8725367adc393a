"""The External Orders view in the Airflow UI: an entry under Browse, served by a FastAPI app.

Registered through the ``airflow.plugins`` entry point of the installed package (pyproject.toml),
so installing the package is enough: nothing goes into the plugins folder. Every Airflow process
loads plugins (each task too), so the app is built on its first request only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

from salesforce_orders_ui.mount import URL_PREFIX, VIEW_NAME, LazyASGIApp, nav_entry


class ExternalOrdersPlugin(AirflowPlugin):
    name = "external_orders"
    fastapi_apps = [{"name": VIEW_NAME, "app": LazyASGIApp("salesforce_orders_ui.app:create_app"), "url_prefix": URL_PREFIX}]
    external_views = [nav_entry(urlsplit(conf.get("api", "base_url", fallback="") or "/").path or "/")]
