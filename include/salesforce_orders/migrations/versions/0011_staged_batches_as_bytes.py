"""``stg_transformed_batches.payload`` holds the batch's JSON as UTF-8 bytes (bytea, BLOB), not as
a json column: the server no longer parses every staged batch on its way in and converts it back
to text on its way out (at 100k orders, some 3 s of the warehouse's CPU a run).

Staged batches already there keep their JSON, as bytes. PostgreSQL keeps the column's lz4
compression; SQLite rebuilds the table with the column's new type.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from salesforce_orders.migrations import irreversible, warehouse_schema
from salesforce_orders.warehouse import compress_with_lz4

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    schema = warehouse_schema()
    if conn.dialect.name == "postgresql":
        op.alter_column(
            "stg_transformed_batches", "payload", type_=sa.LargeBinary, existing_nullable=False, schema=schema,
            postgresql_using="convert_to(payload::text, 'UTF8')",
        )
        compress_with_lz4(conn, sa.table("stg_transformed_batches", sa.column("payload"), schema=schema).c.payload)
        return
    with op.batch_alter_table("stg_transformed_batches", schema=schema, recreate="always") as table:
        table.alter_column("payload", type_=sa.LargeBinary, existing_nullable=False)
    batches = sa.table("stg_transformed_batches", sa.column("payload"), schema=schema)
    op.execute(batches.update().values(payload=sa.cast(batches.c.payload, sa.LargeBinary)))


def downgrade() -> None:
    irreversible(revision)
