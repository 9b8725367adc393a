"""``import_runs.status`` may be ``disabled``: runs while the import is switched off are recorded as such.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite cannot alter a CHECK constraint: batch mode rebuilds the table with the new one.
    # op.f(): the names are final (the warehouse naming convention would prefix them again).
    with op.batch_alter_table("import_runs", schema=warehouse_schema(), recreate="always") as table:
        table.drop_constraint(op.f("ck_import_runs_status"), type_="check")
        table.create_check_constraint(op.f("ck_import_runs_status"), "status IN ('running', 'success', 'failed', 'disabled')")


def downgrade() -> None:
    irreversible(revision)
