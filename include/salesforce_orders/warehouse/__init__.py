"""The warehouse: table definitions (SQLAlchemy Core), engines, views and dialect-aware upserts.

The same definitions serve SQLite (the embedded default) and PostgreSQL. Every timestamp is
stored and returned timezone-aware in UTC (:class:`UtcDateTime`); JSON columns are ``JSONB``
on PostgreSQL so analysts can query into them. ``docs/warehouse.md`` documents every table,
column and view.

One module per job; this package re-exports their public names, so
``from salesforce_orders.warehouse import tables, upsert`` reaches any of them:

- :mod:`.types`: column types (``UtcDateTime``, ``Money``, JSON, rates) and UTC timestamps;
- :mod:`.definitions`: the table definitions, the warehouse's one specification, with the row
  states and the column limits the validation shares (``tables(schema)``, ``Tables``);
- :mod:`.views`: the analysts' views and keeping them in place;
- :mod:`.engines`: engines from a URL, a SQLite file or an Airflow connection; the JSON codec;
- :mod:`.writes`: upserts, updates and inserts of many rows (COPY on PostgreSQL), key lookups;
- :mod:`.errors`: failed statements told without row values, and explained in short.

Submodules import one another, never this package. The constants re-exported here are copies:
a test that changes ``UPSERT_BATCH_SIZE`` or ``COPY_MIN_ROWS`` patches :mod:`.writes`.
"""

from __future__ import annotations

from .definitions import (
    COLUMN_LIMITS,
    CUSTOMER_ID_LENGTH,
    EXTERNAL_NAME_LENGTH,
    HASH_LENGTH,
    INVALID,
    ITEM_COLUMN_LIMITS,
    OUTBOX_DEAD,
    OUTBOX_DONE,
    OUTBOX_FAILED,
    OUTBOX_PENDING,
    OUTBOX_PROCESSING,
    OUTBOX_STATES,
    OUTBOX_UNSENT_STATES,
    RUN_ID_LENGTH,
    RUN_STATUSES,
    SERVICE_KEY_LENGTH,
    SF_ID_LENGTH,
    SF_STATES,
    SHIPMENT_INVALID,
    SHIPMENT_KEY_LENGTH,
    SHIPMENT_NEW,
    SHIPMENT_QUEUED,
    SHIPMENT_STATES,
    SHIPMENT_VALID,
    STAGED,
    STAGING_STATUSES,
    VALID,
    VERSIONED_ITEM_COLUMNS,
    VERSIONED_ORDER_COLUMNS,
    Tables,
    column_compression,
    compress_with_lz4,
    create_tables,
    tables,
    validate_identifier,
    warehouse_metadata,
)
from .engines import (
    ENGINE_JSON,
    SQLITE_WRITE_LOCK,
    create_sqlite_engine,
    engine_from_connection,
    json_dumps,
    json_loads,
    warehouse_engine,
)
from .errors import WarehouseConnectionError, WarehouseError
from .types import Money, UtcDateTime, parse_utc, utc_now
from .views import (
    VIEWS,
    VIEWS_KEY,
    create_views,
    drop_views,
    ensure_views,
    money_sum,
    stored_views_fingerprint,
    views_fingerprint,
)
from .writes import (
    COPY_MIN_ROWS,
    UPSERT_BATCH_SIZE,
    analyze,
    dialect_insert,
    in_batches,
    insert_rows,
    one_of,
    select_in,
    update_rows,
    upsert,
)

__all__ = [
    "COLUMN_LIMITS",
    "COPY_MIN_ROWS",
    "CUSTOMER_ID_LENGTH",
    "ENGINE_JSON",
    "EXTERNAL_NAME_LENGTH",
    "HASH_LENGTH",
    "INVALID",
    "ITEM_COLUMN_LIMITS",
    "OUTBOX_DEAD",
    "OUTBOX_DONE",
    "OUTBOX_FAILED",
    "OUTBOX_PENDING",
    "OUTBOX_PROCESSING",
    "OUTBOX_STATES",
    "OUTBOX_UNSENT_STATES",
    "RUN_ID_LENGTH",
    "RUN_STATUSES",
    "SERVICE_KEY_LENGTH",
    "SF_ID_LENGTH",
    "SF_STATES",
    "SHIPMENT_INVALID",
    "SHIPMENT_KEY_LENGTH",
    "SHIPMENT_NEW",
    "SHIPMENT_QUEUED",
    "SHIPMENT_STATES",
    "SHIPMENT_VALID",
    "SQLITE_WRITE_LOCK",
    "STAGED",
    "STAGING_STATUSES",
    "UPSERT_BATCH_SIZE",
    "VALID",
    "VERSIONED_ITEM_COLUMNS",
    "VERSIONED_ORDER_COLUMNS",
    "VIEWS",
    "VIEWS_KEY",
    "Money",
    "Tables",
    "UtcDateTime",
    "WarehouseConnectionError",
    "WarehouseError",
    "analyze",
    "column_compression",
    "compress_with_lz4",
    "create_sqlite_engine",
    "create_tables",
    "create_views",
    "dialect_insert",
    "drop_views",
    "engine_from_connection",
    "ensure_views",
    "in_batches",
    "insert_rows",
    "json_dumps",
    "json_loads",
    "money_sum",
    "one_of",
    "parse_utc",
    "select_in",
    "stored_views_fingerprint",
    "tables",
    "update_rows",
    "upsert",
    "utc_now",
    "validate_identifier",
    "views_fingerprint",
    "warehouse_engine",
    "warehouse_metadata",
]
