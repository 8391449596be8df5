"""Alembic environment for the catalog; always called with a connection from Catalog.migrate()."""

from alembic import context

from recoverctl.catalog.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("catalog migrations run through 'recoverctl catalog migrate'")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
