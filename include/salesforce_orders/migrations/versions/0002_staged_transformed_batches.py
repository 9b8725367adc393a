"""Transformed orders staged one batch per row: ``stg_transformed_batches`` replaces ``stg_transformed``.

Released at 7bdb8f0. Warehouses of the first release that later ran this release's code got
the new table from its ``create_all`` and kept the old one: the table is created only when
missing, and the old one (working rows of finished runs, read by nothing since) is dropped.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import has_table, irreversible, warehouse_schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = warehouse_schema()
    if not has_table("stg_transformed_batches"):
        op.create_table(
            "stg_transformed_batches",
            sa.Column("run_id", sa.String(250), nullable=False),
            sa.Column("first_order_id", sa.String(18), nullable=False),
            sa.Column("order_count", sa.Integer, nullable=False),
            sa.Column("payload", sa.JSON, nullable=False),
            sa.Column("staged_at", sa.DateTime(timezone=True), nullable=False),
            sa.PrimaryKeyConstraint("run_id", "first_order_id", name="pk_stg_transformed_batches"),
            schema=schema,
        )
        op.create_index(
            "ix_stg_transformed_batches_staged_at", "stg_transformed_batches", ["staged_at"], schema=schema
        )
    if has_table("stg_transformed"):
        op.drop_table("stg_transformed", schema=schema)


def downgrade() -> None:
    irreversible(revision)
