"""The configuration in effect, and where each part of it comes from, for the view's Configuration tab.

Airflow looks a Variable or Connection up in the secrets backends first, then in environment
variables (``AIRFLOW_VAR_<NAME>``, ``AIRFLOW_CONN_<ID>``), and last in its metadata DB, where
Admin → Variables / Connections edit them. So an environment variable *shadows* a stored one:
an edit in the UI is accepted and then ignored. That is what the warnings here say.

What is read is the api-server's environment; the workers of a deployment set up like ``make up``
(one environment for all components) see the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from salesforce_orders.config import VARIABLE_NAME, ConfigError, ImportConfig, parse_config

ENV_DB = "metadata DB (Admin → Variables / Connections)"


@dataclass(frozen=True)
class Setting:
    key: str  # dotted path, e.g. "notifications.no_success_after_minutes"
    value: str  # as JSON
    source: str  # "the Variable" or "default"


@dataclass(frozen=True)
class Origin:
    """Where Airflow finds one Variable or Connection, and whether an environment variable hides a stored one."""

    name: str
    kind: str  # "Variable" or "Connection"
    env_var: str
    in_env: bool
    stored: bool
    summary: str  # e.g. the connection's type and host; never a password

    @property
    def source(self) -> str:
        if self.in_env:
            return f"environment variable {self.env_var}"
        return ENV_DB if self.stored else "not set: the defaults" if self.kind == "Variable" else "missing"

    @property
    def shadowed(self) -> bool:
        return self.in_env and self.stored


@dataclass(frozen=True)
class ConfigInEffect:
    settings: list[Setting]
    problem: str | None  # the Variable is invalid: the import fails with this message
    origins: list[Origin]

    @property
    def warnings(self) -> list[str]:
        edit = {"Variable": "Admin → Variables", "Connection": "Admin → Connections"}
        return [
            f"The {o.kind.lower()} {o.name!r} is set by the environment variable {o.env_var}, which hides the one "
            f"stored in the metadata DB: edits in {edit[o.kind]} are accepted but ignored. Remove the environment "
            "variable (and restart Airflow) to use the stored one."
            for o in self.origins
            if o.shadowed
        ]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}{key}." if isinstance(item, dict) and item else f"{prefix}{key}"))
        return flat
    return {prefix.rstrip("."): value}


def _stored_variable(name: str) -> str | None:
    from airflow.models.variable import Variable as VariableModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(VariableModel).filter(VariableModel.key == name).one_or_none()
        return row.val if row is not None else None


def _stored_connection(conn_id: str) -> Any:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(Connection).filter(Connection.conn_id == conn_id).one_or_none()
        return None if row is None else {"conn_type": row.conn_type, "host": row.host, "port": row.port}


def _connection_summary(conn: dict[str, Any] | None) -> str:
    if not conn:
        return ""
    host = conn.get("host") or ""
    return f"{conn.get('conn_type') or '?'} {host}{':' + str(conn['port']) if conn.get('port') else ''}".strip()


def _env_connection(env_value: str) -> dict[str, Any]:
    try:
        parsed = json.loads(env_value)
    except ValueError:  # the URI form
        return _uri_host(env_value)
    return parsed if isinstance(parsed, dict) else {}


def _uri_host(uri: str) -> dict[str, Any]:
    """A connection URI's type, host and port, read from after its last ``@``: a password written
    without URL-encoding (a ``/``, ``#`` or ``:`` in it) must never be taken for the host or port,
    nor be quoted in an error."""
    scheme, _, rest = uri.partition("://")
    host = rest.rpartition("@")[2].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
    name, colon, port = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not colon:
        name, port = host, ""
    return {"conn_type": scheme or None, "host": name or None, "port": int(port) if port.isdigit() else None}


def read_config_in_effect(environ: dict[str, str] | None = None) -> ConfigInEffect:
    """The Variable as the import reads it, each key's source, and each Variable's / Connection's origin."""
    environ = dict(os.environ if environ is None else environ)
    var_env = f"AIRFLOW_VAR_{VARIABLE_NAME.upper()}"
    stored_text = _stored_variable(VARIABLE_NAME)
    text = environ.get(var_env, stored_text)
    origins = [Origin(VARIABLE_NAME, "Variable", var_env, var_env in environ, stored_text is not None, "")]
    problem = None
    try:
        config = parse_config(text)
    except ConfigError as exc:
        problem, config = str(exc), ImportConfig()
    given = _flatten(json.loads(text)) if text and not problem else {}
    settings = []
    for key, value in _flatten(config.model_dump(mode="json")).items():
        explicit = key in given or any(key.startswith(g + ".") for g in given)
        settings.append(Setting(key, json.dumps(value), "the Variable" if explicit else "default"))

    conn_ids = [config.salesforce_conn_id, config.warehouse_conn_id]
    if config.notifications.email is not None:
        conn_ids.append(config.notifications.email.smtp_conn_id)
    if config.notifications.slack is not None:
        conn_ids.append(config.notifications.slack.slack_webhook_conn_id)
    for conn_id in dict.fromkeys(conn_ids):
        env_var = f"AIRFLOW_CONN_{conn_id.upper()}"
        stored = _stored_connection(conn_id)
        in_env = env_var in environ
        summary = _connection_summary(_env_connection(environ[env_var]) if in_env else stored)
        origins.append(Origin(conn_id, "Connection", env_var, in_env, stored is not None, summary))
    return ConfigInEffect(settings, problem, origins)
