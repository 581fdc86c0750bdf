"""The MySQL engine's pool: a returned connection is rolled back exactly when it holds a
transaction, and pinged before use only once it has sat idle (a lost one is replaced).

Runs against the MySQL/MariaDB at TEST_DATABASE_URL (the MariaDB leg of `make test`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
from sqlalchemy import Engine, create_engine, text

import common.db
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


def test_a_connection_used_a_moment_ago_is_not_pinged(engine: Engine,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pings: list[object] = []
    ping = pymysql.connections.Connection.ping
    monkeypatch.setattr(pymysql.connections.Connection, "ping",
                        lambda self, *a, **k: pings.append(self) or ping(self, *a, **k))
    for n in range(5):
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO pool_probe VALUES (:n)"), {"n": n})
    assert pings == [], "a connection back in the pool a moment ago goes out again unpinged"
    monkeypatch.setattr(common.db, "PING_AFTER", 0.0)  # now every connection has been idle long enough
    with engine.begin() as connection:
        connection.execute(text("SELECT 1"))
    assert len(pings) == 1


def test_a_connection_lost_while_idle_is_replaced(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server drops the pool's idle connection (a restart, a proxy's idle timeout): the next
    use gets a fresh connection instead of failing."""
    assert TEST_DATABASE_URL
    with reading(engine) as connection:
        lost = connection.execute(text("SELECT CONNECTION_ID()")).scalar_one()
    killer = create_engine(TEST_DATABASE_URL)
    with killer.begin() as connection:
        connection.execute(text(f"KILL {int(lost)}"))
    killer.dispose()
    monkeypatch.setattr(common.db, "PING_AFTER", 0.0)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT CONNECTION_ID()")).scalar_one() != lost
