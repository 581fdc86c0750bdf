"""The saga's deadline, watched by the service the sign-up enters at (A).

A keeps each sign-up's deadline beside its own rows. When one passes before the saga closed
here (A saw PaymentRegistered, or undid itself), A publishes SignupTimedOut, once, in the
commit that closes the deadline; the last step then closes the saga and the failure
travels back. Each service also refuses to apply after the deadline on its own, so a late
commit can never slip in after the cancellation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    MetaData,
    Table,
    bindparam,
    insert,
    select,
    update,
)

from common.db import MYSQL_TABLE, Key, Timestamp, iso, reading, utcnow, writing

log = logging.getLogger(__name__)


def deadlines_table(metadata: MetaData) -> Table:
    return Table(
        "saga_deadlines", metadata,
        Column("saga_id", Key(64), primary_key=True),
        Column("deadline", Timestamp, nullable=False),
        Column("closed_at", Timestamp, nullable=True),  # completed, undone, or timed out
        Index("ix_saga_deadlines_open", "closed_at", "deadline"),
        **MYSQL_TABLE,
    )


class Deadlines:
    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table
        self._close = update(table).where(table.c.saga_id == bindparam("key"), table.c.closed_at.is_(None))

    def start(self, connection: Connection, saga_id: str, deadline: datetime) -> None:
        connection.execute(insert(self.table).values(saga_id=saga_id, deadline=deadline))

    def close(self, connection: Connection, saga_id: str) -> bool:
        """Stop the saga's clock, in the caller's transaction; False if it was stopped already."""
        return connection.execute(self._close, {"key": saga_id, "closed_at": utcnow()}).rowcount == 1

    def get(self, saga_id: str) -> dict[str, str | None] | None:
        with reading(self.engine) as connection:
            row = connection.execute(select(self.table).where(self.table.c.saga_id == saga_id)).first()
        return None if row is None else {"saga_id": row.saga_id, "deadline": iso(row.deadline),
                                         "closed_at": iso(row.closed_at)}

    def passed(self, limit: int = 100) -> list[str]:
        """Sagas whose deadline passed while still open here."""
        t = self.table
        query = (select(t.c.saga_id).where(t.c.closed_at.is_(None), t.c.deadline < utcnow())
                 .order_by(t.c.deadline).limit(limit))
        with reading(self.engine) as connection:
            return list(connection.execute(query).scalars())


class DeadlineWatcher:
    """Every `interval` seconds, time out what passed: `time_out(connection, saga_id)` publishes
    the event in the transaction that closes the deadline."""

    def __init__(self, deadlines: Deadlines, time_out: Callable[[Connection, str], None],
                 interval: float) -> None:
        self.deadlines = deadlines
        self.time_out = time_out
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saga-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def scan_once(self) -> int:
        timed_out = 0
        for saga_id in self.deadlines.passed():
            with writing(self.deadlines.engine) as connection:
                if self.deadlines.close(connection, saga_id):
                    self.time_out(connection, saga_id)
                    timed_out += 1
                    log.warning("saga %s: deadline passed; publishing SignupTimedOut", saga_id)
        return timed_out

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive a database hiccup
                log.exception("deadline scan failed; trying again in %s s", self.interval)
