"""``import_runs.api_usage_ceiling``: the org's daily API usage the run stops short of, fixed by its
extract's first try, so a retried task (whose failed try's calls no XCom carries on) keeps to the
run's budget.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("import_runs", sa.Column("api_usage_ceiling", sa.Integer), schema=warehouse_schema())


def downgrade() -> None:
    irreversible(revision)
