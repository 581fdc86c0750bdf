"""Group commit: writes that each need a transaction of their own, committed together.

SQLite lets one writer in at a time, so a process's writers queue for it anyway (the write gate
in `db.py`). A writer that gets in takes the writes queued behind it into its transaction, and
their callers go on once that one commit is done: each write is as durable when its caller goes
on as it was alone; what is fewer is transactions, each a lock, a refill of the connection's
page cache and an fsync. On MySQL/MariaDB each write stays a transaction of its own: the server
commits concurrent transactions side by side (and groups their log flushes itself), and
measured, queueing them here made the saga log slower there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from common.db import raw_writing
from common.prepared import Raw

Work = Callable[[Raw], Any]


@dataclass
class _Write:
    work: Work
    done: threading.Event = field(default_factory=threading.Event)  # committed, or its turn to lead
    leads: bool = False  # it commits the next group, its own write first
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """Runs each `work` in a write transaction (`raw_writing`) and returns what it returned; on
    SQLite, the works that queue while a transaction commits share the next one, up to `most`.

    A work writes only what it can keep: it checks first (the saga log's fence is its first
    statement) and returns, writing nothing, when it may not write. What it raises fails its
    whole transaction: every work in it raises the same error, and none of them is written (the
    database failed them, as it would have failed each alone)."""

    def __init__(self, engine: Engine, most: int = 64) -> None:
        self.engine = engine
        self.most = most
        self.grouped = engine.dialect.name == "sqlite"
        self._guard = threading.Lock()
        self._queue: list[_Write] = []
        self._committing = False

    @property
    def queued(self) -> int:
        """Writes waiting for the next commit."""
        with self._guard:
            return len(self._queue)

    def run(self, work: Work) -> Any:
        if not self.grouped:
            with raw_writing(self.engine) as connection:
                return work(connection)
        write = _Write(work)
        with self._guard:
            write.leads = not self._committing
            if write.leads:
                self._committing = True
            else:
                self._queue.append(write)
        if not write.leads:
            write.done.wait()  # its group has committed, or it is its turn to lead one
        if write.leads:
            self._commit(write)
        if write.error is not None:
            raise write.error
        return write.result

    def _commit(self, leader: _Write) -> None:
        """Commit the leader's write and those queued now; then hand the lead to the next in line."""
        with self._guard:
            group = [leader, *self._queue[: self.most - 1]]
            del self._queue[: self.most - 1]
        try:
            with raw_writing(self.engine) as connection:
                for write in group:
                    write.result = write.work(connection)
        except BaseException as error:  # noqa: BLE001 - each writer of the group raises it
            for write in group:
                write.error = error
        with self._guard:
            following = self._queue.pop(0) if self._queue else None
            if following is not None:
                following.leads = True
            else:
                self._committing = False
        for write in group[1:]:
            write.done.set()
        if following is not None:
            following.done.set()
