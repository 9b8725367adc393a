"""Order shipments: the ``order_shipments`` / ``order_shipment_lines`` input tables, and outbox rows
that send a shipment (``shipment_key``) or upsert a record by external id (``external_id_field``,
``sf_record_id`` empty until Salesforce has created the record).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine:
    return sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    schema = warehouse_schema()
    op.create_table(
        "order_shipments",
        sa.Column("shipment_key", sa.String(80), nullable=False),
        sa.Column("sf_order_id", sa.String(18)),
        sa.Column("order_number", sa.Text),
        sa.Column("carrier", sa.Text),
        sa.Column("service", sa.Text),
        sa.Column("tracking_number", sa.Text),
        sa.Column("tracking_url", sa.Text),
        sa.Column("shipped_date", sa.Date),
        sa.Column("state", sa.String(16), nullable=False, server_default="NEW"),
        sa.Column("errors", _json()),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True)),
        sa.Column("queued_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("shipment_key", name=op.f("pk_order_shipments")),
        sa.CheckConstraint("state IN ('NEW', 'INVALID', 'VALID', 'QUEUED')", name=op.f("ck_order_shipments_state")),
        schema=schema,
    )
    op.create_index(op.f("ix_order_shipments_sf_order_id"), "order_shipments", ["sf_order_id"], schema=schema)
    op.create_index(op.f("ix_order_shipments_state"), "order_shipments", ["state"], schema=schema)
    shipments = f"{schema}.order_shipments" if schema else "order_shipments"
    op.create_table(
        "order_shipment_lines",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("shipment_key", sa.String(80), nullable=False),
        sa.Column("sf_order_item_id", sa.String(18)),
        sa.Column("quantity", sa.Numeric(18, 2, asdecimal=False)),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_shipment_lines")),
        sa.ForeignKeyConstraint(
            ["shipment_key"], [f"{shipments}.shipment_key"], ondelete="CASCADE",
            name=op.f("fk_order_shipment_lines_shipment_key_order_shipments"),
        ),
        schema=schema,
    )
    op.create_index(op.f("ix_order_shipment_lines_shipment_key"), "order_shipment_lines", ["shipment_key"], schema=schema)
    op.add_column("writeback_outbox", sa.Column("shipment_key", sa.String(80)), schema=schema)
    op.add_column("writeback_outbox", sa.Column("external_id_field", sa.String(80)), schema=schema)
    op.create_index(op.f("ix_writeback_outbox_shipment_key"), "writeback_outbox", ["shipment_key"], schema=schema)
    # SQLite cannot drop a NOT NULL in place: batch mode rebuilds the table.
    with op.batch_alter_table("writeback_outbox", schema=schema, recreate="auto") as table:
        table.alter_column("sf_record_id", existing_type=sa.String(18), nullable=True)


def downgrade() -> None:
    irreversible(revision)
