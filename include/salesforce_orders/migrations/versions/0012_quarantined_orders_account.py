"""``quarantined_orders.sf_account_id``: the Account of a quarantined order, so a run that reads the
Account changed in Salesforce (its overlong name shortened, a card number taken out of its customer
id, an ancestor fixed) brings the order in again, as it does for the Accounts of imported orders.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = warehouse_schema()
    op.add_column("quarantined_orders", sa.Column("sf_account_id", sa.String(18)), schema=schema)
    op.create_index("ix_quarantined_orders_sf_account_id", "quarantined_orders", ["sf_account_id"], schema=schema)


def downgrade() -> None:
    irreversible(revision)
