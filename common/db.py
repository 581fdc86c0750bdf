"""Database engines for every process (SQLite by default, MySQL/MariaDB by URL) and their
transactions: through SQLAlchemy's Connection (`reading`, `writing`), or on the DB-API
connection for `Prepared` statements (`raw_reading`, `raw_writing`). The schema is `common.schema`'s."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pymysql.constants import SERVER_STATUS
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    String,
    Table,
    create_engine,
    event,
    insert,
    make_url,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import PoolResetState
from sqlalchemy.sql.dml import Insert
from tenacity import (
    Retrying,
    before_sleep_log,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
    wait_random,
)

from common.prepared import Raw

log = logging.getLogger(__name__)

# Microsecond precision on MySQL (plain DATETIME there keeps whole seconds only).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Every table on MySQL: transactional, and text in full Unicode whatever the server's default.
MYSQL_TABLE: dict[str, Any] = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4"}


def Key(length: int) -> Any:  # noqa: N802 - a column type, named as SQLAlchemy's are
    """The type of an id or key column: compared byte for byte, as on SQLite (MySQL's default
    collation ignores case, so `ab` and `AB` would be one saga there)."""
    return String(length).with_variant(mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb")


def insert_ignore(table: Table) -> Insert:
    """INSERT that leaves a row already there (same key) as it is, and says so by its row count
    (0): how a row, an inbox entry or an observed event is taken in once, whoever comes first."""
    return (insert(table).prefix_with("OR IGNORE", dialect="sqlite")
            .prefix_with("IGNORE", dialect="mysql").prefix_with("IGNORE", dialect="mariadb"))


def utcnow() -> datetime:
    """The current UTC time, naive, as every table stores it."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(value: datetime | None) -> str | None:
    """A stored UTC timestamp as ISO 8601 with a Z."""
    return None if value is None else value.isoformat(timespec="milliseconds") + "Z"


DEFAULT_TIMEOUT = 2.0
"""Seconds a connect, a read, a write, or a wait for the write lock may take before the
database counts as not answering (a request then gets 503 instead of hanging)."""

_write_gates: weakref.WeakKeyDictionary[Engine, WriteGate] = weakref.WeakKeyDictionary()


class WriteGate:
    """SQLite allows one writer at a time; the threads of a process queue for it here, in
    the order they came, instead of in SQLite's busy handler (which sleeps in growing steps
    and lets later arrivals win, so a few writers wait most of a second)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._guard = threading.Lock()
        self._queue: deque[threading.Event] = deque()
        self._held = False

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._guard:
            turn = None if not self._held and not self._queue else threading.Event()
            if turn is None:
                self._held = True
            else:
                self._queue.append(turn)
        if turn is not None and not turn.wait(self.timeout):
            with self._guard:
                if turn in self._queue:  # gave up before our turn came
                    self._queue.remove(turn)
                    raise PoolTimeout(f"the database's write lock was not free within {self.timeout:g} s")
            # our turn came just as we gave up: take it
        try:
            yield
        finally:
            with self._guard:
                if self._queue:
                    self._queue.popleft().set()  # hand over, still held
                else:
                    self._held = False


def make_engine(url: str, pool_size: int = 40, timeout: float = DEFAULT_TIMEOUT) -> Engine:
    """An engine for `url`: SQLite in WAL mode with a busy timeout, or a pooled MySQL engine,
    each with `timeout` seconds for connecting, reading, writing and waiting for a connection.

    The pool keeps `pool_size` connections open: fewer than the threads that use the
    database at once, and the overflow is opened and closed (a full handshake) per use.
    """
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size // 2, pool_timeout=timeout,
                               connect_args={"timeout": timeout, "check_same_thread": False})
        _configure_sqlite(engine, timeout)
        _write_gates[engine] = WriteGate(timeout)
        return engine
    pymysql = make_url(url).get_driver_name() == "pymysql"
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size // 2,
        pool_timeout=timeout,
        # PyMySQL: `_ping_if_idle` pings a connection idle a while before it is used; other
        # drivers: SQLAlchemy's ping before every use.
        pool_pre_ping=not pymysql,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        # PyMySQL: `_reset_pymysql` resets a returned connection, only when there is work.
        pool_reset_on_return=None if pymysql else "rollback",
        # A server that accepts and never answers must not hang a request.
        connect_args={"connect_timeout": max(1, round(timeout)), "read_timeout": timeout,
                      "write_timeout": timeout} if pymysql else {},
    )
    if pymysql:
        event.listen(engine, "reset", _reset_pymysql)
        event.listen(engine, "checkin", _note_return)
        event.listen(engine, "checkout", _ping_if_idle)
    return engine


PING_AFTER = 1.0
"""Seconds a pooled connection may sit unused before it is pinged on its way out of the pool."""


def _note_return(dbapi_connection: Any, record: Any) -> None:
    if dbapi_connection is not None:  # None: it was invalidated on its way back
        record.info["returned_at"] = time.monotonic()


def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """The pool's check that a connection still works (a server restarted, a proxy that closed
    it), made only when it has sat unused for `PING_AFTER` seconds: a ping before every use is
    one more round trip per transaction, for a connection that answered a moment ago. One that
    fails is thrown away and the pool hands out a fresh one, as `pool_pre_ping` does. (The
    record's `info` is emptied with each new DB-API connection: a fresh one is not pinged.)"""
    returned = record.info.get("returned_at")
    if returned is None or time.monotonic() - returned < PING_AFTER:
        return
    try:
        dbapi_connection.ping(reconnect=False)
    except Exception as error:  # noqa: BLE001 - whatever the cause, the connection is not usable
        raise DisconnectionError(f"pooled connection lost while idle: {error}") from error


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


def _configure_sqlite(engine: Engine, timeout: float) -> None:
    # pysqlite's own transaction handling defers BEGIN and so breaks SQLAlchemy's;
    # we take it over and begin IMMEDIATE, so a writer waits on the busy timeout
    # instead of failing with "database is locked" when it upgrades a read lock.
    path = engine.url.database or ""

    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, record: Any) -> None:
        # SQLite opens a file it may not write read-only, for good: remember it (see below).
        record.info["opened_read_only"] = os.path.exists(path) and not os.access(path, os.W_OK)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={round(timeout * 1000)}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "checkout")
    def on_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        # A connection opened while the file was read-only would fail its first write once the
        # file is writable again: the pool opens a fresh one instead of handing it out.
        if record.info.get("opened_read_only") and os.access(path, os.W_OK):
            raise DisconnectionError("opened while the database file was read-only; it is writable now")

    @event.listens_for(engine, "handle_error")
    def on_error(context: Any) -> None:
        # SQLite opens a file it may not write read-only, and such a connection stays read-only
        # after the file is writable again: throw the pool's connections away, as after a
        # lost connection, so that the next use opens the file afresh.
        if "readonly database" in str(context.original_exception):
            context.is_disconnect = True

    @event.listens_for(engine, "begin")
    def on_begin(connection: Any) -> None:
        # A read takes a WAL snapshot and no lock at all, so readers never queue behind writers.
        read_only = connection.get_execution_options().get("read_only", False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for reads only: on SQLite it takes no write lock (writes: `writing`)."""
    with engine.connect() as connection:
        yield connection.execution_options(read_only=True)


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A transaction that may write, committed when the block ends (rolled back on an error).

    On SQLite the process's writers queue for the database's one write lock first.
    """
    gate = _write_gates.get(engine)
    with gate.held() if gate else nullcontext(), engine.begin() as connection:
        yield connection



@contextmanager
def raw_writing(engine: Engine) -> Iterator[Raw]:
    """A write transaction as `writing` makes one (the write gate, BEGIN IMMEDIATE on SQLite,
    pooled connections, pinged when idle, on MySQL), on the DB-API connection, for `Prepared`
    statements; a driver's error is raised as SQLAlchemy's (an IntegrityError, an
    OperationalError), and a lost connection is thrown away, as SQLAlchemy does."""
    gate = _write_gates.get(engine)
    with gate.held() if gate else nullcontext():
        connection = _checkout(engine)
        cursor = None
        try:
            cursor = connection.cursor()
            if engine.dialect.name == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            yield Raw(cursor)
            connection.commit()
        except engine.dialect.loaded_dbapi.Error as error:
            _rollback(connection)
            if engine.dialect.is_disconnect(error, connection, cursor) or "readonly database" in str(error):
                connection.invalidate(error)
            raise _as_sqlalchemys(engine, error) from error
        except BaseException:
            _rollback(connection)
            raise
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
            connection.close()  # back to the pool


@contextmanager
def raw_reading(engine: Engine) -> Iterator[Raw]:
    """A read on the DB-API connection, for `Prepared` queries (each its own snapshot)."""
    connection = _checkout(engine)
    cursor = connection.cursor()
    try:
        yield Raw(cursor)
    except engine.dialect.loaded_dbapi.Error as error:
        if engine.dialect.is_disconnect(error, connection, cursor):
            connection.invalidate(error)
        raise _as_sqlalchemys(engine, error) from error
    finally:
        with contextlib.suppress(Exception):
            cursor.close()
        connection.close()  # back to the pool, which ends the read's transaction (MySQL)


def _checkout(engine: Engine) -> Any:
    """A DB-API connection from the engine's pool; a driver's error connecting (refused, timed
    out) raised as SQLAlchemy's, as a `Connection` raises it."""
    try:
        return engine.raw_connection()
    except engine.dialect.loaded_dbapi.Error as error:
        raise _as_sqlalchemys(engine, error) from error


def _as_sqlalchemys(engine: Engine, error: Exception) -> StatementError:
    """A driver's error as SQLAlchemy raises it (IntegrityError, OperationalError, ...)."""
    return DBAPIError.instance(None, None, error, engine.dialect.loaded_dbapi.Error)


MYSQL_DEADLOCK = 1213  # ER_LOCK_DEADLOCK: this transaction was rolled back to break a deadlock
DEADLOCK_TRIES = 5


def deadlocked(error: BaseException) -> bool:
    """Was the transaction chosen as a deadlock's victim (MySQL rolled it back whole, and asks
    that it be run again)?"""
    cause = error.orig if isinstance(error, OperationalError) else None
    return cause is not None and bool(cause.args) and cause.args[0] == MYSQL_DEADLOCK


def again_if_deadlocked() -> Retrying:
    """Run a whole transaction again when MySQL chose it as a deadlock's victim (after a pause
    of a few milliseconds, random, so that the two do not meet again), up to DEADLOCK_TRIES
    times: what MySQL asks of a client, for a transaction that may run twice (its writes are
    idempotent, or were rolled back with it)."""
    return Retrying(retry=retry_if_exception(deadlocked), stop=stop_after_attempt(DEADLOCK_TRIES),
                    wait=wait_random(0, 0.02), reraise=True)


def _rollback(connection: Any) -> None:
    with contextlib.suppress(Exception):
        connection.rollback()


def ping(engine: Engine) -> None:
    """Raise if the database does not answer a trivial query."""
    with reading(engine) as connection:
        connection.execute(text("SELECT 1"))


def database_state(engine: Engine) -> str:
    """"ok", or how the database fails, in a word (never its error text): "refused",
    "not_answering", "read_only", "locked" or "unavailable". It must take a write
    transaction, so a read-only or locked SQLite file counts as down."""
    try:
        with writing(engine) as connection:
            connection.execute(text("SELECT 1"))
    except PoolTimeout:
        return "locked"
    except (OperationalError, InterfaceError) as error:
        text_ = str(error.orig if hasattr(error, "orig") else error).lower()
        for words, state in (("timed out", "not_answering"), ("refused", "refused"),
                             ("readonly", "read_only"), ("read-only", "read_only"),
                             ("locked", "locked"), ("lost connection", "not_answering")):
            if words in text_:
                return state
        return "unavailable"
    if engine.dialect.name == "sqlite" and not _sqlite_writable(engine):
        return "read_only"
    return "ok"


def _sqlite_writable(engine: Engine) -> bool:
    """Can this process write the SQLite file and its journal? (An empty transaction writes
    nothing, so the ping above cannot tell a read-only file from a writable one.)"""
    path = engine.url.database
    if not path or path == ":memory:":
        return True
    return all(os.access(f, os.W_OK) for f in (path, f"{path}-wal") if os.path.exists(f))


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
