"""A participant's table: one row per saga, and the transactions that apply and undo it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    inspect,
    or_,
    select,
    text,
    update,
)

from common.db import MYSQL_TABLE, Key, Timestamp, insert_ignore, raw_writing, reading, utcnow
from common.prepared import Prepared, Raw
from common.status import LIVE, Model, RecordStatus

log = logging.getLogger(__name__)


def records_table(metadata: MetaData, name: str, value_column: str, unique: bool = False) -> Table:
    """The table a service owns, e.g. `table_a` with its `username` column. With `unique`, a live
    row (APPLIED or PENDING) also holds its value in `claim`, under a unique index: another
    saga's row cannot hold the same value until this one is undone (`claim` back to NULL)."""
    return Table(
        name,
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("saga_id", Key(64), nullable=False, unique=True),
        Column(value_column, String(255), nullable=True),  # NULL on a CANCELLED tombstone
        Column("status", String(16), nullable=False, index=True),
        # The saga model that made the row: only that model's calls or events may change it.
        Column("model", String(16), nullable=False, server_default=Model.ORCHESTRATION.value),
        Column("created_at", Timestamp, nullable=False, default=utcnow),
        Column("updated_at", Timestamp, nullable=False, default=utcnow, onupdate=utcnow),
        # Compared byte for byte, as on SQLite: on MySQL's default collation "Ada" would hold "ada".
        *((Column("claim", Key(255), nullable=True),
           Index(f"ux_{name}_claim", "claim", unique=True)) if unique else ()),
        **MYSQL_TABLE,
    )


def mark_choreographed_rows(connection: Connection, table: Table) -> None:
    """Once, when the model column is added to a table an older version made (every row then
    says orchestration): the rows of sagas this service took in as events are choreographed."""
    if "inbox" in inspect(connection).get_table_names():
        connection.execute(text(f"UPDATE {table.name} SET model = :model "  # noqa: S608 - our own name
                                "WHERE saga_id IN (SELECT saga_id FROM inbox)"),
                           {"model": Model.CHOREOGRAPHY.value})


def claim_live_values(connection: Connection, table: Table, value_column: str) -> None:
    """Once, when the claim column is added to a table an older version made: each value a live
    row holds is claimed by the first such row (by id); a later live row with the same value,
    which the older version allowed, is left unclaimed and logged for a person to settle."""
    live = ", ".join(f"'{status.value}'" for status in LIVE)
    firsts = (f"SELECT MIN(id) AS id FROM {table.name} WHERE status IN ({live}) "  # noqa: S608 - our own names
              f"GROUP BY {value_column}")
    connection.execute(text(f"UPDATE {table.name} SET claim = {value_column} "  # noqa: S608
                            f"WHERE id IN (SELECT id FROM ({firsts}) AS firsts)"))
    unclaimed = connection.execute(text(f"SELECT COUNT(*) FROM {table.name} "  # noqa: S608
                                        f"WHERE status IN ({live}) AND claim IS NULL")).scalar_one()
    if unclaimed:
        log.warning("%s: %d live row(s) hold a %s an older live row holds too; they claim nothing",
                    table.name, unclaimed, value_column)


@dataclass(frozen=True)
class Record:
    """One row of a participant's table."""

    id: int
    saga_id: str
    value: str | None
    status: RecordStatus
    model: Model
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Outcome:
    """What one operation on a saga's row came to: the row's status after it, and whether this
    very operation wrote it (applied, undid, or tombstoned it now; not found it so already)."""

    status: RecordStatus
    changed: bool


class Held(Exception):
    """Another saga's live row holds the value: taken for good (APPLIED), or held by a semantic
    lock (PENDING) until that saga completes or is undone."""

    def __init__(self, field: str, value: str, holder: str, status: RecordStatus) -> None:
        self.field, self.value, self.holder, self.status = field, value, holder, status
        self.locked = status is RecordStatus.PENDING
        if self.locked:
            super().__init__(f"{field} {value!r} is held by saga {holder}, still in progress (a "
                             "semantic lock); try again when it has finished")
        else:
            super().__init__(f"{field} {value!r} is taken")


class WrongModel(Exception):
    """The saga's row here belongs to the other saga model, which alone may change it."""

    def __init__(self, saga_id: str, owner: Model) -> None:
        run = "orchestrated" if owner is Model.ORCHESTRATION else "choreographed"
        super().__init__(f"saga {saga_id} is {run} here; only {owner.value} may change its row")
        self.owner = owner


class RecordStore:
    """Applies, compensates and cancels one saga's row; the unique saga_id settles every race.

    Each operation comes twice: on its own (one transaction) and `_in` a transaction the
    caller holds, so that the choreography writes the row, the event it publishes and the
    event it handled in one commit. Every one names the saga model asking (`model`), and
    raises WrongModel for a row the other model made. They are the hot path of every call and
    every event: their statements run on the DB-API connection (`raw_writing`).
    """

    def __init__(self, engine: Engine, table: Table, value_column: str, field: str | None = None) -> None:
        self.engine = engine
        self.table = table
        self.value = table.c[value_column]
        self.field = field or value_column  # how the saga's input names the value
        self.unique = "claim" in table.c
        claim = ("claim",) if self.unique else ()
        # INSERT that does nothing when the saga has a row already (or, unique, another saga's
        # live row holds the value): no error, no rollback.
        self._insert = Prepared(engine, insert_ignore(table), ("saga_id", self.value.key, "status", "model",
                                                              "created_at", "updated_at", *claim))
        self._undo = Prepared(engine, update(table).where(table.c.saga_id == bindparam("key"),
                                                          or_(*(table.c.status == s.value for s in LIVE)),
                                                          table.c.model == bindparam("owner")),
                              ("status", "updated_at", *claim))
        self._confirm = Prepared(engine, update(table).where(table.c.saga_id == bindparam("key"),
                                                             table.c.status == RecordStatus.PENDING.value,
                                                             table.c.model == bindparam("owner")),
                                 ("status", "updated_at"))
        self._current = Prepared(engine, select(table.c.status, table.c.model)
                                 .where(table.c.saga_id == bindparam("key")))
        if self.unique:
            self._holder = Prepared(engine, select(table.c.saga_id, table.c.status)
                                    .where(table.c.claim == bindparam("value")))

    def _insert_unless_present(self, connection: Raw, saga_id: str, value: str | None,
                               status: RecordStatus, model: Model) -> Outcome:
        """Insert the saga's row with `status`; if it has a row already, that row's status; if
        another saga's live row holds the value (a unique table), Held. The insert and the
        unique keys are one atomic step: no window between check and write."""
        for _ in range(10):
            now = utcnow()
            values = {"saga_id": saga_id, self.value.key: value, "status": status.value,
                      "model": model.value, "created_at": now, "updated_at": now}
            if self.unique:
                values["claim"] = value if status in LIVE else None
            if connection.execute(self._insert, values):
                return Outcome(status, True)
            found = self._existing(connection, saga_id, model)
            if found is not None:
                return found
            holder = connection.first(self._holder, {"value": value}) if self.unique else None
            if holder is not None:
                raise Held(self.field, str(value), holder[0], RecordStatus(holder[1]))
            # the holder was undone between the insert and the look: try again
        raise RuntimeError(f"could not insert the row of saga {saga_id} after 10 rounds")

    def apply(self, saga_id: str, value: str, model: Model, pending: bool = False) -> Outcome:
        """Insert the APPLIED row (PENDING, `pending`: a semantic lock until the saga completes);
        if the saga has a row already, that row's status decides.

        A repeat writes nothing, and a tombstone (CANCELLED) or a compensated row keeps a
        late invoke from ever applying. Held if another saga's live row holds the value.
        """
        with raw_writing(self.engine) as connection:
            return self.apply_in(connection, saga_id, value, model, pending)

    def apply_in(self, connection: Raw, saga_id: str, value: str, model: Model,
                 pending: bool = False) -> Outcome:
        status = RecordStatus.PENDING if pending else RecordStatus.APPLIED
        return self._insert_unless_present(connection, saga_id, value, status, model)

    def confirm(self, saga_id: str, model: Model) -> Outcome | None:
        """The saga completed: its PENDING row becomes APPLIED (the semantic lock is released,
        the value stays held for good). Idempotent: an APPLIED row stays as it is. None if the
        saga has no row here (nothing is written)."""
        with raw_writing(self.engine) as connection:
            return self.confirm_in(connection, saga_id, model)

    def confirm_in(self, connection: Raw, saga_id: str, model: Model) -> Outcome | None:
        confirmed = connection.execute(self._confirm, {"key": saga_id, "owner": model.value,
                                                       "status": RecordStatus.APPLIED.value,
                                                       "updated_at": utcnow()})
        if confirmed:
            return Outcome(RecordStatus.APPLIED, True)
        return self._existing(connection, saga_id, model)

    def _existing(self, connection: Raw, saga_id: str, model: Model) -> Outcome | None:
        """The saga's row as it is (this operation wrote nothing), None if it has none here;
        WrongModel if another model made it."""
        row = connection.first(self._current, {"key": saga_id})
        if row is None:
            return None
        status, owner = row
        if owner != model:
            raise WrongModel(saga_id, Model(owner))
        return Outcome(RecordStatus(status), False)

    def compensate(self, saga_id: str, model: Model) -> Outcome:
        """Undo the saga's row, or leave a CANCELLED tombstone if nothing was applied."""
        with raw_writing(self.engine) as connection:
            return self.compensate_in(connection, saga_id, model)

    def compensate_in(self, connection: Raw, saga_id: str, model: Model) -> Outcome:
        for _ in range(10):
            undone = connection.execute(self._undo, {"key": saga_id, "owner": model.value,
                                                     "status": RecordStatus.COMPENSATED.value,
                                                     "updated_at": utcnow(), "claim": None})
            if undone:
                return Outcome(RecordStatus.COMPENSATED, True)
            outcome = self._insert_unless_present(connection, saga_id, None, RecordStatus.CANCELLED, model)
            if outcome.status not in LIVE:
                return outcome  # tombstoned now, or compensated or cancelled before
            # an invoke committed between the update and the insert: go round and undo it
        raise RuntimeError(f"could not settle the row of saga {saga_id} after 10 rounds")

    def cancel(self, saga_id: str, model: Model) -> Outcome:
        """Leave a CANCELLED tombstone unless the saga has a row here; never undoes anything.

        For a step that cannot be compensated (a pivot): the answer says whether it had
        committed (APPLIED or PENDING, left as it is) or is now sure never to (CANCELLED).
        """
        with raw_writing(self.engine) as connection:
            return self.cancel_in(connection, saga_id, model)

    def cancel_in(self, connection: Raw, saga_id: str, model: Model) -> Outcome:
        return self._insert_unless_present(connection, saga_id, None, RecordStatus.CANCELLED, model)

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

    def between(self, after: str, until: str | None, limit: int) -> list[Record]:
        """Rows of saga ids after `after` up to `until` (None: no end), in saga id order (a range
        of the unique index): what the consistency check reads, a page of sagas at a time."""
        t = self.table
        query = select(t).where(t.c.saga_id > after).order_by(t.c.saga_id).limit(limit)
        if until is not None:
            query = query.where(t.c.saga_id <= until)
        with reading(self.engine) as connection:
            return [self._record(row) for row in connection.execute(query)]

    def _record(self, row: Any) -> Record:
        return Record(row.id, row.saga_id, row._mapping[self.value.key], RecordStatus(row.status),
                      Model(row.model), row.created_at, row.updated_at)
