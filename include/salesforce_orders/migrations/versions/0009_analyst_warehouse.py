"""The warehouse as analysts read it: ``skipped_orders`` (every order a run deliberately left out);
``updated_at`` on every table analysts read, moved by any change; order products and services that
disappear are soft-deleted (``is_deleted``, ``deleted_at``); the ``products`` dimension, order
products' dates, list price and product, the order's end date, contract, opportunity and owner;
the history mode's ``external_order_versions`` and ``external_order_item_versions``.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = warehouse_schema()
    op.create_table(
        "skipped_orders",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("sf_order_id", sa.String(18), nullable=False),
        sa.Column("order_number", sa.Text),
        sa.Column("account_name", sa.Text),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("total_amount", sa.Numeric(18, 2)),
        sa.Column("currency", sa.String(3)),
        sa.Column("sf_system_modstamp", sa.DateTime(timezone=True)),
        sa.Column("skipped_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True)),
        sa.Column("updated_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skipped_orders")),
        sa.UniqueConstraint("run_id", "sf_order_id", name=op.f("uq_skipped_orders_run_id_sf_order_id")),
        schema=schema,
    )
    op.create_index(op.f("ix_skipped_orders_sf_order_id"), "skipped_orders", ["sf_order_id"], schema=schema)
    _change_tracking(schema)
    _fields_analysts_reach_for(schema)
    _history(schema)


def _updated_at() -> sa.Column:
    return sa.Column("updated_at", sa.DateTime(timezone=True))


def _change_tracking(schema: str | None) -> None:
    """``updated_at`` everywhere, filled from what each row already tells of its last change."""
    for table in ("external_orders", "external_order_items", "order_services", "customer_locations", "quarantined_orders", "import_runs"):
        op.add_column(table, _updated_at(), schema=schema)
    op.create_index(op.f("ix_external_orders_updated_at"), "external_orders", ["updated_at"], schema=schema)
    for table in ("external_order_items", "order_services"):
        op.add_column(table, sa.Column("is_deleted", sa.Boolean, nullable=False, server_default=sa.false()), schema=schema)
        op.add_column(table, sa.Column("deleted_at", sa.DateTime(timezone=True)), schema=schema)

    def table(name: str, *columns: str) -> sa.TableClause:
        return sa.table(name, *(sa.column(c) for c in columns), schema=schema)

    orders = table("external_orders", "sf_order_id", "updated_at", "last_imported_at", "sf_state_changed_at")
    op.execute(sa.update(orders).values(updated_at=sa.case(
        (orders.c.sf_state_changed_at > orders.c.last_imported_at, orders.c.sf_state_changed_at), else_=orders.c.last_imported_at
    )))
    for name in ("external_order_items", "order_services"):
        children = table(name, "sf_order_id", "updated_at")
        op.execute(sa.update(children).values(updated_at=(
            sa.select(orders.c.updated_at).where(orders.c.sf_order_id == children.c.sf_order_id).scalar_subquery()
        )))
    # the later of when the row was made and when it last changed, where the table tells
    for name, first, later in (
        ("customer_locations", "first_seen_at", "first_seen_at"),
        ("quarantined_orders", "quarantined_at", "released_at"),
        ("import_runs", "started_at", "finished_at"),
    ):
        rows = table(name, "updated_at", first, later)
        op.execute(sa.update(rows).values(updated_at=sa.func.coalesce(rows.c[later], rows.c[first])))


def _fields_analysts_reach_for(schema: str | None) -> None:
    op.create_table(
        "products",
        sa.Column("sf_pricebook_entry_id", sa.String(18), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("sf_product_id", sa.String(18), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("product_code", sa.String(255)),
        sa.Column("family", sa.String(255)),
        sa.Column("is_active", sa.Boolean),
        sa.Column("list_price", sa.Numeric(18, 2)),
        sa.Column("first_imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sf_pricebook_entry_id", "currency", name=op.f("pk_products")),
        schema=schema,
    )
    op.create_index(op.f("ix_products_sf_product_id"), "products", ["sf_product_id"], schema=schema)
    for name, column in (
        ("end_date", sa.Date), ("contract_id", sa.String(18)), ("opportunity_id", sa.String(18)),
        ("owner_id", sa.String(18)), ("owner_name", sa.Text),
    ):
        op.add_column("external_orders", sa.Column(name, column), schema=schema)
    for name, column in (
        ("list_price", sa.Numeric(18, 2)), ("service_date", sa.Date), ("end_date", sa.Date),
        ("sf_product_id", sa.String(18)), ("sf_pricebook_entry_id", sa.String(18)),
    ):
        op.add_column("external_order_items", sa.Column(name, column), schema=schema)
    op.create_index(op.f("ix_external_order_items_sf_product_id"), "external_order_items", ["sf_product_id"], schema=schema)


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _ts() -> sa.types.TypeEngine:
    return sa.DateTime(timezone=True)


def _address(prefix: str) -> list[sa.Column]:
    lengths = {"street": 255, "city": 40, "state": 80, "postal_code": 20, "country": 80, "country_code": 2}
    return [sa.Column(f"{prefix}{part}", sa.String(length)) for part, length in lengths.items()]


def _validity() -> list[sa.Column]:
    return [
        sa.Column("valid_from", _ts(), nullable=False),
        sa.Column("valid_to", _ts()),
        sa.Column("is_current", sa.Boolean, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
    ]


def _history(schema: str | None) -> None:
    op.create_table(
        "external_order_versions",
        sa.Column("sf_order_id", sa.String(18), nullable=False),
        sa.Column("order_number", sa.String(30)),
        sa.Column("external_name", sa.String(330)),
        sa.Column("customer_id", sa.String(40)),
        sa.Column("sf_account_id", sa.String(18)),
        sa.Column("account_name", sa.String(255)),
        sa.Column("sf_status", sa.String(40)),
        sa.Column("sf_status_code", sa.String(40)),
        sa.Column("order_type", sa.String(255)),
        sa.Column("effective_date", sa.Date),
        sa.Column("end_date", sa.Date),
        sa.Column("activated_at", _ts()),
        sa.Column("total_amount", sa.Numeric(18, 2)),
        sa.Column("currency", sa.String(3)),
        sa.Column("corporate_currency", sa.String(3)),
        sa.Column("conversion_rate", sa.Numeric(18, 6)),
        sa.Column("corporate_amount", sa.Numeric(18, 2)),
        *_address("billing_"),
        *_address("service_"),
        sa.Column("service_address_source", sa.String(16)),
        sa.Column("location_id", sa.String(64)),
        sa.Column("destination", sa.String(16)),
        sa.Column("notes", sa.Text),
        sa.Column("po_number", sa.String(80)),
        sa.Column("metadata", _json()),
        sa.Column("is_zero_total", sa.Boolean),
        sa.Column("contract_id", sa.String(18)),
        sa.Column("opportunity_id", sa.String(18)),
        sa.Column("owner_id", sa.String(18)),
        sa.Column("owner_name", sa.Text),
        sa.Column("sf_created_at", _ts()),
        sa.Column("sf_system_modstamp", _ts()),
        sa.Column("card_data_masked", sa.Boolean),
        sa.Column("card_data_masked_fields", _json()),
        sa.Column("content_hash", sa.String(64)),
        *_validity(),
        sa.PrimaryKeyConstraint("sf_order_id", "valid_from", name=op.f("pk_external_order_versions")),
        schema=schema,
    )
    op.create_table(
        "external_order_item_versions",
        sa.Column("sf_order_item_id", sa.String(18), nullable=False),
        sa.Column("sf_order_id", sa.String(18)),
        sa.Column("product_code", sa.String(255)),
        sa.Column("product_name", sa.String(255)),
        sa.Column("sf_product_id", sa.String(18)),
        sa.Column("sf_pricebook_entry_id", sa.String(18)),
        sa.Column("quantity", sa.Numeric(18, 2)),
        sa.Column("unit_price", sa.Numeric(18, 2)),
        sa.Column("list_price", sa.Numeric(18, 2)),
        sa.Column("total_price", sa.Numeric(18, 2)),
        sa.Column("service_date", sa.Date),
        sa.Column("end_date", sa.Date),
        sa.Column("service_number", sa.String(40)),
        sa.Column("service_key", sa.String(100)),
        sa.Column("metadata", _json()),
        *_validity(),
        sa.PrimaryKeyConstraint("sf_order_item_id", "valid_from", name=op.f("pk_external_order_item_versions")),
        schema=schema,
    )
    op.create_index(
        op.f("ix_external_order_item_versions_sf_order_id_valid_from"), "external_order_item_versions",
        ["sf_order_id", "valid_from"], schema=schema,
    )


def downgrade() -> None:
    irreversible(revision)
