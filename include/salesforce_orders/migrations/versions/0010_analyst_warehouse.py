"""The warehouse as analysts read it: ``skipped_orders`` (every order a run deliberately left out).

Revision ID: 0010
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0010"
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
        sa.PrimaryKeyConstraint("id", name=op.f("pk_skipped_orders")),
        sa.UniqueConstraint("run_id", "sf_order_id", name=op.f("uq_skipped_orders_run_id_sf_order_id")),
        schema=schema,
    )
    op.create_index(op.f("ix_skipped_orders_sf_order_id"), "skipped_orders", ["sf_order_id"], schema=schema)


def downgrade() -> None:
    irreversible(revision)
