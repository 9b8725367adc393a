"""The warehouse's schema version: Alembic migrations over the table definitions in ``warehouse/definitions.py``.

:func:`upgrade` brings a warehouse to this code's version, the head of ``migrations/versions``.
Every task calls it (through ``create_all``) before anything else, so the first task of
a run does the work and the others find nothing to do:

- at the head with its views in place: a few catalogue reads, no lock, no write;
- empty (none of the warehouse's tables): created whole from the table definitions, stamped at
  the head;
- created before schema versions existed (a release's ``create_all``, no version table):
  recognised by what it holds, stamped at that release, then migrated. Never dropped;
- at an older version: migrated to the head.

Changes run in one transaction under a lock that serialises upgraders, so two runs starting at
once do not collide (the second waits, then finds the work done): an advisory lock on PostgreSQL,
a write transaction (``BEGIN IMMEDIATE``) on SQLite. A failed upgrade leaves the warehouse as it
was. Views are derived objects: dropped before migrations run (a migration never has to mind
them) and created again after; a view that is missing, dropped by hand, comes back.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
import sqlalchemy.dialects.postgresql

from .warehouse.definitions import Tables, column_compression, create_tables, tables
from .warehouse.engines import SQLITE_WRITE_LOCK
from .warehouse.views import VIEWS, drop_views, ensure_views, stored_views_fingerprint, views_fingerprint

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

VERSION_TABLE = "warehouse_schema_version"  # not alembic_version: the warehouse may share a schema with another app's
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "salesforce-orders-warehouse upgrade"

# The tables every release before schema versions created. A warehouse without a version table
# that holds some of them but not all is not one a release made: it is left alone.
_FIRST_RELEASE_TABLES = frozenset({
    "customers", "customer_locations", "external_orders", "external_order_items", "order_services",
    "quarantined_orders", "import_runs", "writeback_outbox", "sync_state", "stg_orders", "stg_order_items",
})


class SchemaVersionError(RuntimeError):
    """The warehouse cannot be brought to this code's version; the message says why and what to do."""


class UpgradeNotAllowed(SchemaVersionError):
    """The warehouse needs changes that the connection's database role may not make."""

    def __init__(self, pending: list[str], reason: str) -> None:
        self.pending = pending
        self.reason = reason
        super().__init__(
            f"the warehouse needs {'; '.join(pending)}, and this connection's role may not change the schema "
            f"({reason}). Have the schema's owner run `{UPGRADE_COMMAND}` "
            "(docs/runbook.md, 'Upgrading the warehouse'), then clear the task."
        )


@dataclass(frozen=True)
class WarehouseState:
    """What a warehouse holds, as far as its schema version goes."""

    version: str | None  # None: no version table
    tables: frozenset[str]
    views: frozenset[str]
    views_fingerprint: str | None  # of the views in place, as recorded in sync_state

    @property
    def is_empty(self) -> bool:
        return self.version is None and not self.tables & _FIRST_RELEASE_TABLES


# Alembic is imported only when there is work to do: a task at the head (every task but the
# first after a release) reads the head from the scripts' names, not from Alembic's script
# directory, which imports every migration (some 0.15 s a task process).
def _alembic_config(conn: sa.Connection | None = None, schema: str | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes.update(connection=conn, schema=schema)
    return config


@cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config())


def head_version() -> str:
    """This code's schema version: the newest migration, by its script's name (``NNNN_message.py``,
    revision ``NNNN``: :func:`new_migration` numbers each next, and a test holds this to Alembic's
    own head)."""
    numbers = sorted(path.name.split("_", 1)[0] for path in (MIGRATIONS_DIR / "versions").glob(_SCRIPT_NAMES))
    if not numbers:
        raise SchemaVersionError("no warehouse migrations found")
    return numbers[-1]


_SCRIPT_NAMES = "[0-9][0-9][0-9][0-9]_*.py"


def known_versions() -> list[str]:
    """Every schema version, oldest first."""
    return [script.revision for script in reversed(list(_scripts().walk_revisions()))]


def read_state(conn: sa.Connection, t: Tables) -> WarehouseState:
    schema = t.metadata.schema
    inspector = sa.inspect(conn)
    table_names = frozenset(inspector.get_table_names(schema=schema))
    version = None
    if VERSION_TABLE in table_names:
        versions = conn.execute(sa.select(sa.table(VERSION_TABLE, sa.column("version_num"), schema=schema))).scalars().all()
        if len(versions) != 1:
            raise SchemaVersionError(f"{VERSION_TABLE} holds {len(versions)} versions ({versions}); expected one")
        version = versions[0]
    fingerprint = stored_views_fingerprint(conn, t) if "sync_state" in table_names else None
    return WarehouseState(version, table_names, frozenset(inspector.get_view_names(schema=schema)), fingerprint)


def pending_work(conn: sa.Connection, t: Tables, state: WarehouseState) -> list[str]:
    """What :func:`upgrade` would do to the warehouse, in words; empty when it is current."""
    head = head_version()
    if state.is_empty:
        return [f"creating (schema version {head})"]
    if state.version not in (None, head) and state.version not in known_versions():
        raise SchemaVersionError(
            f"the warehouse is at schema version {state.version}, which this code does not know "
            f"(its newest is {head}): newer code upgraded it. Run that code, not this."
        )
    work = []
    if state.version is None:
        work.append(f"recognising the release that created it, then an upgrade to schema version {head}")
    elif state.version != head:
        work.append(f"an upgrade from schema version {state.version} to {head}")
    if state.views_fingerprint != views_fingerprint(t, conn.dialect):
        work.append("its views replaced (their definitions changed)")
    elif missing := sorted(set(VIEWS) - state.views):
        work.append(f"the missing views {', '.join(missing)} created again")
    return work


def upgrade(engine: sa.Engine, schema: str | None = None) -> list[str]:
    """Bring the warehouse in ``schema`` to this code's version; returns what was done (empty: nothing)."""
    _check_schema_name(engine.dialect, schema)
    t = tables(schema)
    with engine.connect() as conn:
        pending = pending_work(conn, t, read_state(conn, t))
    if not pending:
        return []
    try:
        with _upgrade_lock(engine, schema) as conn:
            done = _upgrade_locked(conn, t)
    except sa.exc.DBAPIError as exc:
        if _sqlstate(exc) == "42501":  # insufficient_privilege: no CREATE, not the owner
            raise UpgradeNotAllowed(pending, str(exc.orig).strip().splitlines()[0]) from None
        raise
    for line in done:
        log.info("Warehouse %s: %s", schema or "(default schema)", line)
    return done


def _upgrade_locked(conn: sa.Connection, t: Tables) -> list[str]:
    from alembic import command

    schema = t.metadata.schema
    if schema and conn.dialect.name == "postgresql" and not sa.inspect(conn).has_schema(schema):
        conn.execute(sa.schema.CreateSchema(schema))
    state = read_state(conn, t)  # again, under the lock: another run may have done the work meanwhile
    pending_work(conn, t, state)  # refuses a version this code does not know
    head = head_version()
    done = []
    if state.is_empty:
        create_tables(conn, t)
        command.stamp(_alembic_config(conn, schema), head)
        done.append(f"created at schema version {head}")
        state = replace(state, version=head)
    elif state.version is None:
        release = recognise(conn, t, state)
        command.stamp(_alembic_config(conn, schema), release)
        done.append(f"created before schema versions; recognised as schema version {release}")
        state = replace(state, version=release)
    views = state.views
    if state.version != head:
        drop_views(conn, t)
        command.upgrade(_alembic_config(conn, schema), head)
        done.append(f"upgraded from schema version {state.version} to {head}")
        views = frozenset()
    if created := ensure_views(conn, t, set(views)):
        done.append(f"views created: {', '.join(created)}")
    return done


def recognise(conn: sa.Connection, t: Tables, state: WarehouseState) -> str:
    """The schema version of a warehouse created before versions existed, from what it holds.

    Only the releases before schema versions need recognising, so this never grows. A first-release
    warehouse that later releases kept up with ``create_all`` holds both staging tables of 0001 and
    0002: it is 0001, and migration 0002 finishes what ``create_all`` began.
    """
    missing = _FIRST_RELEASE_TABLES - state.tables
    if missing:
        raise SchemaVersionError(
            f"the warehouse schema holds some of the import's tables but not {', '.join(sorted(missing))}, and no "
            f"{VERSION_TABLE} table: it is not a warehouse any release created. Nothing was changed; "
            "point warehouse_schema at an empty schema or at the import's warehouse."
        )
    if "stg_transformed" in state.tables or "stg_transformed_batches" not in state.tables:
        return "0001"
    if conn.dialect.name == "postgresql" and column_compression(conn, t.stg_transformed_batches.c.payload) != "l":
        return "0002"
    return "0003"


@contextmanager
def _upgrade_lock(engine: sa.Engine, schema: str | None) -> Iterator[sa.Connection]:
    """One transaction that only one upgrader at a time is in; committed when the block ends."""
    if engine.dialect.name == "sqlite":
        with _sqlite_write_transaction(engine) as conn:
            yield conn
        return
    with engine.begin() as conn:
        target = schema or conn.dialect.default_schema_name
        key = int.from_bytes(hashlib.sha256(f"salesforce_orders warehouse {target}".encode()).digest()[:8], "big", signed=True)
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))  # released at commit or rollback
        yield conn


@contextmanager
def _sqlite_write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction begun with ``BEGIN IMMEDIATE``: the database's write lock from the start (another
    upgrader waits on the busy timeout), and every DDL statement inside it.

    Foreign keys are off meanwhile, as SQLite prescribes for schema changes: a migration that
    rebuilds ``external_orders`` would otherwise cascade the delete of its old copy to the items.
    The pragma works only outside a transaction, so it is set on the driver's connection before
    the transaction begins, and the keys are checked before the commit.
    """
    with engine.connect() as conn:
        sqlite = conn.connection.driver_connection
        sqlite.execute("PRAGMA foreign_keys=OFF")
        try:
            conn = conn.execution_options(**{SQLITE_WRITE_LOCK: True})  # warehouse engines begin IMMEDIATE
            with conn.begin():
                if not sqlite.in_transaction:  # an engine whose driver begins transactions itself, lazily
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise SchemaVersionError(f"the upgrade would break foreign keys: {broken[:5]}; nothing was changed")
        finally:
            sqlite.execute("PRAGMA foreign_keys=ON")


def _check_schema_name(dialect: sa.Dialect, schema: str | None) -> None:
    if dialect.name == "sqlite" and schema not in (None, "main"):
        raise ValueError(f"SQLite warehouses have no schema {schema!r}: leave warehouse_schema unset")


def _sqlstate(exc: sa.exc.DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def import_role_grants(role: str, *, schema: str, database: str, owner: str) -> list[str]:
    """PostgreSQL: what a role needs to run the import in ``schema`` without owning anything.

    Reading and writing the tables (the version table too), their id sequences, and temporary
    tables (large writes go through COPY into one). Default privileges give it the tables and
    sequences that ``owner``'s later upgrades create, and the views they recreate. No CREATE
    anywhere: schema changes are the owner's (``salesforce-orders-warehouse upgrade``).
    """
    quote = sa.dialects.postgresql.dialect().identifier_preparer.quote
    r, s, d, o = quote(role), quote(schema), quote(database), quote(owner)
    return [
        f"GRANT USAGE ON SCHEMA {s} TO {r}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
        f"GRANT TEMPORARY ON DATABASE {d} TO {r}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {o} IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r}",
    ]


def new_migration(message: str) -> Path:
    """A new migration script after the head, numbered next (for developers; see migrations/README.md)."""
    from alembic import command

    number = f"{int(head_version()) + 1:04d}"
    script = command.revision(_alembic_config(), message=message, rev_id=number)
    return Path(script.path)  # type: ignore[union-attr]


__all__ = [
    "MIGRATIONS_DIR",
    "UPGRADE_COMMAND",
    "VERSION_TABLE",
    "SchemaVersionError",
    "UpgradeNotAllowed",
    "WarehouseState",
    "head_version",
    "import_role_grants",
    "known_versions",
    "new_migration",
    "pending_work",
    "read_state",
    "recognise",
    "upgrade",
]


def create_all(engine: sa.Engine, schema: str | None = None) -> None:
    """Bring the warehouse to this code's schema version: created whole when empty, migrated when
    older, missing or outdated views recreated (:func:`upgrade`).

    Cheap when there is nothing to do (a few catalogue reads, no lock): every task calls it.
    """
    upgrade(engine, schema)
