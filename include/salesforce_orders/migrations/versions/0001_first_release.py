"""The warehouse of the first release (845346c), where schema versions start.

Nothing to run. A warehouse is never built by replaying migrations: an empty one is created
whole from the table definitions at the newest version. A warehouse the first release created
(with ``create_all``, no version table) is recognised and stamped here, then migrated.

Revision ID: 0001
Revises:
"""

from salesforce_orders.migrations import has_table, irreversible

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not has_table("external_orders"):
        raise RuntimeError(
            "revision 0001 is the first release's warehouse, not a way to build one: "
            "create warehouses with `salesforce-orders-warehouse upgrade`"
        )


def downgrade() -> None:
    irreversible(revision)
