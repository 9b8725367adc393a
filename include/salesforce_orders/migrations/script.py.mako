"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "${up_revision}"
down_revision = "${down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema = warehouse_schema()
    raise NotImplementedError("write the migration: see migrations/README.md")


def downgrade() -> None:
    irreversible(revision)
