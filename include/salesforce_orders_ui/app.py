"""The External Orders web app, mounted in Airflow's api-server under ``/external-orders``.

Who may see what is Airflow's decision, made by Airflow's own code: the user comes from the
session cookie or bearer token exactly as Airflow's REST API resolves it (``get_user``), and each
route asks the configured auth manager (``requires_access_dag``) for access to the import DAG's
runs: reading for the pages, triggering for "retry failed write-backs". Creating DAG runs is left
to Airflow's REST API itself: the page's buttons call ``POST /api/v2/dags/<dag>/dagRuns`` with the
user's own session, so a user who may not trigger the DAG cannot trigger it from here either.

The warehouse is the one the import writes to: the ``warehouse_conn_id`` / ``warehouse_schema`` of
the ``salesforce_orders_config`` Variable (by default the ``orders_warehouse`` connection).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from salesforce_orders.config import ConfigError, load_config
from salesforce_orders.model import LIFECYCLE_STATES
from salesforce_orders.warehouse.definitions import Tables, tables
from salesforce_orders.warehouse.engines import engine_from_connection
from salesforce_orders.warehouse.errors import WarehouseConnectionError

from . import queries
from .actions import schedule_failed_writebacks
from .config_in_effect import ConfigInEffect, read_config_in_effect
from .health import Schedule, health, import_schedule
from .mount import DAG_ID, URL_PREFIX, VIEW_NAME
from .order_story import order_story
from .shipment_queries import shipments_of

CONFIG_TTL_SECONDS = 60  # how long a read of the Variable is trusted before it is read again
ENGINE_TTL_SECONDS = 600  # an engine is rebuilt this often, so a changed connection is picked up


# ---------------------------------------------------------------------------------------
# Who is asking, and what they may do: Airflow's own answers
# ---------------------------------------------------------------------------------------


async def current_user(request: Request) -> Any:
    """The signed-in Airflow user, resolved exactly as Airflow's REST API resolves it (401 if none)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


def _check_dag_run_access(method: str, request: Request, user: Any) -> None:
    """Airflow's own check for ``method`` on the import DAG's runs; raises HTTP 403 when refused."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    requires_access_dag(method, DagAccessEntity.RUN, param_dag_id=DAG_ID)(request, user)


def may(method: str, request: Request, user: Any) -> bool:
    try:
        _check_dag_run_access(method, request, user)
    except HTTPException:
        return False
    return True


def dag_run_access(method: str) -> Callable[..., Any]:
    """A route dependency: the user, once Airflow allowed ``method`` on the import DAG's runs."""

    def dependency(request: Request, user: Annotated[Any, Depends(current_user)]) -> Any:
        _check_dag_run_access(method, request, user)
        return user

    return dependency


# Module level, so FastAPI can resolve the annotations of the routes defined inside create_app.
Reader = Annotated[Any, Depends(dag_run_access("GET"))]
Triggerer = Annotated[Any, Depends(dag_run_access("POST"))]


# ---------------------------------------------------------------------------------------
# The warehouse
# ---------------------------------------------------------------------------------------


class WarehouseUnavailable(RuntimeError):
    """The warehouse cannot be read (bad config, missing connection, no import yet); the message says why."""


@dataclass
class Warehouse:
    engine: sa.Engine
    tables: Tables
    key: tuple[str, str | None]
    created: float
    freshness_minutes: int = 120  # notifications.no_success_after_minutes: past it, failing runs are a stalled import


class WarehouseSource:
    """The import's warehouse, found through its config; engines are reused between requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._config_read = 0.0
        self._key: tuple[str, str | None] | None = None
        self._freshness_minutes = 120
        self._warehouse: Warehouse | None = None

    def _configured_key(self) -> tuple[str, str | None]:
        now = time.monotonic()
        if self._key is None or now - self._config_read > CONFIG_TTL_SECONDS:
            try:
                config = load_config()
            except ConfigError as exc:
                raise WarehouseUnavailable(str(exc)) from None
            self._key, self._config_read = (config.warehouse_conn_id, config.warehouse_schema), now
            self._freshness_minutes = config.notifications.no_success_after_minutes
        return self._key

    def get(self) -> Warehouse:
        with self._lock:
            key = self._configured_key()
            current = self._warehouse
            if current is None or current.key != key or time.monotonic() - current.created > ENGINE_TTL_SECONDS:
                try:
                    engine = engine_from_connection(key[0])
                except WarehouseConnectionError as exc:
                    raise WarehouseUnavailable(str(exc)) from None
                if current is not None:
                    current.engine.dispose()
                current = self._warehouse = Warehouse(engine, tables(key[1]), key, time.monotonic())
        try:
            loaded = sa.inspect(current.engine).has_table("external_orders", schema=key[1])
        except sa.exc.OperationalError as exc:
            raise WarehouseUnavailable(f"The warehouse (Airflow connection {key[0]!r}) cannot be reached: {exc.orig}") from None
        if not loaded:
            raise WarehouseUnavailable(
                "The warehouse has no orders table yet: no import has run. Trigger the "
                f"{DAG_ID} DAG, or wait for its next scheduled run."
            )
        current.freshness_minutes = self._freshness_minutes
        return current


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _format_ts(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _format_money(value: float | None, currency: str | None) -> str:
    return "" if value is None else f"{value:,.2f} {currency or ''}".strip()


def _format_duration(seconds: float | None) -> str:
    """A run's duration as people read it: 42.3 s, 4 min 41 s, 2 h 05 min."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


# An address a link may go to: http(s) and nothing else, no space anywhere (as the shipments check
# wants a tracking URL). Case-insensitive, as browsers read the scheme.
_WEB_ADDRESS = re.compile(r"https?://\S+", re.IGNORECASE)


def _is_web_address(value: object) -> bool:
    """Whether a URL from the data may become a link. Escaping keeps it inside the href, but a
    ``javascript:`` or ``data:`` URL would still run in the view's origin when clicked; a leading
    space is no safer (browsers drop it), so the whole value must be the http(s) address."""
    return isinstance(value, str) and _WEB_ADDRESS.fullmatch(value) is not None


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("salesforce_orders_ui", "templates"), autoescape=select_autoescape(["html"]))
    env.filters["ts"] = _format_ts
    env.filters["money"] = _format_money
    env.filters["duration"] = _format_duration
    env.tests["web_address"] = _is_web_address
    return env


def _parse_day(value: str, name: str, problems: list[str]) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        problems.append(f"{name}: {value!r} is not a date (YYYY-MM-DD)")
        return None


def _parse_int(value: str, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Links:
    """Where things are, for a request: Airflow's UI and API, and this app."""

    ui_root: str  # Airflow's UI root, e.g. "/"
    app_root: str  # this app, e.g. "/external-orders"

    @classmethod
    def for_request(cls, request: Request) -> Links:
        app_root = request.scope.get("root_path", "").rstrip("/") or URL_PREFIX
        return cls(ui_root=app_root.removesuffix(URL_PREFIX) + "/", app_root=app_root)

    @property
    def trigger_url(self) -> str:
        return f"{self.ui_root}api/v2/dags/{DAG_ID}/dagRuns"

    @property
    def dag_url(self) -> str:
        return f"{self.ui_root}dags/{DAG_ID}"

    def run_url(self, run_id: str) -> str:
        return f"{self.dag_url}/runs/{quote(run_id, safe='')}"

    def log_url(self, run_id: str, task_id: str = "report") -> str:
        return f"{self.run_url(run_id)}/tasks/{task_id}"

    def page(self, path: str, params: Mapping[str, Any]) -> str:
        query = urlencode({k: v for k, v in params.items() if v not in (None, "", False)})
        return f"{self.app_root}{path}" + (f"?{query}" if query else "")


# ---------------------------------------------------------------------------------------
# The app
# ---------------------------------------------------------------------------------------


def create_app(
    source: WarehouseSource | None = None,
    schedule_of: Callable[[str], Schedule] = import_schedule,
    config_in_effect: Callable[[], ConfigInEffect] = read_config_in_effect,
) -> FastAPI:
    """The External Orders app; ``source`` finds the warehouse (default: through the import's config),
    ``schedule_of`` asks Airflow whether the import DAG is paused and when it runs next."""
    app = FastAPI(title=VIEW_NAME, docs_url=None, redoc_url=None, openapi_url=None)
    source = source or WarehouseSource()
    templates = _templates()

    @app.exception_handler(HTTPException)
    async def _refused(request: Request, exc: HTTPException) -> Response:
        # A person opening the page unsigned goes to Airflow's login and comes back; API callers get the status.
        within_app = request.url.path.removeprefix(request.scope.get("root_path", ""))
        if exc.status_code == 401 and request.method == "GET" and not within_app.startswith("/api/"):
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    def render(request: Request, user: Any, template: str, tab: str, **context: Any) -> HTMLResponse:
        links = Links.for_request(request)
        context.setdefault("schedule", schedule_of(DAG_ID))
        body = templates.get_template(template).render(
            tab=tab,
            links=links,
            dag_id=DAG_ID,
            view_name=VIEW_NAME,
            user_name=user.get_name(),
            can_trigger=may("POST", request, user),
            states=LIFECYCLE_STATES,
            **context,
        )
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    def read(request: Request, user: Any, tab: str, template: str, reader_fn: Callable[[sa.Connection, Tables], dict]) -> HTMLResponse:
        try:
            warehouse = source.get()
        except WarehouseUnavailable as exc:
            return render(request, user, "unavailable.html", tab, problem=str(exc))
        schedule = schedule_of(DAG_ID)
        with warehouse.engine.connect() as conn:
            context = reader_fn(conn, warehouse.tables)
            context["overview"] = queries.overview(conn, warehouse.tables)
            context["health"] = health(conn, warehouse.tables, threshold_minutes=warehouse.freshness_minutes, schedule=schedule)
        return render(request, user, template, tab, schedule=schedule, **context)

    @app.get("/", response_class=HTMLResponse)
    def orders_page(
        request: Request,
        user: Reader,
        state: str = "",
        failed: str = "",
        masked: str = "",
        imported_from: str = "",
        imported_to: str = "",
        q: str = "",
        page: str = "1",
    ) -> HTMLResponse:
        problems: list[str] = []
        q = queries.search_text(q)  # echoed in the form and the pager's links as it is searched for
        params = {"state": state, "failed": failed, "masked": masked, "imported_from": imported_from, "imported_to": imported_to, "q": q}
        try:
            flt = queries.OrderFilter(
                state=state or None,
                failed_only=bool(failed),
                card_data_masked_only=bool(masked),
                imported_from=_parse_day(imported_from, "Imported from", problems),
                imported_to=_parse_day(imported_to, "Imported to", problems),
                search=q,
            )
        except ValueError as exc:
            problems.append(str(exc))
            flt = queries.OrderFilter()
        links = Links.for_request(request)

        def orders(conn: sa.Connection, t: Tables) -> dict:
            result = queries.list_orders(conn, t, flt, _parse_int(page, 1))
            shipments = shipments_of(conn, t, [o["sf_order_id"] for o in result.rows])
            return {"page": result, "params": params, "problems": problems, "shipments": shipments,
                    "page_url": lambda n: links.page("/", {**params, "page": n})}

        return read(request, user, "orders", "orders.html", orders)

    @app.get("/quarantine", response_class=HTMLResponse)
    def quarantine_page(request: Request, user: Reader, q: str = "", page: str = "1") -> HTMLResponse:
        links = Links.for_request(request)
        q = queries.search_text(q)

        def quarantined(conn: sa.Connection, t: Tables) -> dict:
            result = queries.list_quarantine(conn, t, q[: queries.MAX_SEARCH_LENGTH], _parse_int(page, 1))
            return {"page": result, "params": {"q": q}, "page_url": lambda n: links.page("/quarantine", {"q": q, "page": n})}

        return read(request, user, "quarantine", "quarantine.html", quarantined)

    @app.get("/runs", response_class=HTMLResponse)
    def runs_page(request: Request, user: Reader, page: str = "1") -> HTMLResponse:
        links = Links.for_request(request)

        def runs(conn: sa.Connection, t: Tables) -> dict:
            result = queries.list_runs(conn, t, _parse_int(page, 1))
            return {"page": result, "page_url": lambda n: links.page("/runs", {"page": n})}

        return read(request, user, "runs", "runs.html", runs)

    @app.get("/order", response_class=HTMLResponse)
    def order_page(request: Request, user: Reader, q: str = "") -> HTMLResponse:
        """Where is order X (OrderNumber or Salesforce id), and its whole story: data, quarantine, write-backs."""
        return read(request, user, "order", "order.html", lambda conn, t: {"story": order_story(conn, t, q)})

    @app.get("/config", response_class=HTMLResponse)
    def config_page(request: Request, user: Reader) -> HTMLResponse:
        """The configuration in effect, each key's source, and environment variables hiding stored values."""
        return render(request, user, "config.html", "config", config=config_in_effect())

    @app.post("/api/writebacks/retry")
    def retry_writebacks(user: Triggerer) -> dict[str, int]:
        """Make open write-back failures due now; the page then triggers a run through Airflow's API."""
        try:
            warehouse = source.get()
        except WarehouseUnavailable as exc:
            raise HTTPException(409, str(exc)) from None
        with warehouse.engine.begin() as conn:
            scheduled = schedule_failed_writebacks(conn, warehouse.tables)
        return {"failed": scheduled.failed, "revived": scheduled.revived, "total": scheduled.total}

    return app


__all__ = ["Links", "WarehouseSource", "WarehouseUnavailable", "create_app", "current_user", "dag_run_access"]
