"""sql/ and the SQLAlchemy tables are one source of truth."""

from __future__ import annotations

import re
import uuid

import pytest
from sqlalchemy import create_engine, inspect, make_url, text

from scripts.schema import PRIVILEGES, SQL, databases, expected_files
from tests.support.stacks import TEST_DATABASE_URL


def test_sql_files_match_the_models() -> None:
    for name, content in expected_files().items():
        path = SQL / name
        assert path.exists(), f"sql/{name} is missing; run `make sql`"
        assert path.read_text() == content, f"sql/{name} disagrees with the models; run `make sql`"
    assert sorted(p.name for p in SQL.iterdir()) == sorted(expected_files())
    assert (SQL / "90_users.sh").stat().st_mode & 0o111, "MySQL's entrypoint runs it: executable"


def test_the_users_script_grants_each_user_its_own_database_only() -> None:
    script = expected_files()["90_users.sh"]
    for user in ("orchestrator", "service_a", "service_b", "service_c"):
        grants = [line for line in script.splitlines() if line.startswith("GRANT") and f"'{user}'" in line]
        assert grants == [f"GRANT {PRIVILEGES} ON {user}.* TO '{user}'@'%';"], grants
    code = [line for line in script.splitlines() if not line.startswith("#")]
    assert not any("ALL PRIVILEGES" in line or "`" in line for line in code), \
        "no backticks outside comments: the shell would run them"


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="loads the DDL into MySQL: runs with TEST_DATABASE_URL")
@pytest.mark.parametrize("file_name", sorted(databases()))
def test_sql_files_load_into_mysql_and_give_the_models_tables(file_name: str) -> None:
    """Run the DDL as MySQL's entrypoint would, then compare with what create_all makes."""
    assert TEST_DATABASE_URL
    database, metadata = databases()[file_name]
    admin = create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    from_sql, from_models = (f"saga_ddl_{uuid.uuid4().hex[:8]}_{kind}" for kind in ("sql", "models"))
    ddl = (SQL / file_name).read_text().replace(f"`{database}`", f"`{from_sql}`")
    engines = []
    try:
        with admin.connect() as connection:
            for statement in re.sub(r"--[^\n]*", "", ddl).split(";"):
                if statement.strip():
                    connection.execute(text(statement))
            connection.execute(text(f"CREATE DATABASE `{from_models}`"))
        engines = [create_engine(make_url(TEST_DATABASE_URL).set(database=name))
                   for name in (from_sql, from_models)]
        metadata.create_all(engines[1])
        for table in metadata.tables:
            described = []
            for engine in engines:
                inspector = inspect(engine)
                described.append((
                    sorted((c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)),
                    sorted((i["name"], tuple(i["column_names"]), bool(i["unique"]))
                           for i in inspector.get_indexes(table)),
                ))
            assert described[0] == described[1], f"{table}: sql/{file_name} and the models differ"
    finally:
        for engine in engines:
            engine.dispose()
        with admin.connect() as connection:
            for name in (from_sql, from_models):
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        admin.dispose()
