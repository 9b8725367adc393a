"""``external_orders`` and ``quarantined_orders`` say whether card numbers were masked in the
order's Salesforce data, and in which fields (``card_data_masked``, ``card_data_masked_fields``).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    fields = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
    for table in ("external_orders", "quarantined_orders"):
        op.add_column(table, sa.Column("card_data_masked", sa.Boolean, nullable=False, server_default=sa.false()), schema=warehouse_schema())
        op.add_column(table, sa.Column("card_data_masked_fields", fields), schema=warehouse_schema())


def downgrade() -> None:
    irreversible(revision)
