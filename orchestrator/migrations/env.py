"""Alembic's entry point for the saga log's migrations (run by orchestrator.migrate, not by hand)."""

from alembic import context

from orchestrator.store import metadata

config = context.config

if context.is_offline_mode():  # `make sql`: the DDL MySQL runs at its first start
    context.configure(dialect_name="mysql", literal_binds=True, target_metadata=metadata,
                      transactional_ddl=False)
else:
    # render_as_batch: SQLite alters a table by copying it; Alembic's batch mode does that.
    context.configure(connection=config.attributes["connection"], target_metadata=metadata,
                      render_as_batch=True)

with context.begin_transaction():
    context.run_migrations()
