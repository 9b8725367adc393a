"""Alembic's environment for the warehouse.

Never run from an ``alembic.ini``: ``salesforce_orders.schema_versions`` runs it in-process on a
connection it has opened, locked and will commit itself, and passes that connection and the
warehouse schema in the config's attributes.
"""

from alembic import context

from salesforce_orders.schema_versions import VERSION_TABLE
from salesforce_orders.warehouse.definitions import tables

connection = context.config.attributes["connection"]
schema = context.config.attributes["schema"]

context.configure(
    connection=connection,
    target_metadata=tables(schema).metadata,
    version_table=VERSION_TABLE,
    version_table_schema=schema,
    # SQLite alters most things by copying the table: Alembic's batch mode does that.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():  # the caller's transaction: nothing is committed here
    context.run_migrations()
