"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import has_column, irreversible, warehouse_schema

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    schema = warehouse_schema()
    ${upgrades if upgrades else "raise NotImplementedError('write the migration: see migrations/README.md')"}


def downgrade() -> None:
    irreversible(revision)
