"""Alembic environment: the engine is handed in by engine.store.migrations."""

from alembic import context

from engine.store.distribute import citus_installed
from engine.store.tables import metadata

config = context.config


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.begin() as connection:
        if citus_installed(connection):
            # A migration mixes DDL and writes in one transaction; Citus runs such a
            # transaction's multi-shard commands over one connection per node only in
            # sequential mode (docs/scaling.md, "Migrations on a cluster").
            connection.exec_driver_sql("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite cannot ALTER most things in place; batch mode copies the table.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


run_migrations_online()
