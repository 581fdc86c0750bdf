"""The saga's deadline, watched by the service the sign-up enters at (A).

A keeps each sign-up's deadline beside its own rows. When one passes before the saga closed
here (A saw PaymentRegistered, or undid itself), A publishes SignupTimedOut, once, in the
commit that records the time-out; the last step then closes the saga and the failure
travels back. Each service also refuses to apply after the deadline on its own, so a late
commit can never slip in after the cancellation.

A saga that has still not closed here `stuck_after` seconds after its deadline is stuck
(an event it needed was dead-lettered, say): A publishes SignupTimedOut for it again, every
`stuck_after` seconds, until it closes (the receivers are idempotent), and the consistency
check lists it as needing attention.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import (
    Column,
    Engine,
    Index,
    MetaData,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)

from common.db import MYSQL_TABLE, Key, Timestamp, iso, reading, utcnow
from common.errors import DATABASE_ERRORS
from common.prepared import Prepared, Raw

log = logging.getLogger(__name__)


def deadlines_table(metadata: MetaData) -> Table:
    return Table(
        "saga_deadlines", metadata,
        Column("saga_id", Key(64), primary_key=True),
        Column("deadline", Timestamp, nullable=False),
        Column("closed_at", Timestamp, nullable=True),  # the saga ended here: completed, or undone
        Column("timed_out_at", Timestamp, nullable=True),  # SignupTimedOut published
        Column("nudged_at", Timestamp, nullable=True),  # published again, for a saga stuck since
        Index("ix_saga_deadlines_open", "closed_at", "deadline"),
        **MYSQL_TABLE,
    )


class Deadlines:
    def __init__(self, engine: Engine, table: Table) -> None:
        self.engine = engine
        self.table = table
        t = table
        self._start = Prepared(engine, insert(t), ("saga_id", "deadline"))
        open_ = (t.c.saga_id == bindparam("key"), t.c.closed_at.is_(None))
        self._close = Prepared(engine, update(t).where(*open_), ("closed_at",))
        self._time_out = Prepared(engine, update(t).where(*open_, t.c.timed_out_at.is_(None)),
                                  ("timed_out_at",))
        quiet_since = func.coalesce(t.c.nudged_at, t.c.timed_out_at) < bindparam("before", type_=Timestamp)
        self._nudge = Prepared(engine, update(t).where(*open_, quiet_since), ("nudged_at",))

    def start(self, connection: Raw, saga_id: str, deadline: datetime) -> None:
        connection.execute(self._start, {"saga_id": saga_id, "deadline": deadline})

    def close(self, connection: Raw, saga_id: str) -> bool:
        """The saga ended here (completed, or undone), in the caller's transaction; False if it
        had ended before."""
        return connection.execute(self._close, {"key": saga_id, "closed_at": utcnow()}) == 1

    def time_out(self, connection: Raw, saga_id: str) -> bool:
        """Record that the saga's deadline passed while it was open; False if it had closed or
        timed out already (so the time-out is published once)."""
        return connection.execute(self._time_out, {"key": saga_id, "timed_out_at": utcnow()}) == 1

    def nudge(self, connection: Raw, saga_id: str, quiet: timedelta) -> bool:
        """Record a new nudge of a timed-out saga still open, unless it was nudged (or timed
        out) less than `quiet` ago or has closed; True if this call recorded it."""
        now = utcnow()
        return connection.execute(self._nudge, {"key": saga_id, "nudged_at": now, "before": now - quiet}) == 1

    def get(self, saga_id: str) -> dict[str, str | None] | None:
        with reading(self.engine) as connection:
            row = connection.execute(select(self.table).where(self.table.c.saga_id == saga_id)).first()
        return None if row is None else {"saga_id": row.saga_id, "deadline": iso(row.deadline),
                                         "closed_at": iso(row.closed_at),
                                         "timed_out_at": iso(row.timed_out_at)}

    def passed(self, limit: int = 100) -> list[str]:
        """Sagas whose deadline passed while still open here, not yet timed out."""
        t = self.table
        query = (select(t.c.saga_id).where(t.c.closed_at.is_(None), t.c.deadline < utcnow(),
                                           t.c.timed_out_at.is_(None))
                 .order_by(t.c.deadline).limit(limit))
        with reading(self.engine) as connection:
            return list(connection.execute(query).scalars())

    def stuck(self, after: timedelta, limit: int = 100) -> list[str]:
        """Timed-out sagas still open here `after` past their deadline, not nudged since."""
        t, now = self.table, utcnow()
        query = (select(t.c.saga_id).where(t.c.closed_at.is_(None), t.c.deadline < now - after,
                                           t.c.timed_out_at.is_not(None),
                                           func.coalesce(t.c.nudged_at, t.c.timed_out_at) < now - after)
                 .order_by(t.c.deadline).limit(limit))
        with reading(self.engine) as connection:
            return list(connection.execute(query).scalars())


class DeadlineWatcher:
    """Every `interval` seconds, time out what passed and nudge what is stuck: `time_out(saga_id,
    again_after)` records it and publishes the event in one transaction (False if it had no cause
    to); `again_after` None for a deadline just passed, `stuck_after` for a saga stuck since."""

    def __init__(self, deadlines: Deadlines, time_out: Callable[[str, timedelta | None], bool],
                 interval: float, stuck_after: float) -> None:
        self.deadlines = deadlines
        self.time_out = time_out
        self.interval = interval
        self.stuck_after = timedelta(seconds=stuck_after)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="saga-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def scan_once(self) -> int:
        """Time out and nudge what is due; how many events were published. A saga that cannot
        be timed out (its definition no longer declared here, say) is logged and tried again at
        the next scan; the sagas after it are still timed out."""
        published = 0
        for saga_id in self.deadlines.passed():
            if self._time_out(saga_id, None):
                published += 1
                log.warning("saga %s: deadline passed; publishing SignupTimedOut", saga_id)
        for saga_id in self.deadlines.stuck(self.stuck_after):
            if self._time_out(saga_id, self.stuck_after):
                published += 1
                log.error("saga %s: still open %g s after its deadline; publishing SignupTimedOut "
                          "again", saga_id, self.stuck_after.total_seconds())
        return published

    def _time_out(self, saga_id: str, again_after: timedelta | None) -> bool:
        try:
            return self.time_out(saga_id, again_after)
        except DATABASE_ERRORS:
            raise  # the database is down for every saga: the scan ends (and `_run` says so once)
        except Exception:  # noqa: BLE001 - one saga's trouble must not hold up the others'
            log.exception("saga %s: could not be timed out; trying again at the next scan", saga_id)
            return False

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive a database hiccup
                log.exception("deadline scan failed; trying again in %s s", self.interval)
