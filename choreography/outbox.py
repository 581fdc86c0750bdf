"""The transactional outbox: an event is written in the same commit as the change it reports,
and a relay publishes it afterwards, marking what its destination confirmed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    insert,
    select,
    update,
)

from choreography.events import Envelope
from common.db import MYSQL_TABLE, Key, Timestamp, iso, reading, utcnow, writing

PENDING, SENT, DEAD = "PENDING", "SENT", "DEAD"


def outbox_table(metadata: MetaData) -> Table:
    """One row per event and destination, so each destination's delivery stands alone."""
    return Table(
        "outbox", metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
        Column("event_id", Key(32), nullable=False),
        Column("destination", String(32), nullable=False),  # a service, "observer", or "broker"
        Column("event_type", String(64), nullable=False),
        Column("saga_id", Key(64), nullable=False),
        Column("envelope", Text, nullable=False),
        Column("status", String(8), nullable=False),  # PENDING, SENT, DEAD
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", Timestamp, nullable=False),
        Column("last_error", Text, nullable=True),
        Column("created_at", Timestamp, nullable=False),
        Column("sent_at", Timestamp, nullable=True),
        UniqueConstraint("event_id", "destination", name="uq_outbox_event_destination"),
        Index("ix_outbox_due", "destination", "status", "next_attempt_at"),
        **MYSQL_TABLE,
    )


@dataclass(frozen=True)
class OutboxRow:
    id: int
    destination: str
    envelope: str
    attempts: int


class Outbox:
    """Writes events inside a caller's transaction; the relay reads and marks them."""

    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table
        self._mark = update(table).where(table.c.id == bindparam("row_id"))

    def add(self, connection: Connection, envelope: Envelope, destinations: Iterable[str]) -> None:
        """Queue `envelope` for each destination, in the caller's transaction."""
        now, text = utcnow(), envelope.dumps()
        rows = [{"event_id": envelope.event_id, "destination": destination, "event_type": envelope.type,
                 "saga_id": envelope.saga_id, "envelope": text, "status": PENDING, "attempts": 0,
                 "next_attempt_at": now, "created_at": now} for destination in destinations]
        if rows:
            connection.execute(insert(self.table), rows)

    def due(self, destination: str, limit: int = 100, lane: tuple[int, int] = (0, 1)) -> list[OutboxRow]:
        """Events waiting to be published to `destination` now, oldest first; `lane` (k, n): only
        the rows whose id is k modulo n."""
        t = self.table
        query = (select(t.c.id, t.c.destination, t.c.envelope, t.c.attempts)
                 .where(t.c.destination == destination, t.c.status == PENDING,
                        t.c.next_attempt_at <= utcnow())
                 .order_by(t.c.next_attempt_at).limit(limit))
        if lane[1] > 1:
            query = query.where(t.c.id % lane[1] == lane[0])
        with reading(self.engine) as connection:
            return [OutboxRow(*row) for row in connection.execute(query)]

    def sent(self, row_id: int) -> None:
        self._set(row_id, status=SENT, sent_at=utcnow(), last_error=None)

    def retry_later(self, row_id: int, attempts: int, error: str, delay: float) -> None:
        self._set(row_id, attempts=attempts, last_error=error[:2000],
                  next_attempt_at=utcnow() + timedelta(seconds=delay))

    def dead(self, row_id: int, attempts: int, error: str) -> None:
        self._set(row_id, status=DEAD, attempts=attempts, last_error=error[:2000])

    def _set(self, row_id: int, **values: object) -> None:
        with writing(self.engine) as connection:
            connection.execute(self._mark, {"row_id": row_id, **values})

    def dead_letters(self, limit: int = 100) -> list[dict[str, object]]:
        """Events that could not be delivered, newest first."""
        t = self.table
        query = (select(t.c.event_id, t.c.event_type, t.c.saga_id, t.c.destination, t.c.attempts,
                        t.c.last_error, t.c.created_at).where(t.c.status == DEAD)
                 .order_by(t.c.id.desc()).limit(limit))
        with reading(self.engine) as connection:
            return [{"where": "outbox", "event_id": r.event_id, "type": r.event_type, "saga_id": r.saga_id,
                     "destination": r.destination, "attempts": r.attempts, "error": r.last_error,
                     "at": iso(r.created_at)} for r in connection.execute(query)]

    def redrive(self, event_id: str, delivered_too: bool = False) -> int:
        """Send a dead-lettered event again, to each destination it could not reach (and, with
        `delivered_too`, to those that took it: the broker, when a consumer refused what it
        delivered); how many rows will go again. Idempotent: a row waiting to go stays as it is."""
        t = self.table
        statuses = [DEAD, SENT] if delivered_too else [DEAD]
        with writing(self.engine) as connection:
            return int(connection.execute(
                update(t).where(t.c.event_id == event_id, t.c.status.in_(statuses))
                .values(status=PENDING, attempts=0, next_attempt_at=utcnow(), sent_at=None)).rowcount)

    def redrive_saga(self, connection: Connection, saga_id: str) -> int:
        """Send again, in the caller's transaction, every event of the saga that was dead-lettered here."""
        t = self.table
        return int(connection.execute(
            update(t).where(t.c.saga_id == saga_id, t.c.status == DEAD)
            .values(status=PENDING, attempts=0, next_attempt_at=utcnow())).rowcount)

    def knows(self, event_id: str) -> bool:
        """Did this service publish the event (is it in its outbox)?"""
        with reading(self.engine) as connection:
            return connection.execute(select(self.table.c.id).where(self.table.c.event_id == event_id)
                                      .limit(1)).first() is not None
