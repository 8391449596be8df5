"""alembic environment recoverctl uses to run an application's migration scripts.

The application's own env.py is not used: it may read its own settings, open its own
connection or commit per migration. Here recoverctl hands in one connection (online) or a SQL
buffer (offline, for plans), so a whole downgrade is one transaction it controls.
"""

from alembic import context

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        transactional_ddl=True,
        output_buffer=config.attributes.get("output_buffer"),
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    # The caller owns the transaction: alembic must not commit between migrations.
    context.configure(connection=connection, transactional_ddl=True, transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()
