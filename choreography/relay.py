"""The relay: publishes what a service's outbox holds, and marks what its destination confirmed.

It never publishes inside a transaction: the outbox row was committed with the change it
reports; the relay reads it afterwards. An event is published at least once: a relay killed
after the destination took it and before the row was marked sends it again, and the
receiver's inbox drops the repeat. Each destination has a thread of its own, so one that
is down or slow holds up only the events bound for it.
"""

from __future__ import annotations

import logging
import threading

from choreography.outbox import Outbox, OutboxRow
from choreography.transport import Transport
from common.metrics import DEAD_LETTERS, EVENTS_PUBLISHED
from common.pacing import Pacing

log = logging.getLogger(__name__)


class Relay:
    """One thread per destination, each draining its rows of the outbox through `transport`,
    woken as soon as a commit adds to the outbox (and every `poll` seconds regardless)."""

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
        self._wakes = {(d, lane): threading.Event() for d in destinations for lane in range(lanes)}

    def start(self) -> None:
        for destination, lane in self._wakes:
            threading.Thread(target=self._run, args=(destination, lane), name=f"relay-{destination}-{lane}",
                             daemon=True).start()

    def wake(self) -> None:
        for wake in self._wakes.values():
            wake.set()

    def _run(self, destination: str, lane: int) -> None:
        wake = self._wakes[(destination, lane)]
        while True:
            wake.wait(self.poll)
            wake.clear()
            try:
                while self.relay_once(destination, lane):
                    pass
            except Exception:  # noqa: BLE001 - the relay must outlive a database hiccup
                log.exception("outbox relay to %s failed; trying again in %s s", destination, self.poll)

    def relay_once(self, destination: str, lane: int = 0) -> int:
        """Publish what is due now for `destination` in `lane`; how many rows were published."""
        return sum(self._publish(row) for row in self.outbox.due(destination, lane=(lane, self.lanes)))

    def _publish(self, row: OutboxRow) -> int:
        delivery = self.transport.deliver(row.destination, row.envelope)
        if delivery.ok:
            self.outbox.sent(row.id)
            EVENTS_PUBLISHED.labels(self.service, row.destination).inc()
            return 1
        attempts = row.attempts + 1
        error = delivery.error or "not delivered"
        if delivery.permanent or attempts >= self.max_attempts:
            self.outbox.dead(row.id, attempts, error)
            DEAD_LETTERS.labels(self.service, "outbox").inc()
            log.error("outbox row %d to %s dead-lettered after %d attempt(s): %s", row.id,
                      row.destination, attempts, error)
        else:
            self.outbox.retry_later(row.id, attempts, error, self.pacing.after(attempts))
            log.info("outbox row %d to %s not delivered (attempt %d): %s", row.id, row.destination,
                     attempts, error)
        return 0
