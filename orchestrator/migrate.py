"""Bring the saga log's schema up to date with its Alembic migrations (`orchestrator/migrations/`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text

from common.db import writing
from common.schema import for_schema_changes, schema_lock
from orchestrator.store import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of logs created before migrations, by create_all
HEAD = "0006"  # the latest revision (a test checks it is Alembic's head)


def alembic_config(connection: Connection | None = None, output: io.StringIO | None = None) -> Any:
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _version(connection: Connection) -> str | None:
    if "alembic_version" not in inspect(connection).get_table_names():
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine) -> None:
    """Bring the saga log to the head revision: an empty database gets today's tables at once
    and is stamped head (Alembic's way to build one from scratch); an older one runs the
    migrations it lacks (a log made before migrations is stamped 0001 first). At the head
    already, as at every restart, Alembic is not even imported."""
    _bring_up(engine, from_scratch=True)


def migrate(engine: Engine) -> None:
    """Run every migration the database lacks, one revision after another (what an old log
    goes through; the tests check that the result is what `upgrade` builds at once)."""
    _bring_up(engine, from_scratch=False)


def _bring_up(engine: Engine, from_scratch: bool) -> None:
    with for_schema_changes(engine) as ddl, writing(ddl) as connection, schema_lock(connection):
        if _version(connection) == HEAD:
            return
        from alembic import command

        config = alembic_config(connection)
        tables = inspect(connection).get_table_names()
        if from_scratch and not tables:
            metadata.create_all(connection)
            command.stamp(config, "head")
            return
        if "sagas" in tables and "alembic_version" not in tables:
            command.stamp(config, BASELINE)
        command.upgrade(config, "head")


def mysql_ddl() -> str:
    """Every migration as the MySQL statements it runs, for sql/ (Alembic's offline mode)."""
    from alembic import command

    output = io.StringIO()
    command.upgrade(alembic_config(output=output), "head", sql=True)
    return output.getvalue()
