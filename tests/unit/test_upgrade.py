"""A participant's table made by an older version is completed when the new version starts:
the claim column added, and each value a live row holds claimed by the first such row.

On SQLite, and on MySQL/MariaDB with TEST_DATABASE_URL (a database of its own)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, create_engine, text

from common.schema import create_tables
from participant.records import claim_live_values, records_table
from scripts.stack import database_urls, drop_databases
from tests.support.stacks import TEST_DATABASE_URL

OLDER = [("s1", "ada", "APPLIED"), ("s2", "ada", "APPLIED"), ("s3", "bob", "COMPENSATED"),
         ("s4", "cy", "PENDING"), ("s5", None, "CANCELLED")]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    urls = database_urls(TEST_DATABASE_URL, tmp_path, uuid.uuid4().hex[:8], ("a",))
    engine = create_engine(urls["a"])
    yield engine
    engine.dispose()
    drop_databases(TEST_DATABASE_URL, urls)


def test_an_older_table_gets_its_claims(engine: Engine) -> None:
    with engine.begin() as connection:  # the table as the version before the claim made it
        connection.execute(text("CREATE TABLE table_a (id INTEGER PRIMARY KEY, saga_id VARCHAR(64) NOT NULL, "
                                "username VARCHAR(255), status VARCHAR(16) NOT NULL, "
                                "model VARCHAR(16) NOT NULL DEFAULT 'orchestration', "
                                "created_at DATETIME NOT NULL, updated_at DATETIME NOT NULL)"))
        for n, (saga_id, username, status) in enumerate(OLDER, 1):
            connection.execute(text("INSERT INTO table_a VALUES (:id, :s, :u, :st, 'orchestration', "
                                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                               {"id": n, "s": saga_id, "u": username, "st": status})
    metadata = MetaData()
    table = records_table(metadata, "table_a", "username", unique=True)
    create_tables(engine, metadata, {"table_a.claim": lambda c: claim_live_values(c, table, "username")})
    with engine.connect() as connection:
        claims = dict(connection.execute(text("SELECT saga_id, claim FROM table_a")).all())
    # The first live row of each value claims it; the older version's duplicate claims nothing.
    assert claims == {"s1": "ada", "s2": None, "s3": None, "s4": "cy", "s5": None}
