"""``import_runs.failed_stage``, ``failure_reason`` and ``failed_tries``: where and why a run failed,
and how often that stage was tried, so the run's row says it without opening the task log; and
``alerted_at``, ``alert``, ``alert_sent_to``: the failure alert of the run, recorded whether or not
a channel took it.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for column in (
        sa.Column("failed_stage", sa.String(40)),
        sa.Column("failure_reason", sa.Text),
        sa.Column("failed_tries", sa.Integer),
        sa.Column("alerted_at", sa.DateTime(timezone=True)),
        sa.Column("alert", sa.Text),
        sa.Column("alert_sent_to", sa.String(200)),
    ):
        op.add_column("import_runs", column, schema=warehouse_schema())


def downgrade() -> None:
    irreversible(revision)
