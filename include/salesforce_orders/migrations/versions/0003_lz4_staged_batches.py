"""Staged transformed batches compressed with lz4 on PostgreSQL.

Released at 296dda5. PostgreSQL servers without lz4 (before 14, or built without it) keep
pglz; SQLite has nothing to change.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema
from salesforce_orders.warehouse import compress_with_lz4

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        batches = sa.table("stg_transformed_batches", sa.column("payload"), schema=warehouse_schema())
        compress_with_lz4(conn, batches.c.payload)


def downgrade() -> None:
    irreversible(revision)
