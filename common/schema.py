"""The tables at start-up: created, or brought up to what this version declares, one
process at a time (the saga log's changes beyond additions are Alembic's: orchestrator/migrations)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, MetaData, Table, inspect, text

from common.db import make_engine, wait_for_database, writing

SCHEMA_LOCK_WAIT = 60  # seconds a starting process waits for another's schema change
SCHEMA_TIMEOUT = 60.0  # seconds a schema change may take: a busy server builds an index slowly


@contextmanager
def for_schema_changes(engine: Engine) -> Iterator[Engine]:
    """An engine to change the schema with at start-up: on MySQL, one connection with longer
    timeouts than requests get (DDL on a busy server can outlast DB_TIMEOUT); SQLite's own."""
    if engine.dialect.name == "sqlite":
        yield engine
        return
    ddl = make_engine(engine.url.render_as_string(hide_password=False), pool_size=1, timeout=SCHEMA_TIMEOUT)
    try:
        yield ddl
    finally:
        ddl.dispose()


@contextmanager
def schema_lock(connection: Connection) -> Iterator[None]:
    """Changing a schema, one process at a time (two gunicorn workers, or two orchestrators,
    starting at once). On MySQL a named lock of the server, per database (it outlives the
    commits DDL makes); on SQLite the transaction's own write lock does it."""
    if connection.dialect.name not in ("mysql", "mariadb"):
        yield
        return
    name = f"saga_schema_{connection.engine.url.database}"[:64]
    # Asked for a second at a time: one long wait would outlast the connection's read timeout.
    deadline = time.monotonic() + SCHEMA_LOCK_WAIT
    while not connection.scalar(text("SELECT GET_LOCK(:name, 1)"), {"name": name}):
        if time.monotonic() > deadline:
            raise TimeoutError(f"another process held the schema lock {name} for {SCHEMA_LOCK_WAIT} s")
    try:
        yield
    finally:
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})


def add_what_is_missing(connection: Connection, table: Table) -> list[str]:
    """Bring a table an older version made up to `table`: add the columns and indexes it lacks
    (a new column must be nullable or have a server default). Returns the columns added.

    The participants' and the observer's tables only ever grow this way; the saga log, whose
    changes are more than additions, has its Alembic migrations."""
    inspector = inspect(connection)
    if not inspector.has_table(table.name):
        return []
    present = {column["name"] for column in inspector.get_columns(table.name)}
    added = []
    for column in table.columns:
        if column.name in present:
            continue
        kind = column.type.compile(dialect=connection.dialect)
        default = column.server_default.arg if column.server_default is not None else None  # type: ignore[attr-defined]
        connection.exec_driver_sql(
            f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}"
            + (f" NOT NULL DEFAULT '{default}'" if default is not None else " NULL"))
        added.append(column.name)
    indexes = {index["name"] for index in inspector.get_indexes(table.name)}
    for index in table.indexes:
        if index.name not in indexes:
            index.create(connection)
    return added


def create_tables(engine: Engine, metadata: MetaData,
                  when_added: Mapping[str, Callable[[Connection], None]] | None = None) -> None:
    """Create the tables of `metadata` the database lacks and add the columns and indexes the
    others lack, under the schema lock; `when_added` ("table.column" -> what to do) fills in a
    column an older version's rows did not have, once, when it is added."""
    with for_schema_changes(engine) as ddl, writing(ddl) as connection, schema_lock(connection):
        metadata.create_all(connection)
        for table in metadata.sorted_tables:
            for column in add_what_is_missing(connection, table):
                fill = (when_added or {}).get(f"{table.name}.{column}")
                if fill is not None:
                    fill(connection)


def init_database(engine: Engine, metadata: MetaData,
                  when_added: Mapping[str, Callable[[Connection], None]] | None = None,
                  wait_seconds: float = 60) -> None:
    """Wait until the database answers, then create or complete its tables (`create_tables`)."""
    wait_for_database(engine, wait_seconds)
    create_tables(engine, metadata, when_added)
