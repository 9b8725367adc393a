"""Amounts in the corporate currency: the org's rates in ``currency_rates``; each order's converted
total and the rate used (``corporate_currency``, ``conversion_rate``, ``corporate_amount``).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = warehouse_schema()
    op.create_table(
        "currency_rates",
        sa.Column("source", sa.String(24), nullable=False),
        sa.Column("iso_code", sa.String(3), nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("next_start_date", sa.Date, nullable=False),
        sa.Column("conversion_rate", sa.Numeric(18, 6), nullable=False),
        sa.Column("is_corporate", sa.Boolean, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source", "iso_code", "start_date", name=op.f("pk_currency_rates")),
        schema=schema,
    )
    op.add_column("external_orders", sa.Column("corporate_currency", sa.String(3)), schema=schema)
    op.add_column("external_orders", sa.Column("conversion_rate", sa.Numeric(18, 6)), schema=schema)
    op.add_column("external_orders", sa.Column("corporate_amount", sa.Numeric(18, 2)), schema=schema)


def downgrade() -> None:
    irreversible(revision)
