"""A participant's part in the choreographed saga: what it does with each event the flow gives
it, the sign-up's entry point (at A), and the events it takes in and publishes.

Every reaction is one local transaction: the row, the event it publishes (outbox), and the
event it handled (inbox) commit together. The service compensates only itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opentelemetry.trace import SpanKind
from sqlalchemy import MetaData

from choreography.deadlines import Deadlines, DeadlineWatcher, deadlines_table
from choreography.events import BadEnvelope, Envelope, Refused, parse_moment
from choreography.flow import (
    ENTRY,
    EVENT_TYPES,
    FIELDS,
    REQUESTED,
    STEPS,
    TIMED_OUT,
    Reaction,
    When,
    reactions_of,
    subscribers,
)
from choreography.inbox import Inbox, InboxRow, inbox_table
from choreography.outbox import Outbox, OutboxRow, outbox_table
from choreography.relay import Relay
from choreography.transport import HttpTransport, Transport
from choreography.worker import InboxWorker
from common.db import Raw, iso, raw_writing, utcnow
from common.faults import Fault, FaultKind, parse_fault
from common.http import Http
from common.metrics import EVENTS_HANDLED, EVENTS_RECEIVED, HANDLER_DURATION, REDRIVEN
from common.pacing import Pacing
from common.status import Model, RecordStatus
from common.tracing import current_traceparent, parent, span_in, start_saga_trace
from participant.records import Outcome, RecordStore, WrongModel
from participant.spec import ServiceSpec

log = logging.getLogger(__name__)

# Publishers to the broker at once: each waits for the broker's confirm of every event it
# publishes (measured: 8 lanes took 1.5 times the sagas 4 did, at 16 clients).
BROKER_LANES = 8


class InjectedFault(Exception):
    """A fault the sign-up asked this step to act out."""


class AlreadyHandled(Exception):
    """Another handler marked the event handled first; this one's transaction is rolled back."""


def choreography_tables(metadata: MetaData) -> None:
    """The tables a participant keeps for the choreographed saga, beside its own rows."""
    outbox_table(metadata)
    inbox_table(metadata)
    deadlines_table(metadata)


@dataclass
class Commit:
    """One local transaction of this service's: its connection, and what it publishes, handed
    to the relay (and, our own events for ourselves, to the inbox worker) once it commits."""

    connection: Raw
    outbox: list[OutboxRow] = field(default_factory=list)
    inbox: list[InboxRow] = field(default_factory=list)


class Reactions:
    """What this service does with each event it reacts to (flow.py says which)."""

    known_types = EVENT_TYPES

    def __init__(self, spec: ServiceSpec, config: dict[str, Any], records: RecordStore, inbox: Inbox,
                 outbox: Outbox, deadlines: Deadlines, transport: Transport,
                 sleeps: threading.BoundedSemaphore) -> None:
        self.me = spec.name
        self.field = FIELDS[self.me]
        self.config = config
        self.records = records
        self.inbox = inbox
        self.outbox = outbox
        self.deadlines = deadlines
        self.transport = transport
        self.sleeps = sleeps
        self.reactions = reactions_of(self.me)
        self.handover = config["CHOREOGRAPHY_HANDOVER"]
        # What a commit hands on: its outbox rows to the relay, its inbox rows to the worker.
        self.committed: Callable[[Commit], None] = lambda _commit: None

    @contextmanager
    def commit(self) -> Iterator[Commit]:
        """A transaction; what it published is handed on only once it has committed."""
        with raw_writing(self.records.engine) as connection:
            done = Commit(connection)
            yield done
        self.committed(done)

    # What the worker asks ---------------------------------------------------------------------

    def attempts_allowed(self, envelope: Envelope) -> int:
        when = self.reaction_to(envelope)
        retries = (self.config["CALL_RETRIES"] if when.reaction is Reaction.APPLY
                   else self.config["COMPENSATION_RETRIES"])
        return 1 + int(retries)

    def handle(self, envelope: Envelope, attempt: int) -> None:
        """Act out the fault the sign-up asked of this step, if any; then react, in one commit."""
        when = self.reaction_to(envelope)
        with self.span(envelope, when, attempt), self._refusing_other_models():
            self._act_out(envelope, when, self._fault(envelope), attempt)
            with self.commit() as commit:
                self.react(commit, envelope, when, attempt)

    def react(self, commit: Commit, envelope: Envelope, when: When, attempt: int) -> None:
        """The reaction itself, in the caller's commit, which also marks the event handled."""
        if when.reaction is Reaction.APPLY:
            self._apply(commit, envelope, when)
        elif when.reaction is Reaction.COMPENSATE:
            self._compensate(commit, envelope, when)
        elif when.reaction is Reaction.CANCEL:
            self._cancel(commit, envelope, when)
        else:
            self._close_clock(commit, envelope.saga_id)
        if not self.inbox.handled(commit.connection, envelope.event_id, attempt):
            raise AlreadyHandled(envelope.event_id)

    def give_up(self, envelope: Envelope, attempt: int, error: str) -> None:
        """The attempts ran out: undo what may have committed, and say this step failed."""
        when = self.reaction_to(envelope)
        with self.span(envelope, when, attempt), self._refusing_other_models(), self.commit() as commit:
            if when.reaction is Reaction.APPLY:
                self._undo_and_report(commit, envelope, when.otherwise, {"reason": "error", "error": error})
                log.warning("saga %s: %s gave up after %d attempt(s): %s", envelope.saga_id, envelope.type,
                            attempt, error)
            elif when.otherwise:  # a compensation that keeps failing: the saga needs attention
                self._emit(commit, when.otherwise, envelope, {"error": error})
                log.error("saga %s: compensation of %s failed for good: %s", envelope.saga_id, self.me, error)
            self._close_clock(commit, envelope.saga_id)
            if not self.inbox.handled(commit.connection, envelope.event_id, attempt):
                raise AlreadyHandled(envelope.event_id)

    @contextmanager
    def _refusing_other_models(self) -> Iterator[None]:
        """An event about a saga whose row here the orchestrator made is never handled."""
        try:
            yield
        except WrongModel as error:
            raise Refused(str(error), "wrong_model") from None

    @contextmanager
    def span(self, envelope: Envelope, when: When, attempt: int) -> Iterator[None]:
        """A span for handling an event, a child of the span that published it, and its timing."""
        started = time.perf_counter()
        attributes = {"saga.id": envelope.saga_id, "saga.service": self.me, "saga.event": envelope.type,
                      "saga.reaction": when.reaction.value, "saga.attempt": attempt}
        try:
            with span_in(f"{when.reaction.value} on {envelope.type}", parent(envelope.traceparent),
                         SpanKind.CONSUMER, attributes):
                yield
        finally:
            HANDLER_DURATION.labels(self.me, "event").observe(time.perf_counter() - started)

    # The reactions ----------------------------------------------------------------------------

    def _act_out(self, envelope: Envelope, when: When, fault: Fault | None, attempt: int) -> None:
        """A fault acted out before the reaction's commit: a sleep, a failure, or a commit of
        the row on its own and then a failure (after_commit)."""
        if fault is None:
            return
        if when.reaction is Reaction.COMPENSATE:
            if fault.fails_compensation(attempt):
                raise InjectedFault(f"injected fault {fault}: compensation failed (attempt {attempt})")
            return
        if when.reaction is not Reaction.APPLY:
            return
        saga_id = envelope.saga_id
        deadline = parse_moment(str(envelope.payload["deadline"]))
        pause = fault.sleep_before_commit(0, 0)
        if fault.kind is FaultKind.TIMEOUT:  # outlast the saga's deadline, then try to commit late
            pause = max(0.0, (deadline - utcnow()).total_seconds()) + self.config["FAULT_LATE_MARGIN"]
        if pause:
            self._sleep(saga_id, fault, pause, attempt)
        if fault.fails_before_commit(attempt):
            raise InjectedFault(f"injected fault {fault}: failed before commit, nothing written "
                                f"(attempt {attempt})")
        if fault.fails_after_commit():  # the row commits; the handler then fails
            self.records.apply(saga_id, str(envelope.payload["input"][self.field]), Model.CHOREOGRAPHY)
            raise InjectedFault(f"injected fault {fault}: committed, then failed (attempt {attempt})")

    def _apply(self, commit: Commit, envelope: Envelope, when: When) -> None:
        saga_id, payload = envelope.saga_id, envelope.payload
        if utcnow() > parse_moment(str(payload["deadline"])):  # nothing applies after the deadline, anywhere
            undone = self._undo_and_report(commit, envelope, when.otherwise, {
                "reason": "timeout", "error": f"step {self.me}: the deadline passed"})
            if undone.changed:
                self._close_clock(commit, saga_id)
            log.warning("saga %s: apply refused, the saga's deadline passed", saga_id)
            return
        value = str(payload["input"][self.field])
        status = self.records.apply_in(commit.connection, saga_id, value, Model.CHOREOGRAPHY).status
        if status is not RecordStatus.APPLIED:  # closed here already (a late apply)
            log.info("saga %s: apply refused, the row is %s", saga_id, status.value)
            return
        onward = {k: v for k, v in payload["input"].items() if k != self.field}
        if when.then:
            self._emit(commit, when.then, envelope, {**payload, "input": onward})
        log.info("saga %s: applied", saga_id)

    def _compensate(self, commit: Commit, envelope: Envelope, when: When) -> None:
        outcome = self._undo_and_report(commit, envelope, when.then, {})
        self._close_clock(commit, envelope.saga_id)
        log.info("saga %s: compensated, the row is %s", envelope.saga_id, outcome.status.value)

    def _undo_and_report(self, commit: Commit, cause: Envelope, event_type: str | None,
                         payload: dict[str, Any]) -> Outcome:
        """Undo this step's row (a tombstone if it never applied) and, if that changed it now,
        publish `event_type`: each step reports its undoing once, whoever asked first."""
        outcome = self.records.compensate_in(commit.connection, cause.saga_id, Model.CHOREOGRAPHY)
        if outcome.changed and event_type:
            self._emit(commit, event_type, cause, payload)
        return outcome

    def _cancel(self, commit: Commit, envelope: Envelope, when: When) -> None:
        """The deadline passed. If this (last) step never applied, it never will: the saga fails.

        Only a tombstone written now fails the saga: an apply that committed first (even one
        in flight while this ran) means the saga completed in time. Asked again (A nudges a
        saga stuck past its deadline), a step it closed already sends again what it could
        not deliver."""
        outcome = self.records.cancel_in(commit.connection, envelope.saga_id, Model.CHOREOGRAPHY)
        if outcome.changed:
            if when.then:
                self._emit(commit, when.then, envelope,
                           {"reason": "timeout", "error": f"step {self.me}: not applied before the deadline"})
            log.warning("saga %s: timed out before %s applied; cancelled", envelope.saga_id, self.me)
        elif outcome.status is RecordStatus.CANCELLED:
            again = self.outbox.redrive_saga(commit.connection, envelope.saga_id)
            if again:
                log.warning("saga %s: asked again after its deadline; sending %d undelivered event(s) "
                            "again", envelope.saga_id, again)

    # Publishing --------------------------------------------------------------------------------

    def _emit(self, commit: Commit, event_type: str, cause: Envelope, payload: dict[str, Any]) -> None:
        """Publish an event of ours, in the caller's transaction (the transactional outbox). The
        saga's context (its faults and deadline) goes along with every event."""
        context: dict[str, Any] = {key: cause.payload[key] for key in ("fail", "deadline")
                                   if key in cause.payload}
        envelope = Envelope(event_type, cause.saga_id, self.me, {**context, **payload},
                            traceparent=current_traceparent() or cause.traceparent)
        self.publish(commit, envelope)

    def publish(self, commit: Commit, envelope: Envelope) -> None:
        reacting = subscribers(envelope.type)
        if self.me in reacting:  # our own event, for ourselves: straight into our inbox
            row = self.inbox.add(commit.connection, envelope, self.handover)
            if row is not None:
                commit.inbox.append(row)
        others = tuple(service for service in reacting if service != self.me)
        commit.outbox += self.outbox.add(commit.connection, envelope, self.transport.destinations(others))

    def time_out(self, saga_id: str, again: bool) -> bool:
        """For the deadline watcher: publish SignupTimedOut for a saga still open past its
        deadline, in the transaction that records it (`again`: for a saga stuck since, at most
        once every CHOREOGRAPHY_STUCK_AFTER), in the saga's trace (the sign-up in our inbox has
        it); False if the saga closed, or was dealt with, meanwhile."""
        with self.commit() as commit:
            connection = commit.connection
            if again:
                due = self.deadlines.nudge(connection, saga_id, timedelta(seconds=self.config[
                    "CHOREOGRAPHY_STUCK_AFTER"]))
            else:
                due = self.deadlines.time_out(connection, saga_id)
            if not due:
                return False
            requested = self.inbox.first_of(connection, saga_id, REQUESTED)
            self.publish(commit, Envelope(TIMED_OUT, saga_id, self.me, {},
                                          traceparent=requested.traceparent if requested else None))
        return True

    def _close_clock(self, commit: Commit, saga_id: str) -> None:
        if self.me == ENTRY:
            self.deadlines.close(commit.connection, saga_id)

    # Helpers ----------------------------------------------------------------------------------

    def reaction_to(self, envelope: Envelope) -> When:
        """What this service does on the event; BadEnvelope if it takes no such event."""
        when = self.reactions.get(envelope.type)
        if when is None:
            raise BadEnvelope(f"service {self.me} does not react to {envelope.type}", "not_taken")
        return when

    def _fault(self, envelope: Envelope) -> Fault | None:
        raw = (envelope.payload.get("fail") or {}).get(self.me)
        if not raw or not self.config["FAULTS_ENABLED"]:
            return None
        return parse_fault(str(raw))

    def _sleep(self, saga_id: str, fault: Fault, seconds: float, attempt: int) -> None:
        if not self.sleeps.acquire(blocking=False):
            raise InjectedFault(f"injected fault {fault}: every slot for injected sleeps is taken")
        try:
            log.info("saga %s: %s sleeps %.1f s before its commit (attempt %d)", saga_id, fault, seconds,
                     attempt)
            time.sleep(seconds)
        finally:
            self.sleeps.release()


class ParticipantChoreography:
    """Everything a participant runs for the choreographed saga, built from its settings."""

    def __init__(self, spec: ServiceSpec, config: dict[str, Any], records: RecordStore, metadata: MetaData,
                 sleeps: threading.BoundedSemaphore) -> None:
        engine = records.engine
        self.spec = spec
        self.config = config
        self.inbox = Inbox(engine, metadata.tables["inbox"])
        self.outbox = Outbox(engine, metadata.tables["outbox"], handover=config["CHOREOGRAPHY_HANDOVER"])
        self.deadlines = Deadlines(engine, metadata.tables["saga_deadlines"])
        self.transport, destinations = self._transport(config)
        pacing = Pacing(config["RETRY_BACKOFF"], config["RETRY_BACKOFF_MAX"], config["RETRY_JITTER"])
        self.reactions = Reactions(spec, config, records, self.inbox, self.outbox, self.deadlines,
                                   self.transport, sleeps)
        self.worker = InboxWorker(spec.name, self.inbox, self.reactions, pacing,
                                  threads=config["INBOX_THREADS"], poll=config["CHOREOGRAPHY_POLL"])
        self.relay = Relay(spec.name, self.outbox, self.transport, destinations, Pacing(0.2, 10.0, 0.2),
                           max_attempts=config["RELAY_MAX_ATTEMPTS"], poll=config["CHOREOGRAPHY_POLL"],
                           lanes=BROKER_LANES if config["BROKER_URL"] else 1)
        self.reactions.committed = self._committed
        self.watcher = (DeadlineWatcher(self.deadlines, self.reactions.time_out, interval=0.2,
                                        stuck_after=config["CHOREOGRAPHY_STUCK_AFTER"])
                        if spec.name == ENTRY else None)

    def _committed(self, commit: Commit) -> None:
        if commit.outbox:
            self.relay.push(commit.outbox)
        if commit.inbox:
            self.worker.hand(commit.inbox)

    def _transport(self, config: dict[str, Any]) -> tuple[Transport, list[str]]:
        if config["BROKER_URL"]:
            from choreography.rabbitmq import BrokerTransport

            broker = BrokerTransport(config["BROKER_URL"], config["BROKER_NAMESPACE"],
                                     config["SERVICE_SECRET"], self.spec.name)
            return broker, ["broker"]
        urls = {**config["PEER_URLS"], "observer": config["OBSERVER_URL"]}
        http = HttpTransport(urls, Http(config["SERVICE_SECRET"]))
        return http, [step for step in STEPS if step != self.spec.name] + ["observer"]

    def start(self) -> None:
        """Start the relay, the inbox worker, the deadline watcher (at A) and the broker consumer."""
        self.relay.start()
        self.worker.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.config["BROKER_URL"]:
            from choreography.rabbitmq import BrokerConsumer

            BrokerConsumer(self.config["BROKER_URL"], self.config["BROKER_NAMESPACE"],
                           queue=f"service_{self.spec.name}", receive=self.receive,
                           secret=self.config["SERVICE_SECRET"], party=self.spec.name).start()

    def receive(self, envelopes: list[Envelope]) -> list[bool | Refused]:
        """Events from other services (HTTP or broker): each one this service takes into the
        inbox, once, all in one commit, then handled at once; for each, True if new, False if a
        repeat, or why it was refused (a type this service does not take)."""
        outcomes: list[bool | Refused] = []
        taken: list[Envelope] = []
        for envelope in envelopes:
            try:
                self.reactions.reaction_to(envelope)
            except Refused as error:
                outcomes.append(error)
                continue
            outcomes.append(True)
            taken.append(envelope)
        rows = iter(self.inbox.receive(taken, self.reactions.handover) if taken else [])
        for index, envelope in enumerate(envelopes):
            if outcomes[index] is True:
                row = next(rows)
                result = "duplicate" if row is None else "new"
                EVENTS_RECEIVED.labels(self.spec.name, envelope.type, result).inc()
                outcomes[index] = row is not None
                if row is not None:
                    self.worker.hand([row])
        return outcomes

    def sign_up(self, saga_input: dict[str, str], faults: dict[str, str], saga_id: str) -> Envelope:
        """The entry: start the clock and take the sign-up in as our own event and, unless a
        fault asks this step to act something out (then the inbox worker does), apply it: all
        in one commit."""
        deadline = utcnow() + timedelta(seconds=self.config["CHOREOGRAPHY_DEADLINE"])
        traceparent = start_saga_trace("saga signup (choreography)", saga_id)
        envelope = Envelope(REQUESTED, saga_id, self.spec.name,
                            {"input": saga_input, "fail": faults, "deadline": iso(deadline)},
                            traceparent=traceparent)
        reactions = self.reactions
        here = self.spec.name not in faults  # ours to handle, here and now: not the worker's
        with reactions.commit() as commit:
            self.deadlines.start(commit.connection, saga_id, deadline)
            reactions.publish(commit, envelope)
            if here:
                commit.inbox = [row for row in commit.inbox if row.event_id != envelope.event_id]
                when = reactions.reaction_to(envelope)
                with reactions.span(envelope, when, 1):
                    reactions.react(commit, envelope, when, attempt=1)
        if here:
            EVENTS_HANDLED.labels(self.spec.name, envelope.type, "ok").inc()
        return envelope

    def dead_letters(self) -> list[dict[str, object]]:
        return [*self.outbox.dead_letters(), *self.inbox.dead_letters()]

    def redrive(self, where: str, event_id: str) -> int:
        """Send (outbox) or handle (inbox) a dead-lettered event again; how many deliveries or
        handlings that starts (0: nothing was dead-lettered under that id: idempotent). `broker`:
        an event of ours the broker delivered and a consumer refused, published again."""
        if where == "inbox":
            again = int(self.inbox.redrive(event_id))
            self.worker.wake()
        else:
            again = self.outbox.redrive(event_id, delivered_too=where == "broker")
            self.relay.wake()
        if again:
            REDRIVEN.labels(self.spec.name, where).inc()
            log.warning("dead-lettered event %s redriven from the %s (%d)", event_id, where, again)
        return again
