"""A participant's table: one row per saga, and the transactions that apply and undo it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from common.db import Timestamp, iso, reading, utcnow
from common.status import RecordStatus


def records_table(metadata: MetaData, name: str, value_column: str) -> Table:
    """The table a service owns, e.g. `table_a` with its `username` column."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("saga_id", String(64), nullable=False, unique=True),
        Column(value_column, String(255), nullable=True),  # NULL on a CANCELLED tombstone
        Column("status", String(16), nullable=False, index=True),
        Column("created_at", Timestamp, nullable=False, default=utcnow),
        Column("updated_at", Timestamp, nullable=False, default=utcnow, onupdate=utcnow),
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

    def as_json(self, value_column: str) -> dict[str, Any]:
        return {"id": self.id, "saga_id": self.saga_id, value_column: self.value, "status": self.status.value,
                "created_at": iso(self.created_at), "updated_at": iso(self.updated_at)}


class RecordStore:
    """Applies and compensates one saga's row; the unique saga_id settles every race."""

    def __init__(self, engine: Engine, table: Table, value_column: str) -> None:
        self.engine = engine
        self.table = table
        self.value = table.c[value_column]

    def apply(self, saga_id: str, value: str) -> RecordStatus:
        """Insert the APPLIED row; if the saga has a row already, that row's status decides.

        A repeat writes nothing, and a tombstone (CANCELLED) or a compensated row keeps a
        late invoke from ever applying: the insert and the unique key are one atomic step.
        """
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(self.table).values(
                    saga_id=saga_id, **{self.value.key: value}, status=RecordStatus.APPLIED.value))
            return RecordStatus.APPLIED
        except IntegrityError:
            existing = self.get(saga_id)
            assert existing is not None, "a unique-key clash means the row exists"
            return existing.status

    def compensate(self, saga_id: str) -> RecordStatus:
        """Undo the saga's row, or leave a CANCELLED tombstone if nothing was applied."""
        for _ in range(10):
            with self.engine.begin() as connection:
                undone = connection.execute(
                    update(self.table)
                    .where(self.table.c.saga_id == saga_id,
                           self.table.c.status == RecordStatus.APPLIED.value)
                    .values(status=RecordStatus.COMPENSATED.value, updated_at=utcnow())
                ).rowcount
            if undone:
                return RecordStatus.COMPENSATED
            existing = self.get(saga_id)
            if existing is not None and existing.status is not RecordStatus.APPLIED:
                return existing.status  # compensated or cancelled before: nothing to do
            if existing is None:
                try:
                    with self.engine.begin() as connection:
                        connection.execute(insert(self.table).values(
                            saga_id=saga_id, status=RecordStatus.CANCELLED.value))
                    return RecordStatus.CANCELLED
                except IntegrityError:
                    pass  # an invoke committed in between: go round and undo it
        raise RuntimeError(f"could not settle the row of saga {saga_id} after 10 rounds")

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
