"""Database engines for every process: SQLite by default, MySQL/MariaDB by URL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymysql.constants import SERVER_STATUS
from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, make_url, text
from sqlalchemy.dialects import mysql
from sqlalchemy.pool import PoolResetState
from tenacity import Retrying, before_sleep_log, stop_after_delay, wait_fixed

log = logging.getLogger(__name__)

# Microsecond precision on MySQL (plain DATETIME there keeps whole seconds only).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Every table on MySQL: transactional, and text in full Unicode whatever the server's default.
MYSQL_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def utcnow() -> datetime:
    """The current UTC time, naive, as every table stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """A stored UTC timestamp as ISO 8601 with a Z."""
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


def make_engine(url: str, pool_size: int = 40) -> Engine:
    """An engine for `url`: SQLite in WAL mode with a busy timeout, or a pooled MySQL engine.

    The pool keeps `pool_size` connections open: fewer than the threads that use the
    database at once, and the overflow is opened and closed (a full handshake) per use.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size // 2,
                               connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine)
        return engine
    pymysql = make_url(url).get_driver_name() == "pymysql"
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_pre_ping=True,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        # PyMySQL: `_reset_pymysql` resets a returned connection, only when there is work.
        pool_reset_on_return=None if pymysql else "rollback",
    )
    if pymysql:
        event.listen(engine, "reset", _reset_pymysql)
    return engine


def _reset_pymysql(dbapi_connection: Any, _record: Any, state: PoolResetState) -> None:
    """The pool's reset on return: roll back only if a transaction is still open.

    The pool's default sends a ROLLBACK every time a connection comes back, even after a
    COMMIT, which costs a round trip per transaction. The server reports in every answer
    whether a transaction is open (SERVER_STATUS_IN_TRANS), so we roll back exactly then.
    (An error answer carries no status; but all our work goes through SQLAlchemy's
    Connection, which rolls back itself on an error, so that never leaves a stale one here.)
    """
    if state.transaction_was_reset:  # the Connection rolled back on close already
        return
    if dbapi_connection.server_status & SERVER_STATUS.SERVER_STATUS_IN_TRANS:
        dbapi_connection.rollback()


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and so breaks SQLAlchemy's;
    # we take it over and begin IMMEDIATE, so a writer waits on the busy timeout
    # instead of failing with "database is locked" when it upgrades a read lock.
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # A read takes a WAL snapshot and no lock at all, so readers never queue behind writers.
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only: on SQLite it takes no write lock (writes: `engine.begin()`)."""
    with engine.connect() as connection:
        yield connection.execution_options(read_only=True)


def ping(engine: Engine) -> None:
    """Raise if the database does not answer a trivial query."""
    with reading(engine) as connection:
        connection.execute(text("SELECT 1"))


def wait_for_database(engine: Engine, wait_seconds: float = 60) -> None:
    """Wait until the database answers: at start-up it may still be starting."""
    for attempt in Retrying(
        stop=stop_after_delay(wait_seconds),
        wait=wait_fixed(1),
        before_sleep=before_sleep_log(log, logging.WARNING),
        reraise=True,
    ):
        with attempt:
            ping(engine)


def init_database(engine: Engine, metadata: MetaData, wait_seconds: float = 60) -> None:
    """Wait until the database answers, then create the tables it lacks."""
    wait_for_database(engine, wait_seconds)
    metadata.create_all(engine)
