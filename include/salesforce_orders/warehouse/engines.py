"""Warehouse engines: from a URL, a SQLite file or an Airflow connection, with the JSON codec of
every JSON column and failed statements told without row values (:mod:`.errors`)."""

from __future__ import annotations

import json
import logging
from decimal import Decimal
from typing import Any

import msgspec
import sqlalchemy as sa

from .errors import WarehouseConnectionError, hide_row_values

log = logging.getLogger(__name__)

_POSTGRES_EXTRAS = ("sslmode", "sslcert", "sslkey", "sslrootcert", "connect_timeout", "application_name", "options",
                    "target_session_attrs")


# Amounts are exact decimals end to end: written as JSON numbers with every digit, and every JSON
# number with a fraction or exponent read back as a Decimal (a float would round past 15 digits).
_JSON_ENCODER = msgspec.json.Encoder(decimal_format="number")
_JSON_DECODER = msgspec.json.Decoder(float_hook=Decimal)


def json_dumps(value: Any) -> str:
    """JSON columns' text, written by msgspec: several times faster than ``json.dumps`` on the
    staged records and payloads of a large run. (Non-finite floats become null, which PostgreSQL's
    json types require anyway.)"""
    return _JSON_ENCODER.encode(value).decode()


def json_bytes(value: Any) -> bytes:
    """The text :func:`json_dumps` writes, as UTF-8: what a binary COPY sends (warehouse.writes)."""
    return _JSON_ENCODER.encode(value)


def json_loads(text: str | bytes) -> Any:
    try:
        return _JSON_DECODER.decode(text)
    except msgspec.DecodeError:
        # NaN or Infinity written by json.dumps into an older SQLite warehouse
        return json.loads(text, parse_float=Decimal)


def json_loads_many(texts: list[bytes]) -> list[Any]:
    """:func:`json_loads` of each text, the texts decoded in one call (as one JSON array): a page of
    staged records costs the parsing alone, not a call and a conversion per record."""
    if not texts:
        return []
    try:
        return _JSON_DECODER.decode(b"[" + b",".join(texts) + b"]")
    except msgspec.DecodeError:
        return [json_loads(text) for text in texts]


# How every warehouse engine reads and writes its JSON columns.
ENGINE_JSON = {"json_serializer": json_dumps, "json_deserializer": json_loads}


def uses_warehouse_json(dialect: sa.Dialect) -> bool:
    """Whether an engine's JSON columns go through this codec (:data:`ENGINE_JSON`): then staging
    and COPY may hand it records or take its bytes directly, past SQLAlchemy's column types."""
    return getattr(dialect, "_json_serializer", None) is json_dumps and getattr(dialect, "_json_deserializer", None) is json_loads
SQLITE_WRITE_LOCK = "sqlite_write_lock"  # execution option: this connection's transactions begin IMMEDIATE
# Execution option: PostgreSQL sends the statement's results in binary (psycopg reads them into the
# same Python values). A large bytea then comes as its bytes, not as hex text twice its size that
# the server writes and the driver decodes (a staged batch of some 8 MB: most of reading it).
BINARY_RESULTS = "binary_results"


def warehouse_engine(url: sa.URL, **options: Any) -> sa.Engine:
    """An engine for a warehouse: JSON through msgspec, and failed statements told without the
    values of the rows they wrote (``hide_parameters``, :mod:`.errors`)."""
    engine = hide_row_values(sa.create_engine(url, hide_parameters=True, **ENGINE_JSON, **options))
    if engine.dialect.driver == "psycopg":
        sa.event.listen(engine, "before_cursor_execute", _binary_results_on_request)
    return engine


def _binary_results_on_request(
    _conn: sa.Connection, cursor: Any, _statement: str, _parameters: Any, context: Any, _executemany: bool
) -> None:
    if context.execution_options.get(BINARY_RESULTS):
        from psycopg.pq import Format

        cursor.format = Format.BINARY


def create_sqlite_engine(path: str) -> sa.Engine:
    """A SQLite warehouse in ``path``: WAL (readers never block the writer), foreign keys enforced."""
    engine = warehouse_engine(sa.URL.create("sqlite", database=path))

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")  # tasks of overlapping runs wait, not fail
        cursor.close()
        # SQLAlchemy, not the driver, begins transactions: the driver's own (lazy, before the first
        # write) would make a savepoint the outermost transaction, whose release commits it.
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        # IMMEDIATE takes the write lock at once, for a schema upgrade (see schema_versions)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(SQLITE_WRITE_LOCK) else "BEGIN")

    return engine


def engine_from_connection(conn_id: str) -> sa.Engine:
    """An engine for the Airflow Connection ``conn_id`` (conn_type ``sqlite`` or ``postgres``)."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise WarehouseConnectionError(
            f"Airflow connection {conn_id!r} is not defined: create it (UI, CLI or AIRFLOW_CONN_{conn_id.upper()}) "
            "with conn_type sqlite (host = database file) or postgres"
        ) from None
    conn_type = (conn.conn_type or "").lower()
    if conn_type == "sqlite":
        if not conn.host:
            raise WarehouseConnectionError(f"Airflow connection {conn_id!r} (sqlite) needs the database file path in host")
        engine = create_sqlite_engine(conn.host)
    elif conn_type in ("postgres", "postgresql"):
        extras = conn.extra_dejson
        url = sa.URL.create(
            "postgresql+psycopg",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,  # Airflow keeps the database name in "schema"
            query={k: str(extras[k]) for k in _POSTGRES_EXTRAS if extras.get(k) not in (None, "")},
        )
        engine = warehouse_engine(url, pool_pre_ping=True)
    else:
        raise WarehouseConnectionError(
            f"Airflow connection {conn_id!r} has conn_type {conn.conn_type!r}; the warehouse supports sqlite and postgres"
        )
    log.info("Warehouse %s: %s", conn_id, engine.url.render_as_string(hide_password=True))
    return engine


__all__ = [
    "BINARY_RESULTS",
    "ENGINE_JSON",
    "SQLITE_WRITE_LOCK",
    "create_sqlite_engine",
    "engine_from_connection",
    "json_bytes",
    "json_dumps",
    "json_loads",
    "uses_warehouse_json",
    "warehouse_engine",
]
