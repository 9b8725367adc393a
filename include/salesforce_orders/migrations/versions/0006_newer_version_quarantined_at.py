"""``external_orders.newer_version_quarantined_at``: a later version of the order failed validation,
so the row is the last version that passed, not Salesforce's current one.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "external_orders", sa.Column("newer_version_quarantined_at", sa.DateTime(timezone=True)), schema=warehouse_schema()
    )


def downgrade() -> None:
    irreversible(revision)
