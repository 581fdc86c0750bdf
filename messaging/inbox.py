"""The idempotent inbox: every event a service receives, once, keyed by its event id.

An event is recorded in the transaction that takes it in (the transport acknowledges after
that commit), and either handled in that same transaction, written handled, or by the worker
later, which marks it handled in the handler's own transaction: an event's effect happens once
however often it is delivered. A handler that fails is tried again later, as the row says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    select,
    update,
)

from common.db import MYSQL_TABLE, Key, Timestamp, insert_ignore, iso, raw_writing, reading, utcnow, writing
from common.prepared import Prepared, Raw
from messaging.events import Envelope

PENDING, HANDLED, DEAD = "PENDING", "HANDLED", "DEAD"


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox", metadata,
        Column("event_id", Key(32), primary_key=True),
        Column("event_type", String(64), nullable=False),
        Column("saga_id", Key(64), nullable=False),
        Column("envelope", Text, nullable=False),
        Column("status", String(8), nullable=False),  # PENDING, HANDLED, DEAD
        Column("attempts", Integer, nullable=False),  # handler attempts made so far
        Column("next_attempt_at", Timestamp, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("received_at", Timestamp, nullable=False),
        Column("handled_at", Timestamp, nullable=True),
        Index("ix_inbox_due", "status", "next_attempt_at"),
        Index("ix_inbox_saga_id", "saga_id", "event_type"),
        **MYSQL_TABLE,
    )


@dataclass(frozen=True)
class InboxRow:
    event_id: str
    envelope: str
    attempts: int
    last_error: str | None
    parsed: Envelope | None = None  # the envelope itself, when it was taken in by this process


class Inbox:
    """Events taken in, each once. A row left for the worker is due `handover` seconds after it
    is written: the worker is handed it in memory once its transaction commits, and the
    worker's scan finds it only if that never happened."""

    def __init__(self, engine: Engine, table: Table, handover: float = 0.0) -> None:
        self.engine = engine
        self.table = table
        self.handover = timedelta(seconds=handover)
        columns = ("event_id", "event_type", "saga_id", "envelope", "status", "attempts", "next_attempt_at",
                   "received_at", "handled_at")
        self._insert = Prepared(engine, insert_ignore(table), columns)
        self._handled = Prepared(engine, update(table).where(table.c.event_id == bindparam("key"),
                                                             table.c.status == PENDING),
                                 ("status", "attempts", "handled_at"))
        self._first_of = Prepared(engine, select(table.c.envelope)
                                  .where(table.c.saga_id == bindparam("saga"),
                                         table.c.event_type == bindparam("kind"))
                                  .order_by(table.c.received_at).limit(1))
        self._mark = update(table).where(table.c.event_id == bindparam("key"))

    def receive(self, envelopes: list[Envelope]) -> list[InboxRow | None]:
        """Record events that arrived, in one transaction; for each, the row to hand the worker
        once it has committed, or None if it had arrived before (a redelivery)."""
        with raw_writing(self.engine) as connection:
            return [self.add(connection, envelope) for envelope in envelopes]

    def add(self, connection: Raw, envelope: Envelope, handled: bool = False) -> InboxRow | None:
        """Record an event in the caller's transaction; its row (to hand the worker once it has
        committed, unless `handled`), or None if it had arrived before. `handled`: the caller
        handles it in this same transaction, as its first attempt, so it is written as
        `Inbox.handled` would mark it, not written and then marked; never hand such a row on."""
        now, text = utcnow(), envelope.dumps()
        new = connection.execute(self._insert, {
            "event_id": envelope.event_id, "event_type": envelope.type, "saga_id": envelope.saga_id,
            "envelope": text, "status": HANDLED if handled else PENDING, "attempts": int(handled),
            "next_attempt_at": now + self.handover, "received_at": now,
            "handled_at": now if handled else None})
        return InboxRow(envelope.event_id, text, 0, None, envelope) if new else None

    def due(self, limit: int = 64) -> list[InboxRow]:
        """Events to handle now, oldest first."""
        t = self.table
        query = (select(t.c.event_id, t.c.envelope, t.c.attempts, t.c.last_error)
                 .where(t.c.status == PENDING, t.c.next_attempt_at <= utcnow())
                 .order_by(t.c.next_attempt_at).limit(limit))
        with reading(self.engine) as connection:
            return [InboxRow(*row) for row in connection.execute(query)]

    def first_of(self, connection: Raw, saga_id: str, event_type: str) -> Envelope | None:
        """The first event of `event_type` this inbox took for the saga, if any."""
        found = connection.first(self._first_of, {"saga": saga_id, "kind": event_type})
        if found is None:
            return None
        return Envelope.stored(found[0])

    def handled(self, connection: Raw, event_id: str, attempts: int) -> bool:
        """Mark the event handled, in the handler's transaction; False if something else did first."""
        return connection.execute(self._handled, {"key": event_id, "status": HANDLED, "attempts": attempts,
                                                  "handled_at": utcnow()}) == 1

    def retry_later(self, event_id: str, attempts: int, error: str, delay: float) -> None:
        with writing(self.engine) as connection:
            connection.execute(self._mark, {"key": event_id, "attempts": attempts, "last_error": error[:2000],
                                            "next_attempt_at": utcnow() + timedelta(seconds=delay)})

    def dead(self, event_id: str, attempts: int, error: str) -> None:
        with writing(self.engine) as connection:
            connection.execute(self._mark, {"key": event_id, "status": DEAD, "attempts": attempts,
                                            "last_error": error[:2000]})

    def dead_letters(self, limit: int = 100) -> list[dict[str, object]]:
        t = self.table
        query = (select(t.c.event_id, t.c.event_type, t.c.saga_id, t.c.attempts, t.c.last_error,
                        t.c.received_at).where(t.c.status == DEAD)
                 .order_by(t.c.received_at.desc()).limit(limit))
        with reading(self.engine) as connection:
            return [{"where": "inbox", "event_id": r.event_id, "type": r.event_type, "saga_id": r.saga_id,
                     "attempts": r.attempts, "error": r.last_error, "at": iso(r.received_at)}
                    for r in connection.execute(query)]

    def redrive(self, event_id: str) -> bool:
        """Handle a dead-lettered event again, with a full set of attempts; False if it is not
        dead-lettered here (idempotent: an event waiting or handled stays as it is)."""
        t = self.table
        with writing(self.engine) as connection:
            return connection.execute(
                update(t).where(t.c.event_id == event_id, t.c.status == DEAD)
                .values(status=PENDING, attempts=0, next_attempt_at=utcnow(), last_error=None)
            ).rowcount == 1
