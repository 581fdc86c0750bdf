"""The MySQL engine's pool: a returned connection is rolled back exactly when it holds a transaction.

Runs against the MySQL/MariaDB at TEST_DATABASE_URL (the MariaDB leg of `make test`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from common.db import make_engine, reading
from tests.support.stacks import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="MySQL's pool: runs with TEST_DATABASE_URL")


@pytest.fixture
def engine() -> Iterator[Engine]:
    assert TEST_DATABASE_URL
    engine = make_engine(TEST_DATABASE_URL, pool_size=1)  # every checkout: the same connection
    with engine.begin() as connection:
        connection.execute(text("CREATE TEMPORARY TABLE pool_probe (n INT)"))  # this session only
    yield engine
    engine.dispose()


def rollbacks(engine: Engine) -> int:
    """ROLLBACKs the server has run on the pool's one connection (this read adds one as it closes)."""
    with reading(engine) as connection:
        row = connection.execute(text("SHOW SESSION STATUS LIKE 'Com_rollback'")).one()
    return int(row[1])


def test_a_committed_transaction_comes_back_without_a_rollback(engine: Engine) -> None:
    before = rollbacks(engine)
    for n in range(5):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO pool_probe VALUES (:n)"), {"n": n})
    # One ROLLBACK: the one that ended the first read; the five commits were not followed by any.
    assert rollbacks(engine) - before == 1


def test_a_read_is_rolled_back_once(engine: Engine) -> None:
    before = rollbacks(engine)
    for _ in range(3):
        with reading(engine) as connection:
            connection.execute(text("SELECT COUNT(*) FROM pool_probe"))
    assert rollbacks(engine) - before == 4  # one per read, the first count's included


def test_a_connection_returned_inside_a_transaction_is_rolled_back(engine: Engine) -> None:
    raw = engine.raw_connection()  # past the Connection API: nothing ends its transaction
    cursor = raw.cursor()
    cursor.execute("INSERT INTO pool_probe VALUES (42)")
    cursor.close()
    raw.close()  # back to the pool with the insert uncommitted
    with reading(engine) as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM pool_probe WHERE n = 42")).scalar_one() == 0
