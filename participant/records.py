"""A participant's table: one row per saga, and the transactions that apply and undo it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)

from common.db import MYSQL_TABLE, Key, Timestamp, reading, utcnow, writing
from common.status import RecordStatus


def records_table(metadata: MetaData, name: str, value_column: str) -> Table:
    """The table a service owns, e.g. `table_a` with its `username` column."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("saga_id", Key(64), nullable=False, unique=True),
        Column(value_column, String(255), nullable=True),  # NULL on a CANCELLED tombstone
        Column("status", String(16), nullable=False, index=True),
        Column("created_at", Timestamp, nullable=False, default=utcnow),
        Column("updated_at", Timestamp, nullable=False, default=utcnow, onupdate=utcnow),
        **MYSQL_TABLE,
    )


@dataclass(frozen=True)
class Record:
    """One row of a participant's table."""

    id: int
    saga_id: str
    value: str | None
    status: RecordStatus
    created_at: datetime
    updated_at: datetime


class RecordStore:
    """Applies, compensates and cancels one saga's row; the unique saga_id settles every race.

    Each operation comes twice: on its own (one transaction) and `_in` a transaction the
    caller holds, so that the choreography writes the row, the event it publishes and the
    event it handled in one commit.
    """

    def __init__(self, engine: Engine, table: Table, value_column: str) -> None:
        self.engine = engine
        self.table = table
        self.value = table.c[value_column]
        # INSERT that does nothing when the saga has a row already: no error, no rollback.
        self._insert = (insert(table).prefix_with("OR IGNORE", dialect="sqlite")
                        .prefix_with("IGNORE", dialect="mysql").prefix_with("IGNORE", dialect="mariadb"))
        self._undo = (update(table).where(table.c.saga_id == bindparam("key"),
                                          table.c.status == RecordStatus.APPLIED.value))
        self._status = select(table.c.status).where(table.c.saga_id == bindparam("key"))

    def _insert_unless_present(self, connection: Connection, saga_id: str, value: str | None,
                               status: RecordStatus) -> RecordStatus:
        """Insert the saga's row with `status`; if it has a row already, that row's status.
        The insert and the unique key are one atomic step: no window between check and write."""
        now = utcnow()
        inserted = connection.execute(self._insert, {
            "saga_id": saga_id, self.value.key: value, "status": status.value,
            "created_at": now, "updated_at": now}).rowcount
        if inserted:
            return status
        return RecordStatus(connection.execute(self._status, {"key": saga_id}).scalar_one())

    def apply(self, saga_id: str, value: str) -> RecordStatus:
        """Insert the APPLIED row; if the saga has a row already, that row's status decides.

        A repeat writes nothing, and a tombstone (CANCELLED) or a compensated row keeps a
        late invoke from ever applying.
        """
        with writing(self.engine) as connection:
            return self.apply_in(connection, saga_id, value)

    def apply_in(self, connection: Connection, saga_id: str, value: str) -> RecordStatus:
        return self._insert_unless_present(connection, saga_id, value, RecordStatus.APPLIED)

    def compensate(self, saga_id: str) -> RecordStatus:
        """Undo the saga's row, or leave a CANCELLED tombstone if nothing was applied."""
        with writing(self.engine) as connection:
            return self.compensate_in(connection, saga_id)

    def compensate_in(self, connection: Connection, saga_id: str) -> RecordStatus:
        for _ in range(10):
            undone = connection.execute(self._undo, {"key": saga_id, "status": RecordStatus.COMPENSATED.value,
                                                     "updated_at": utcnow()}).rowcount
            if undone:
                return RecordStatus.COMPENSATED
            status = self._insert_unless_present(connection, saga_id, None, RecordStatus.CANCELLED)
            if status is not RecordStatus.APPLIED:
                return status  # tombstoned now, or compensated or cancelled before
            # an invoke committed between the update and the insert: go round and undo it
        raise RuntimeError(f"could not settle the row of saga {saga_id} after 10 rounds")

    def cancel(self, saga_id: str) -> RecordStatus:
        """Leave a CANCELLED tombstone unless the saga has a row here; never undoes anything.

        For a step that cannot be compensated (a pivot): the answer says whether it had
        committed (APPLIED, left as it is) or is now sure never to (CANCELLED).
        """
        with writing(self.engine) as connection:
            return self.cancel_in(connection, saga_id)

    def cancel_in(self, connection: Connection, saga_id: str) -> RecordStatus:
        return self._insert_unless_present(connection, saga_id, None, RecordStatus.CANCELLED)

    def status_in(self, connection: Connection, saga_id: str) -> RecordStatus | None:
        """The saga's row status here, within the caller's transaction; None if there is no row."""
        status = connection.execute(self._status, {"key": saga_id}).scalar_one_or_none()
        return None if status is None else RecordStatus(status)

    def get(self, saga_id: str) -> Record | None:
        """The saga's row, if any."""
        with reading(self.engine) as connection:
            row = connection.execute(
                select(self.table).where(self.table.c.saga_id == saga_id)).first()
        return None if row is None else self._record(row)

    def recent(self, limit: int) -> list[Record]:
        """The newest rows first."""
        with reading(self.engine) as connection:
            rows = connection.execute(
                select(self.table).order_by(self.table.c.id.desc()).limit(limit)).all()
        return [self._record(row) for row in rows]

    def page(self, after_id: int, limit: int) -> list[Record]:
        """Rows with an id above `after_id`, oldest first: for reading the whole table in pages."""
        with reading(self.engine) as connection:
            rows = connection.execute(
                select(self.table).where(self.table.c.id > after_id)
                .order_by(self.table.c.id).limit(limit)).all()
        return [self._record(row) for row in rows]

    def _record(self, row: Any) -> Record:
        return Record(row.id, row.saga_id, row._mapping[self.value.key], RecordStatus(row.status),
                      row.created_at, row.updated_at)
