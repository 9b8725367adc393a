"""The warehouse's table definitions (SQLAlchemy Core): the one specification of its tables.

Analysts' documentation (``docs/warehouse.md``), the migrations (a new warehouse is created whole
from these definitions, an existing one is migrated to them: ``schema_versions``), the views, the
load and the External Orders view all start from here. The same definitions serve SQLite (the
embedded default) and PostgreSQL. :func:`warehouse_metadata` builds them area by area;
:func:`tables` gives typed access to one schema's tables.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.ddl import ExecutableDDLElement

from ..model import LIFECYCLE_STATES, SF_ACTIVE, SF_DEACTIVATED, SF_DELETED
from .types import Money, UtcDateTime, json_type, rate_type, utc_now

log = logging.getLogger(__name__)

# Write-back outbox row states.
OUTBOX_PENDING = "PENDING"  # waiting to be sent (first try, or again after a transient error)
OUTBOX_PROCESSING = "PROCESSING"  # claimed by a write-back run
OUTBOX_DONE = "DONE"  # written to Salesforce
OUTBOX_FAILED = "FAILED"  # Salesforce rejected it; later runs try again until the attempt limit
OUTBOX_DEAD = "DEAD"  # given up: attempts exhausted, or the order left Activated / was deleted
OUTBOX_STATES = (OUTBOX_PENDING, OUTBOX_PROCESSING, OUTBOX_DONE, OUTBOX_FAILED, OUTBOX_DEAD)
OUTBOX_UNSENT_STATES = (OUTBOX_PENDING, OUTBOX_PROCESSING, OUTBOX_FAILED)

SF_STATES = (SF_ACTIVE, SF_DEACTIVATED, SF_DELETED)
RUN_STATUSES = ("running", "success", "failed", "disabled")

# Staged order validation status.
STAGED, VALID, INVALID = "staged", "valid", "invalid"
STAGING_STATUSES = (STAGED, VALID, INVALID)
# An order_shipments row: NEW as written, INVALID (with its reasons; checked again each run),
# VALID (waiting for sending to be enabled), QUEUED (its write-backs are in the outbox).
SHIPMENT_NEW, SHIPMENT_INVALID, SHIPMENT_VALID, SHIPMENT_QUEUED = "NEW", "INVALID", "VALID", "QUEUED"
SHIPMENT_STATES = (SHIPMENT_NEW, SHIPMENT_INVALID, SHIPMENT_VALID, SHIPMENT_QUEUED)
SHIPMENT_KEY_LENGTH = 80  # fits a Salesforce external id text field (255) with room to spare

# Salesforce's maximum lengths for the staged order fields the warehouse stores as text
# (names as in a staged order, see ``model.py``). The validation step checks them, and the
# warehouse columns below take their lengths from here, so the two cannot drift apart.
COLUMN_LIMITS: dict[str, int] = {
    "OrderNumber": 30,
    "Status": 40,
    "StatusCode": 40,
    "Type": 255,
    "CurrencyIsoCode": 3,
    "PoNumber": 80,
    **{f"{prefix}{part}": limit for prefix in ("Billing", "Shipping") for part, limit in
       (("Street", 255), ("City", 40), ("State", 80), ("PostalCode", 20), ("Country", 80))},
    "Account.Name": 255,
    "Account.Customer_ID__c": 40,
    "Account.Parent.Name": 255,
    **{f"Account.Billing{part}": limit for part, limit in
       (("Street", 255), ("City", 40), ("State", 80), ("PostalCode", 20), ("Country", 80))},
}
# The same for staged order products.
ITEM_COLUMN_LIMITS: dict[str, int] = {
    "Product2.ProductCode": 255,
    "Product2.Name": 255,
    "Service_Number__c": 40,
}

SF_ID_LENGTH = 18
CUSTOMER_ID_LENGTH = COLUMN_LIMITS["Account.Customer_ID__c"]
EXTERNAL_NAME_LENGTH = 330  # "<prefix><OrderNumber> <Account.Name>": 40 + 30 + 1 + 255
RUN_ID_LENGTH = 250  # Airflow's own limit for run ids
HASH_LENGTH = 64  # hex SHA-256
SERVICE_KEY_LENGTH = 100  # "<order id>:<service number>" or "<order id>:item:<item id>"

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")  # used with fullmatch: no trailing "\n" slips through


def validate_identifier(name: str) -> str:
    """A schema or table name from config, checked before it reaches any SQL."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ValueError(
            f"invalid warehouse identifier {name!r}: use letters, digits and underscores, "
            "starting with a letter or underscore, at most 63 characters"
        )
    return name


# ---------------------------------------------------------------------------------------
# Columns
# ---------------------------------------------------------------------------------------


def _sf_id(name: str, *args: Any, **kw: Any) -> sa.Column:
    return sa.Column(name, sa.String(SF_ID_LENGTH), *args, **kw)


def _run_id(name: str, **kw: Any) -> sa.Column:
    return sa.Column(name, sa.String(RUN_ID_LENGTH), **kw)


def _ts(name: str, **kw: Any) -> sa.Column:
    return sa.Column(name, UtcDateTime(), **kw)


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer, nullable=False, default=0, server_default="0")


def _updated_at(**kw: Any) -> sa.Column:
    """When the row last changed in any way: every insert and the load's writes carry it, and any
    other UPDATE through SQLAlchemy (lifecycle, write-back, status, flags) moves it by itself."""
    return _ts("updated_at", onupdate=utc_now, **kw)


def _soft_delete() -> list[sa.Column]:
    """A child row its order's newer version no longer has: kept, marked, never removed."""
    return [
        sa.Column("is_deleted", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
        _ts("deleted_at"),
    ]


# What a version of an order (and of an order product) keeps: its content as loaded, not the
# import's bookkeeping (lifecycle, sf_state, load times), which external_orders tracks.
VERSIONED_ORDER_COLUMNS = (
    "sf_order_id", "order_number", "external_name", "customer_id", "sf_account_id", "account_name", "sf_status",
    "sf_status_code", "order_type", "effective_date", "end_date", "activated_at", "total_amount", "currency",
    "corporate_currency", "conversion_rate", "corporate_amount",
    *(f"billing_{part}" for part in ("street", "city", "state", "postal_code", "country", "country_code")),
    *(f"service_{part}" for part in ("street", "city", "state", "postal_code", "country", "country_code")),
    "service_address_source", "location_id", "destination", "notes", "po_number", "metadata", "is_zero_total",
    "contract_id", "opportunity_id", "owner_id", "owner_name", "sf_created_at", "sf_system_modstamp",
    "card_data_masked", "card_data_masked_fields", "content_hash",
)
VERSIONED_ITEM_COLUMNS = (
    "sf_order_item_id", "sf_order_id", "product_code", "product_name", "sf_product_id", "sf_pricebook_entry_id",
    "quantity", "unit_price", "list_price", "total_price", "service_date", "end_date", "service_number",
    "service_key", "metadata",
)


def _qualified(md: sa.MetaData, name: str) -> str:
    return f"{md.schema}.{name}" if md.schema else name


def _version_column(column: sa.Column, *, key: bool) -> sa.Column:
    """A column of a version table: the live table's name and type, without its constraints."""
    return sa.Column(column.name, column.type, primary_key=key, nullable=not key)


def _validity() -> list[sa.Column]:
    return [
        _ts("valid_from", primary_key=True),
        _ts("valid_to"),
        sa.Column("is_current", sa.Boolean, nullable=False),
        _run_id("run_id", nullable=False),
    ]


def _one_of(column: str, values: Sequence[str], name: str) -> sa.CheckConstraint:
    allowed = ", ".join(f"'{v}'" for v in values)
    return sa.CheckConstraint(f"{column} IN ({allowed})", name=name)


def _card_data_flag() -> list[sa.Column]:
    """Whether card numbers were masked in the order's Salesforce data, and in which fields."""
    return [
        sa.Column("card_data_masked", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
        sa.Column("card_data_masked_fields", json_type()),
    ]


def _address(prefix: str, source: str) -> list[sa.Column]:
    """``<prefix>_street`` ... ``<prefix>_country_code``, lengths of Salesforce's ``<source>*`` fields."""
    return [
        sa.Column(f"{prefix}street", sa.String(COLUMN_LIMITS[f"{source}Street"])),
        sa.Column(f"{prefix}city", sa.String(COLUMN_LIMITS[f"{source}City"])),
        sa.Column(f"{prefix}state", sa.String(COLUMN_LIMITS[f"{source}State"])),
        sa.Column(f"{prefix}postal_code", sa.String(COLUMN_LIMITS[f"{source}PostalCode"])),
        sa.Column(f"{prefix}country", sa.String(COLUMN_LIMITS[f"{source}Country"])),
        sa.Column(f"{prefix}country_code", sa.String(2)),
    ]


# Deterministic constraint and index names (PostgreSQL needs them unique per schema).
_NAMING = {
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}



# ---------------------------------------------------------------------------------------
# Tables, area by area
# ---------------------------------------------------------------------------------------


def _customer_tables(md: sa.MetaData) -> None:
    """Customers (Salesforce Accounts) and their service locations."""
    sa.Table(
        "customers", md,
        sa.Column("customer_id", sa.String(CUSTOMER_ID_LENGTH), primary_key=True),
        _sf_id("sf_account_id", nullable=False, unique=True),
        sa.Column("name", sa.String(COLUMN_LIMITS["Account.Name"])),
        sa.Column("parent_customer_id", sa.String(CUSTOMER_ID_LENGTH), index=True),
        _sf_id("parent_sf_account_id"),
        sa.Column("customer_id_source", sa.String(16), nullable=False),
        sa.Column("is_multi_location", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
        _count("location_count"),
        *_address("billing_", "Billing"),
        _ts("first_imported_at", nullable=False),
        _updated_at(nullable=False),
        sa.Column("content_hash", sa.String(HASH_LENGTH), nullable=False),
    )

    sa.Table(
        "customer_locations", md,
        sa.Column("location_id", sa.String(HASH_LENGTH), primary_key=True),
        sa.Column("customer_id", sa.String(CUSTOMER_ID_LENGTH), nullable=False, index=True),
        _sf_id("sf_account_id", nullable=False),
        *_address("", "Shipping"),
        _ts("first_seen_at", nullable=False),
        _updated_at(),
    )


def _order_tables(md: sa.MetaData) -> None:
    """The imported orders, their order products, the product dimension and the services."""
    sa.Table(
        "external_orders", md,
        _sf_id("sf_order_id", primary_key=True),
        sa.Column("order_number", sa.String(COLUMN_LIMITS["OrderNumber"]), nullable=False, index=True),
        sa.Column("external_name", sa.String(EXTERNAL_NAME_LENGTH), nullable=False),
        sa.Column("salesforce_url", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(CUSTOMER_ID_LENGTH), nullable=False, index=True),
        _sf_id("sf_account_id", nullable=False),
        sa.Column("account_name", sa.String(COLUMN_LIMITS["Account.Name"])),
        sa.Column("sf_status", sa.String(COLUMN_LIMITS["Status"])),
        sa.Column("sf_status_code", sa.String(COLUMN_LIMITS["StatusCode"])),
        sa.Column("order_type", sa.String(COLUMN_LIMITS["Type"])),
        sa.Column("effective_date", sa.Date),
        _ts("activated_at"),
        sa.Column("total_amount", Money()),
        sa.Column("currency", sa.String(COLUMN_LIMITS["CurrencyIsoCode"])),
        # total_amount in the org's corporate currency, and the rate used (see currency_rates)
        sa.Column("corporate_currency", sa.String(COLUMN_LIMITS["CurrencyIsoCode"])),
        sa.Column("conversion_rate", rate_type()),
        sa.Column("corporate_amount", Money()),
        *_address("billing_", "Billing"),
        *_address("service_", "Shipping"),
        sa.Column("service_address_source", sa.String(16), nullable=False),
        sa.Column("location_id", sa.String(HASH_LENGTH)),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("notes", sa.Text),
        sa.Column("po_number", sa.String(COLUMN_LIMITS["PoNumber"])),
        sa.Column("metadata", json_type(), nullable=False),
        sa.Column("is_zero_total", sa.Boolean, nullable=False),
        _ts("sf_created_at"),
        _ts("sf_system_modstamp"),
        # A later version of the order failed validation (see quarantined_orders): this row is the
        # last version that passed, not Salesforce's current one. NULL once a version loads again.
        _ts("newer_version_quarantined_at"),
        *_card_data_flag(),
        sa.Column("content_hash", sa.String(HASH_LENGTH), nullable=False),
        sa.Column("lifecycle_state", sa.String(16), nullable=False, index=True),
        sa.Column("lifecycle_error", sa.Text),
        sa.Column("sf_state", sa.String(16), nullable=False),
        _ts("sf_state_changed_at", nullable=False),
        _ts("first_imported_at", nullable=False),
        _ts("last_imported_at", nullable=False, index=True),
        _run_id("last_run_id", nullable=False),
        _updated_at(index=True),
        sa.Column("end_date", sa.Date),
        _sf_id("contract_id"),
        _sf_id("opportunity_id"),
        _sf_id("owner_id"),
        sa.Column("owner_name", sa.Text),
        _one_of("lifecycle_state", LIFECYCLE_STATES, "lifecycle_state"),
        _one_of("sf_state", SF_STATES, "sf_state"),
    )

    sa.Table(
        "external_order_items", md,
        _sf_id("sf_order_item_id", primary_key=True),
        _sf_id("sf_order_id", sa.ForeignKey("external_orders.sf_order_id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("product_code", sa.String(ITEM_COLUMN_LIMITS["Product2.ProductCode"])),
        sa.Column("product_name", sa.String(ITEM_COLUMN_LIMITS["Product2.Name"])),
        sa.Column("quantity", Money()),
        sa.Column("unit_price", Money()),
        sa.Column("total_price", Money()),
        sa.Column("service_number", sa.String(ITEM_COLUMN_LIMITS["Service_Number__c"])),
        sa.Column("service_key", sa.String(SERVICE_KEY_LENGTH), nullable=False),
        sa.Column("metadata", json_type(), nullable=False),
        _run_id("last_run_id", nullable=False),
        *_soft_delete(),
        _updated_at(),
        sa.Column("list_price", Money()),
        sa.Column("service_date", sa.Date),
        sa.Column("end_date", sa.Date),
        _sf_id("sf_product_id", index=True),
        _sf_id("sf_pricebook_entry_id"),
    )

    # The product dimension: one row per price book entry (and currency: an entry's, which is its
    # orders') the imported order products use, as the last load of such a product found it.
    sa.Table(
        "products", md,
        _sf_id("sf_pricebook_entry_id", primary_key=True),
        sa.Column("currency", sa.String(COLUMN_LIMITS["CurrencyIsoCode"]), primary_key=True),
        _sf_id("sf_product_id", nullable=False, index=True),
        sa.Column("name", sa.String(ITEM_COLUMN_LIMITS["Product2.Name"])),
        sa.Column("product_code", sa.String(ITEM_COLUMN_LIMITS["Product2.ProductCode"])),
        sa.Column("family", sa.String(255)),
        sa.Column("is_active", sa.Boolean),
        sa.Column("list_price", Money()),
        _ts("first_imported_at", nullable=False),
        _updated_at(nullable=False),
    )

    sa.Table(
        "order_services", md,
        sa.Column("service_key", sa.String(SERVICE_KEY_LENGTH), primary_key=True),
        _sf_id("sf_order_id", sa.ForeignKey("external_orders.sf_order_id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("service_number", sa.String(ITEM_COLUMN_LIMITS["Service_Number__c"])),
        sa.Column("item_count", sa.Integer, nullable=False),
        sa.Column("total_amount", Money(), nullable=False),
        sa.Column("location_id", sa.String(HASH_LENGTH)),
        *_soft_delete(),
        _updated_at(),
    )


def _history_tables(md: sa.MetaData) -> None:
    """History mode (config ``history_mode``): every version of an order and of its products, with
    the period it was the warehouse's (valid_from inclusive, valid_to exclusive, NULL: current).
    Their columns are the order tables' own: those are built first."""
    orders, items = md.tables[_qualified(md, "external_orders")], md.tables[_qualified(md, "external_order_items")]
    sa.Table(
        "external_order_versions", md,
        *(_version_column(orders.c[name], key=name == "sf_order_id") for name in VERSIONED_ORDER_COLUMNS),
        *_validity(),
    )
    sa.Table(
        "external_order_item_versions", md,
        *(_version_column(items.c[name], key=name == "sf_order_item_id") for name in VERSIONED_ITEM_COLUMNS),
        *_validity(),
        sa.Index(None, "sf_order_id", "valid_from"),
    )


def _run_tables(md: sa.MetaData) -> None:
    """What each run did: the orders it quarantined or skipped, and its report."""
    sa.Table(
        "quarantined_orders", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id("run_id", nullable=False),
        _sf_id("sf_order_id", nullable=False, index=True),
        # Text, not Salesforce's lengths: an order may be quarantined precisely for a value too long.
        sa.Column("order_number", sa.Text),
        sa.Column("account_name", sa.Text),
        sa.Column("failed_checks", json_type(), nullable=False),
        sa.Column("details", json_type(), nullable=False),
        *_card_data_flag(),
        _ts("quarantined_at", nullable=False),
        _ts("released_at"),
        _updated_at(),
        # (a run that reads the Account changed brings the order in again: extract.changed_accounts)
        _sf_id("sf_account_id", index=True),
        sa.UniqueConstraint("run_id", "sf_order_id"),
    )

    # Orders a run deliberately did not import (zero total under the "skip" policy), one row per
    # order and run, like quarantined_orders: every order left out of the warehouse can be found.
    sa.Table(
        "skipped_orders", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _run_id("run_id", nullable=False),
        _sf_id("sf_order_id", nullable=False, index=True),
        sa.Column("order_number", sa.Text),
        sa.Column("account_name", sa.Text),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("total_amount", Money()),
        sa.Column("currency", sa.String(COLUMN_LIMITS["CurrencyIsoCode"])),
        _ts("sf_system_modstamp"),
        _ts("skipped_at", nullable=False),
        _ts("released_at"),
        _updated_at(),
        sa.UniqueConstraint("run_id", "sf_order_id"),
    )

    sa.Table(
        "import_runs", md,
        _run_id("run_id", primary_key=True),
        _run_id("dag_run_id"),
        sa.Column("run_type", sa.String(32)),
        sa.Column("mode", sa.String(32)),
        _ts("window_start"),
        _ts("window_end"),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("status", sa.String(16), nullable=False),
        *[_count(name) for name in (
            "extracted", "valid", "quarantined", "skipped", "inserted", "updated", "unchanged",
            "written_back", "writeback_failed", "deactivated", "api_calls",
        )],
        sa.Column("duration_seconds", sa.Float),  # from the DAG run's start: retries included
        sa.Column("message", sa.Text),
        _updated_at(),
        sa.Column("failed_stage", sa.String(40)),  # the stage whose last try failed (migration 0010)
        sa.Column("failure_reason", sa.Text),  # its error's first line, card numbers masked
        sa.Column("failed_tries", sa.Integer),  # how often that stage was tried and failed
        _ts("alerted_at"),  # the run's failure alert, recorded whether or not a channel took it
        sa.Column("alert", sa.Text),  # its subject
        sa.Column("alert_sent_to", sa.String(200)),  # "e-mail, Slack", or why it was only logged
        # the org's API usage the run stops short of, set by its extract's first try (migration 0013)
        sa.Column("api_usage_ceiling", sa.Integer),
        _one_of("status", RUN_STATUSES, "status"),
    )


def _writeback_tables(md: sa.MetaData) -> None:
    """The write-back outbox and the shipments it sends."""
    sa.Table(
        "writeback_outbox", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sf_object", sa.String(40), nullable=False),
        _sf_id("sf_record_id"),  # NULL until an upsert by external id has created the record
        _sf_id("sf_order_id", nullable=False, index=True),
        sa.Column("action", sa.String(80), nullable=False),
        sa.Column("shipment_key", sa.String(SHIPMENT_KEY_LENGTH), index=True),  # the shipment a row sends
        sa.Column("external_id_field", sa.String(80)),  # set: the record is upserted by this field
        sa.Column("fields", json_type(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0, server_default="0"),
        _ts("next_attempt_at"),
        sa.Column("last_error_code", sa.String(80)),
        sa.Column("last_error_message", sa.Text),
        _run_id("created_run_id", nullable=False),
        _run_id("updated_run_id", nullable=False),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        sa.Index(None, "state", "next_attempt_at"),
        sa.Index(None, "sf_object", "sf_record_id"),
        _one_of("state", OUTBOX_STATES, "state"),
    )

    # Written by fulfilment systems, analysts or `salesforce-orders-warehouse add-shipment`; read
    # by the shipments DAG (docs/warehouse.md, "Shipments"). Text columns are generous on purpose:
    # a value too long for Salesforce is an invalid shipment with its reason, not a lost row.
    sa.Table(
        "order_shipments", md,
        sa.Column("shipment_key", sa.String(SHIPMENT_KEY_LENGTH), primary_key=True),
        _sf_id("sf_order_id", index=True),
        sa.Column("order_number", sa.Text),
        sa.Column("carrier", sa.Text),
        sa.Column("service", sa.Text),
        sa.Column("tracking_number", sa.Text),
        sa.Column("tracking_url", sa.Text),
        sa.Column("shipped_date", sa.Date),
        sa.Column("state", sa.String(16), nullable=False, default=SHIPMENT_NEW, server_default=SHIPMENT_NEW, index=True),
        sa.Column("errors", json_type()),
        _ts("created_at", nullable=False),
        _ts("checked_at"),
        _ts("queued_at"),
        _one_of("state", SHIPMENT_STATES, "state"),
    )

    sa.Table(
        "order_shipment_lines", md,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "shipment_key", sa.String(SHIPMENT_KEY_LENGTH),
            sa.ForeignKey("order_shipments.shipment_key", ondelete="CASCADE"), nullable=False, index=True,
        ),
        _sf_id("sf_order_item_id"),
        sa.Column("quantity", Money()),
    )


def _reference_tables(md: sa.MetaData) -> None:
    """Currency conversion rates and the import's own key-value state."""
    sa.Table(
        "currency_rates", md,
        sa.Column("source", sa.String(24), primary_key=True),
        sa.Column("iso_code", sa.String(COLUMN_LIMITS["CurrencyIsoCode"]), primary_key=True),
        sa.Column("start_date", sa.Date, primary_key=True),
        sa.Column("next_start_date", sa.Date, nullable=False),
        sa.Column("conversion_rate", rate_type(), nullable=False),
        sa.Column("is_corporate", sa.Boolean, nullable=False),
        _ts("updated_at", nullable=False),
    )

    sa.Table(
        "sync_state", md,
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Text),
        _ts("updated_at", nullable=False),
    )


def _staging_tables(md: sa.MetaData) -> None:
    """A run's staged Salesforce records and transformed batches."""
    sa.Table(
        "stg_orders", md,
        _run_id("run_id", primary_key=True),
        _sf_id("sf_order_id", primary_key=True),
        _ts("system_modstamp"),
        sa.Column("record", sa.JSON, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("failed_checks", sa.JSON(none_as_null=True)),
        _ts("staged_at", nullable=False, index=True),
        _one_of("status", STAGING_STATUSES, "status"),
    )

    sa.Table(
        "stg_order_items", md,
        _run_id("run_id", primary_key=True),
        _sf_id("sf_order_item_id", primary_key=True),
        _sf_id("sf_order_id", nullable=False),
        sa.Column("record", sa.JSON, nullable=False),
        _ts("staged_at", nullable=False, index=True),
        sa.Index(None, "run_id", "sf_order_id"),
    )

    # One row per batch the transform staged, not per order: a single JSON document of some
    # thousand orders is written and read back at a fraction of the per-row cost.
    sa.Table(
        "stg_transformed_batches", md,
        _run_id("run_id", primary_key=True),
        _sf_id("first_order_id", primary_key=True),
        sa.Column("order_count", sa.Integer, nullable=False),
        # The batch's JSON as UTF-8 bytes, which the load decodes itself: a json column made the
        # server parse every batch on its way in and convert it back to text on its way out.
        sa.Column("payload", sa.LargeBinary, nullable=False),
        _ts("staged_at", nullable=False, index=True),
    )


def warehouse_metadata(schema: str | None = None) -> sa.MetaData:
    """A fresh MetaData holding every warehouse table, in ``schema`` (None: the default schema)."""
    if schema is not None:
        validate_identifier(schema)
    md = sa.MetaData(schema=schema, naming_convention=_NAMING)
    _customer_tables(md)
    _order_tables(md)
    _history_tables(md)
    _run_tables(md)
    _writeback_tables(md)
    _reference_tables(md)
    _staging_tables(md)
    return md


@dataclass(frozen=True)
class Tables:
    """Typed access to the warehouse tables of one schema: ``t.customers``, ``t.external_orders``, ..."""

    metadata: sa.MetaData
    customers: sa.Table
    customer_locations: sa.Table
    external_orders: sa.Table
    external_order_items: sa.Table
    order_services: sa.Table
    products: sa.Table
    external_order_versions: sa.Table
    external_order_item_versions: sa.Table
    quarantined_orders: sa.Table
    skipped_orders: sa.Table
    import_runs: sa.Table
    writeback_outbox: sa.Table
    currency_rates: sa.Table
    order_shipments: sa.Table
    order_shipment_lines: sa.Table
    sync_state: sa.Table
    stg_orders: sa.Table
    stg_order_items: sa.Table
    stg_transformed_batches: sa.Table

    @classmethod
    def from_metadata(cls, md: sa.MetaData) -> Tables:
        prefix = f"{md.schema}." if md.schema else ""
        names = [f.name for f in fields(cls) if f.name != "metadata"]
        return cls(metadata=md, **{name: md.tables[prefix + name] for name in names})

    @property
    def staging(self) -> tuple[sa.Table, ...]:
        return (self.stg_orders, self.stg_order_items, self.stg_transformed_batches)


@cache
def tables(schema: str | None = None) -> Tables:
    """The warehouse tables in ``schema``, built once per schema."""
    return Tables.from_metadata(warehouse_metadata(schema))


def create_tables(conn: sa.Connection, t: Tables) -> None:
    """Every table and index of this code's definitions, in a new warehouse."""
    t.metadata.create_all(conn)
    if conn.dialect.name == "postgresql":
        compress_with_lz4(conn, t.stg_transformed_batches.c.payload)


def compress_with_lz4(conn: sa.Connection, column: sa.ColumnClause) -> None:
    """Store the column's large values compressed with lz4 rather than PostgreSQL's default pglz.

    A staged batch is some 7 MB of JSON: pglz took 130 ms to write one, lz4 under 50 ms, and
    compresses it as well. Servers built without lz4 (or before PostgreSQL 14) keep pglz."""
    try:
        with conn.begin_nested():
            if column_compression(conn, column) == "l":
                return
            conn.execute(_SetLz4Compression(column))
    except sa.exc.DBAPIError as exc:
        log.info("%s.%s stays compressed with pglz: %s", column.table.name, column.name, str(exc.orig).strip())


def column_compression(conn: sa.Connection, column: sa.ColumnClause) -> str | None:
    """PostgreSQL's compression method of a column: ``"l"`` (lz4), ``"p"`` (pglz) or None (the default)."""
    attribute = sa.text(
        "SELECT attcompression FROM pg_attribute WHERE attrelid = CAST(:table AS regclass) AND attname = :column"
    )
    table = conn.dialect.identifier_preparer.format_table(column.table)
    return conn.execute(attribute, {"table": table, "column": column.name}).scalar() or None


class _SetLz4Compression(ExecutableDDLElement):
    def __init__(self, column: sa.ColumnClause):
        self.column = column


@compiles(_SetLz4Compression)
def _compile_set_lz4_compression(element: _SetLz4Compression, compiler: Any, **_kw: Any) -> str:
    preparer = compiler.preparer
    return f"ALTER TABLE {preparer.format_table(element.column.table)} ALTER COLUMN {preparer.format_column(element.column)} SET COMPRESSION lz4"



__all__ = [
    "COLUMN_LIMITS",
    "CUSTOMER_ID_LENGTH",
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
    "STAGED",
    "STAGING_STATUSES",
    "VALID",
    "VERSIONED_ITEM_COLUMNS",
    "VERSIONED_ORDER_COLUMNS",
    "Tables",
    "column_compression",
    "compress_with_lz4",
    "create_tables",
    "tables",
    "validate_identifier",
    "warehouse_metadata",
]
