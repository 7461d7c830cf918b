"""Alembic environment: the URL comes from the Store that runs the migration."""

from alembic import context
from sqlalchemy import engine_from_config, pool

from imsso.store.tables import Base

config = context.config
connectable = config.attributes.get("connection")


def run(connection) -> None:
    context.configure(
        connection=connection, target_metadata=Base.metadata, render_as_batch=connection.dialect.name == "sqlite"
    )
    with context.begin_transaction():
        context.run_migrations()


if connectable is not None:
    run(connectable)
else:
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.", poolclass=pool.NullPool
    )
    with engine.connect() as connection:
        run(connection)
