"""Bring the saga log's schema up to date with its Alembic migrations (`orchestrator/migrations/`)."""

from __future__ import annotations

import io
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, inspect, text

from common.db import writing

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BASELINE = "0001"  # the schema of logs created before migrations, by create_all


def alembic_config(connection: Connection | None = None, output: io.StringIO | None = None) -> Config:
    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Run every migration the database lacks; a log made before migrations is stamped first."""
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
    output = io.StringIO()
    command.upgrade(alembic_config(output=output), "head", sql=True)
    return output.getvalue()
