"""Handles what a service's inbox holds: each event once, failures tried again with backoff,
and the failure path (the service's own failure event) when the attempts run out."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from common.metrics import DEAD_LETTERS, EVENTS_HANDLED, EVENTS_REFUSED
from common.pacing import Pacing
from messaging.events import BadEnvelope, Envelope, Refused
from messaging.inbox import Inbox, InboxRow

log = logging.getLogger(__name__)

GIVE_UP_ATTEMPTS = 30
"""Tries at the failure path itself (a database down, say) before the event is dead-lettered."""


class Postponed(Exception):
    """The handler cannot act yet (another saga holds what it needs): ask again in `seconds`,
    without spending an attempt. Nothing was written."""

    def __init__(self, reason: str, seconds: float) -> None:
        super().__init__(reason)
        self.seconds = seconds


class Handler(Protocol):
    """What a service does with an event, each in one transaction that also marks it handled."""

    known_types: frozenset[str]

    def attempts_allowed(self, envelope: Envelope) -> int: ...

    def handle(self, envelope: Envelope, attempt: int) -> None: ...

    def give_up(self, envelope: Envelope, attempt: int, error: str) -> None: ...


class InboxWorker:
    """A poll loop (woken early when an event arrives) feeding a pool of handler threads."""

    def __init__(self, service: str, inbox: Inbox, handler: Handler, pacing: Pacing, threads: int = 16,
                 poll: float = 0.5) -> None:
        self.service = service
        self.inbox = inbox
        self.handler = handler
        self.pacing = pacing
        self.poll = poll
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="inbox")
        self._claimed: set[str] = set()
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="inbox-poll", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def hand(self, rows: list[InboxRow]) -> None:
        """Events just committed to the inbox: handle them now, on the pool's threads."""
        for row in rows:
            if self._claim(row.event_id):
                self._pool.submit(self._process, row)

    def _claim(self, event_id: str) -> bool:
        with self._guard:
            if event_id in self._claimed:
                return False
            self._claimed.add(event_id)
            return True

    def _run(self) -> None:
        while True:
            self._wake.wait(self.poll)
            self._wake.clear()
            try:
                for row in self.inbox.due():
                    if self._claim(row.event_id):
                        self._pool.submit(self._process, row)
            except Exception:  # noqa: BLE001 - the loop must outlive a database hiccup
                log.exception("inbox scan failed; trying again in %s s", self.poll)

    def _process(self, row: InboxRow) -> None:
        try:
            self._attempt(row)
        except Exception:  # noqa: BLE001 - the row stays PENDING; the next scan takes it again
            log.exception("inbox event %s could not be handled or rescheduled", row.event_id)
        finally:
            with self._guard:
                self._claimed.discard(row.event_id)

    def _refuse(self, row: InboxRow, attempt: int, error: Refused) -> None:
        """An event this service will never handle: to the dead letters, with the reason."""
        self.inbox.dead(row.event_id, attempt, f"refused ({error.kind}): {error}")
        DEAD_LETTERS.labels(self.service, "inbox").inc()
        EVENTS_REFUSED.labels(self.service, error.kind).inc()
        log.error("inbox event %s refused, to the dead letters: %s", row.event_id, error)

    def _attempt(self, row: InboxRow) -> None:
        attempt = row.attempts + 1
        try:
            envelope = row.parsed or Envelope.loads(row.envelope, self.handler.known_types)
        except BadEnvelope as error:
            self._refuse(row, attempt, error)
            return
        try:
            self._handle(row, envelope, attempt)
        except Refused as error:
            self._refuse(row, attempt, error)

    def _handle(self, row: InboxRow, envelope: Envelope, attempt: int) -> None:
        allowed = self.handler.attempts_allowed(envelope)
        error_text = row.last_error or "the attempts ran out"
        try:
            if attempt <= allowed:
                try:
                    self.handler.handle(envelope, attempt)
                    EVENTS_HANDLED.labels(self.service, envelope.type, "ok").inc()
                    return
                except Refused:
                    raise
                except Postponed as wait:  # not an attempt: the same one, again, a moment later
                    EVENTS_HANDLED.labels(self.service, envelope.type, "postponed").inc()
                    self.inbox.retry_later(row.event_id, attempt - 1, str(wait), wait.seconds)
                    self.wake_at(wait.seconds)
                    return
                except Exception as error:  # noqa: BLE001 - a failed attempt, to be tried again
                    error_text = str(error) or type(error).__name__
                    log.info("saga %s: %s attempt %d failed: %s", envelope.saga_id, envelope.type,
                             attempt, error_text, extra={"saga_id": envelope.saga_id, "attempt": attempt})
                    if attempt < allowed:
                        EVENTS_HANDLED.labels(self.service, envelope.type, "retry").inc()
                        self.inbox.retry_later(row.event_id, attempt, error_text, self.pacing.after(attempt))
                        self.wake_at(self.pacing.after(attempt))
                        return
            self.handler.give_up(envelope, attempt, error_text)
            EVENTS_HANDLED.labels(self.service, envelope.type, "gave_up").inc()
        except Refused:
            raise
        except Exception as error:  # noqa: BLE001 - the failure path itself failed (a database down)
            log.warning("saga %s: %s could not be settled (attempt %d): %s", envelope.saga_id,
                        envelope.type, attempt, error)
            if attempt >= allowed + GIVE_UP_ATTEMPTS:
                self.inbox.dead(row.event_id, attempt, f"could not be settled: {error}")
                DEAD_LETTERS.labels(self.service, "inbox").inc()
                log.error("saga %s: %s dead-lettered", envelope.saga_id, envelope.type)
            else:
                self.inbox.retry_later(row.event_id, attempt, str(error), self.pacing.after(attempt))

    def wake_at(self, seconds: float) -> None:
        """Make sure the poll loop looks again soon after a retry falls due."""
        if seconds < self.poll:
            threading.Timer(seconds, self.wake).start()
