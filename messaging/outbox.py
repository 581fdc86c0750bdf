"""The transactional outbox: an event is written in the same commit as the change it reports,
and a relay publishes it afterwards, marking what its destination confirmed."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
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

from common.db import MYSQL_TABLE, Key, Timestamp, iso, raw_writing, reading, utcnow, writing
from common.prepared import Prepared, PreparedIn, Raw
from messaging.events import Envelope

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
    """One event waiting for one destination (a row is its event id and destination)."""

    destination: str
    event_id: str
    envelope: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """What became of one row's delivery, for `settle`."""

    row: OutboxRow
    sent: bool
    dead: bool = False
    error: str | None = None
    retry_in: float = 0.0  # seconds until the next attempt, for a row neither sent nor dead


class Outbox:
    """Writes events inside a caller's transaction; the relay reads and marks them.

    A row is written due `handover` seconds after its commit: the relay is handed it in memory
    the moment the transaction commits, and sends it at once; only if that never happens (the
    process died first) does the relay's scan of the table find it, once it falls due."""

    def __init__(self, engine: Engine, table: Table, handover: float = 5.0) -> None:
        self.engine = engine
        self.table = table
        self.handover = timedelta(seconds=handover)
        t = table
        self._insert = Prepared(engine, insert(t), ("event_id", "destination", "event_type", "saga_id",
                                                    "envelope", "status", "attempts", "next_attempt_at",
                                                    "created_at"))
        # A batch's rows marked sent in one statement (not one a row: a round trip each on MySQL).
        self._sent = PreparedIn(engine, lambda ids: update(t).where(
            t.c.destination == bindparam("sent_to"), t.c.event_id.in_(ids), t.c.status == PENDING),
            ("status", "sent_at", "last_error"))
        # A failed attempt counts only on a row still waiting: another lane may have sent the
        # same row meanwhile (a handed row its scan found too), and its SENT stands.
        self._mark = Prepared(engine, update(t).where(t.c.destination == bindparam("row_destination"),
                                                      t.c.event_id == bindparam("row_event_id"),
                                                      t.c.status == PENDING),
                              ("status", "attempts", "last_error", "next_attempt_at"))
        self._redrive_saga = Prepared(engine, update(t).where(t.c.saga_id == bindparam("saga"),
                                                              t.c.status == DEAD),
                                      ("status", "attempts", "next_attempt_at"))

    def add(self, connection: Raw, envelope: Envelope, destinations: Iterable[str]) -> list[OutboxRow]:
        """Queue `envelope` for each destination, in the caller's transaction; the rows to hand
        the relay once it commits."""
        now, text = utcnow(), envelope.dumps()
        rows: list[dict[str, Any]] = [
            {"event_id": envelope.event_id, "destination": destination, "event_type": envelope.type,
             "saga_id": envelope.saga_id, "envelope": text, "status": PENDING, "attempts": 0,
             "next_attempt_at": now + self.handover, "created_at": now} for destination in destinations]
        if rows:
            connection.execute_many(self._insert, rows)
        return [OutboxRow(row["destination"], envelope.event_id, text, 0) for row in rows]

    def due(self, destination: str, limit: int = 100, lane: tuple[int, int] = (0, 1)) -> list[OutboxRow]:
        """Events waiting to be published to `destination` now, oldest first; `lane` (k, n): only
        the rows whose id is k modulo n."""
        t = self.table
        query = (select(t.c.destination, t.c.event_id, t.c.envelope, t.c.attempts)
                 .where(t.c.destination == destination, t.c.status == PENDING,
                        t.c.next_attempt_at <= utcnow())
                 .order_by(t.c.next_attempt_at).limit(limit))
        if lane[1] > 1:
            query = query.where(t.c.id % lane[1] == lane[0])
        with reading(self.engine) as connection:
            return [OutboxRow(*row) for row in connection.execute(query)]

    def settle(self, outcomes: list[Outcome]) -> None:
        """Record what came of a batch of deliveries, in one transaction: the rows sent, the rows
        to try again later, and the rows dead-lettered."""
        now = utcnow()
        sent: dict[str, list[str]] = {}  # destination -> the event ids it confirmed
        for outcome in outcomes:
            if outcome.sent:
                sent.setdefault(outcome.row.destination, []).append(outcome.row.event_id)
        marks = [{"row_destination": o.row.destination, "row_event_id": o.row.event_id,
                  "status": DEAD if o.dead else PENDING, "attempts": o.row.attempts + 1,
                  "last_error": (o.error or "")[:2000],
                  "next_attempt_at": now + timedelta(seconds=o.retry_in)}
                 for o in outcomes if not o.sent]
        with raw_writing(self.engine) as connection:
            for destination, event_ids in sent.items():
                connection.execute_in(self._sent, event_ids, {"sent_to": destination, "status": SENT,
                                                              "sent_at": now, "last_error": None})
            if marks:
                connection.execute_many(self._mark, marks)

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

    def redrive_saga(self, connection: Raw, saga_id: str) -> int:
        """Send again, in the caller's transaction, every event of the saga that was dead-lettered here."""
        return connection.execute(self._redrive_saga, {"saga": saga_id, "status": PENDING, "attempts": 0,
                                                       "next_attempt_at": utcnow()})

    def knows(self, event_id: str) -> bool:
        """Did this service publish the event (is it in its outbox)?"""
        with reading(self.engine) as connection:
            return connection.execute(select(self.table.c.id).where(self.table.c.event_id == event_id)
                                      .limit(1)).first() is not None
