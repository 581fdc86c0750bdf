"""The relay: publishes what a service's outbox holds, and marks what its destination confirmed.

It never publishes inside a transaction: the outbox rows were committed with the change they
report, and are handed to the relay in memory only once that commit is done (`push`); the relay
sends them at once, a batch at a time, and marks the batch in one transaction. Rows it was never
handed, or could not deliver, are found by a scan of the outbox every `poll` seconds once they
fall due. An event is published at least once: a relay killed after the destination took it and
before the row was marked sends it again, and the receiver's inbox drops the repeat. Each
destination has a thread of its own, so one that is down or slow holds up only its own events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from common.metrics import DEAD_LETTERS, EVENTS_PUBLISHED
from common.pacing import Pacing
from messaging.outbox import Outbox, OutboxRow, Outcome
from messaging.transport import Transport

log = logging.getLogger(__name__)

BATCH = 100  # events handed to a destination in one delivery, at most


class Relay:
    """`lanes` threads per destination, each delivering what it is handed and what falls due."""

    def __init__(self, service: str, outbox: Outbox, transport: Transport, destinations: list[str],
                 pacing: Pacing, max_attempts: int, poll: float = 0.5, lanes: int = 1) -> None:
        self.service = service
        self.outbox = outbox
        self.transport = transport
        self.destinations = destinations
        self.pacing = pacing
        self.max_attempts = max_attempts
        self.poll = poll
        # Threads per destination, each taking the rows whose id falls in its lane: a transport
        # that waits for each delivery's confirm (the broker's) then has that many in flight.
        self.lanes = lanes
        self._handed: dict[str, deque[OutboxRow]] = {d: deque() for d in destinations}
        self._wakes = {d: threading.Event() for d in destinations}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for destination in self.destinations:
            for lane in range(self.lanes):
                thread = threading.Thread(target=self._run, args=(destination, lane), daemon=True,
                                          name=f"relay-{destination}-{lane}")
                thread.start()
                self._threads.append(thread)

    def stop(self, seconds: float = 5.0) -> None:
        """End the relay's threads, each after the delivery it is making (what was handed and not
        sent stays in the outbox, for the next relay's scan)."""
        self._stopping.set()
        self.wake()
        for thread in self._threads:
            thread.join(seconds)

    def push(self, rows: list[OutboxRow]) -> None:
        """Rows whose transaction has just committed: send them now."""
        for row in rows:
            self._handed[row.destination].append(row)
        for destination in {row.destination for row in rows}:
            self._wakes[destination].set()

    def wake(self) -> None:
        """Look at the outbox now (a redrive made rows due, say)."""
        for wake in self._wakes.values():
            wake.set()

    def _run(self, destination: str, lane: int) -> None:
        wake, handed = self._wakes[destination], self._handed[destination]
        scanned = 0.0
        while not self._stopping.is_set():
            woken = wake.wait(self.poll)
            wake.clear()
            if self._stopping.is_set():
                return
            try:
                while batch := _take(handed, BATCH):
                    self._deliver(destination, batch)
                if not woken or time.monotonic() - scanned >= self.poll:
                    scanned = time.monotonic()
                    while self.relay_due(destination, lane) == BATCH:
                        pass
            except Exception:  # noqa: BLE001 - the relay must outlive a database hiccup
                log.exception("outbox relay to %s failed; trying again in %s s", destination, self.poll)

    def relay_due(self, destination: str, lane: int = 0) -> int:
        """Publish what the outbox holds due for `destination` in `lane`; how many rows it held."""
        rows = self.outbox.due(destination, limit=BATCH, lane=(lane, self.lanes))
        if rows:
            self._deliver(destination, rows)
        return len(rows)

    def _deliver(self, destination: str, rows: list[OutboxRow]) -> None:
        deliveries = self.transport.deliver(destination, [row.envelope for row in rows])
        outcomes = []
        for row, delivery in zip(rows, deliveries, strict=True):
            if delivery.ok:
                outcomes.append(Outcome(row, sent=True))
                continue
            attempts = row.attempts + 1
            error = delivery.error or "not delivered"
            dead = delivery.permanent or attempts >= self.max_attempts
            outcomes.append(Outcome(row, sent=False, dead=dead, error=error,
                                    retry_in=0.0 if dead else self.pacing.after(attempts)))
            if dead:
                DEAD_LETTERS.labels(self.service, "outbox").inc()
                log.error("event %s to %s dead-lettered after %d attempt(s): %s", row.event_id,
                          destination, attempts, error)
            else:
                log.info("event %s to %s not delivered (attempt %d): %s", row.event_id, destination,
                         attempts, error)
        self.outbox.settle(outcomes)
        sent = sum(1 for outcome in outcomes if outcome.sent)
        if sent:
            EVENTS_PUBLISHED.labels(self.service, destination).inc(sent)


def _take(handed: deque[OutboxRow], most: int) -> list[OutboxRow]:
    """Up to `most` rows from the front of `handed` (which other lanes may drain at once)."""
    taken: list[OutboxRow] = []
    while len(taken) < most:
        try:
            taken.append(handed.popleft())
        except IndexError:
            break
    return taken
