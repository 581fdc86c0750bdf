"""The saga log's migrations build exactly the tables the code uses, from nothing or from an old log."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, make_url, text

from common.db import make_engine
from orchestrator.migrate import HEAD, migrate, upgrade
from orchestrator.store import metadata
from tests.support.stacks import TEST_DATABASE_URL


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[Engine]:
    """An empty database: a SQLite file, or a fresh MySQL database with TEST_DATABASE_URL."""
    if TEST_DATABASE_URL is None:
        engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
        yield engine
        engine.dispose()
        return
    name = f"saga_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE `{name}`"))
    engine = make_engine(make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE `{name}`"))
    admin.dispose()


def differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


def test_the_migrations_build_the_tables_the_code_uses(empty: Engine) -> None:
    migrate(empty)  # revision after revision, as an old log goes
    assert differences(empty) == []
    upgrade(empty)  # and at the head nothing more happens
    assert differences(empty) == []


def test_a_new_log_is_built_at_once_and_stamped_head(empty: Engine) -> None:
    upgrade(empty)
    assert differences(empty) == []
    with empty.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == HEAD


def test_a_log_made_before_migrations_is_taken_up_and_its_sagas_ran_signup_1(empty: Engine) -> None:
    """A log created by create_all before migrations (revision 0001's tables, no version table)."""
    from alembic import command

    from orchestrator.migrate import alembic_config

    with empty.begin() as connection:  # build 0001 as the old code did, then forget the version
        command.upgrade(alembic_config(connection), "0001")
        connection.execute(text("DROP TABLE alembic_version"))
        connection.execute(text(
            "INSERT INTO sagas (id, status, input, faults, current_step, compensation_rounds, "
            "created_at, updated_at) VALUES ('old', 'RUNNING', '{}', '{}', 1, 0, "
            "'2026-01-01 00:00:00', '2026-01-01 00:00:00')"))
    upgrade(empty)
    assert differences(empty) == []
    assert "alembic_version" in inspect(empty).get_table_names()
    with empty.connect() as connection:
        assert connection.execute(text(
            "SELECT definition_name, definition_version FROM sagas WHERE id = 'old'")).one() == ("signup", 1)


def test_head_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    from orchestrator.migrate import HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD
