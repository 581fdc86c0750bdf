"""Bring the saga log's schema up to date with its Alembic migrations (`orchestrator/migrations/`)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text

from common.db import writing
from orchestrator.store import metadata

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of logs created before migrations, by create_all
HEAD = "0003"  # the latest revision (a test checks it is Alembic's head)


def alembic_config(connection: Connection | None = None, output: io.StringIO | None = None) -> Any:
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def current(engine: Engine) -> str | None:
    """The revision the database is at, None if it has none."""
    with writing(engine) as connection:
        if "alembic_version" not in inspect(connection).get_table_names():
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine) -> None:
    """Bring the saga log to the head revision: an empty database gets today's tables at once
    and is stamped head (Alembic's way to build one from scratch); an older one runs the
    migrations it lacks (a log made before migrations is stamped 0001 first). At the head
    already, as at every restart, Alembic is not even imported."""
    if current(engine) == HEAD:
        return
    from alembic import command

    with writing(engine) as connection:
        if not inspect(connection).get_table_names():
            metadata.create_all(connection)
            command.stamp(alembic_config(connection), "head")
            return
    migrate(engine)


def migrate(engine: Engine) -> None:
    """Run every migration the database lacks, one revision after another."""
    from alembic import command

    with writing(engine) as connection:
        mysql = connection.dialect.name in ("mysql", "mariadb")
        if mysql:  # two orchestrators starting at once on a new log: one migrates, one waits
            connection.execute(text("SELECT GET_LOCK('saga_log_migrations', 60)"))
        try:
            config = alembic_config(connection)
            tables = inspect(connection).get_table_names()
            if "sagas" in tables and "alembic_version" not in tables:
                command.stamp(config, BASELINE)
            command.upgrade(config, "head")
        finally:
            if mysql:
                connection.execute(text("SELECT RELEASE_LOCK('saga_log_migrations')"))


def mysql_ddl() -> str:
    """Every migration as the MySQL statements it runs, for sql/ (Alembic's offline mode)."""
    from alembic import command

    output = io.StringIO()
    command.upgrade(alembic_config(output=output), "head", sql=True)
    return output.getvalue()
