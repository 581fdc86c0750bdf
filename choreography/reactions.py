"""What a service does with each event the flow gives it, and the events it publishes.

Every reaction is one local transaction: the row, the event it publishes (outbox), and the
event it handled (inbox) commit together. The service compensates only itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opentelemetry.trace import SpanKind

from choreography.deadlines import Deadlines
from choreography.flow import Flow, Flows, Reaction, When
from common.db import raw_writing, utcnow
from common.declaration import Service
from common.faults import Fault, FaultKind, Sleeps, parse_fault
from common.metrics import HANDLER_DURATION
from common.prepared import Raw
from common.status import LIVE, Isolation, Model
from common.tracing import current_traceparent, parent, span_in
from messaging.events import BadEnvelope, Envelope, Refused, parse_moment
from messaging.inbox import Inbox, InboxRow
from messaging.outbox import Outbox, OutboxRow
from messaging.transport import Transport
from messaging.worker import Postponed
from participant.records import Held, Outcome, RecordStore, WrongModel

log = logging.getLogger(__name__)

# What a saga's events carry along from the sign-up: its faults, deadline, definition and isolation.
CONTEXT = ("fail", "deadline", "definition", "isolation")
LOCK_POLL = 0.1  # seconds between asks while another saga's semantic lock holds an apply back


class AlreadyHandled(Exception):
    """Another handler marked the event handled first; this one's transaction is rolled back."""


@dataclass
class Commit:
    """One local transaction of this service's: its connection, and what it publishes, handed
    to the relay (and, our own events for ourselves, to the inbox worker) once it commits."""

    connection: Raw
    outbox: list[OutboxRow] = field(default_factory=list)
    inbox: list[InboxRow] = field(default_factory=list)


class Reactions:
    """What this service does with each event it reacts to (the saga's flow says which)."""

    def __init__(self, spec: Service, flows: Flows, config: dict[str, Any], records: RecordStore,
                 inbox: Inbox, outbox: Outbox, deadlines: Deadlines, transport: Transport,
                 sleeps: Sleeps) -> None:
        self.me = spec.name
        self.field = spec.field
        self.flows = flows
        self.known_types = flows.event_types
        self.is_entry = any(flow.entry == self.me for flow in flows.known.values())
        self.config = config
        self.records = records
        self.inbox = inbox
        self.outbox = outbox
        self.deadlines = deadlines
        self.transport = transport
        self.sleeps = sleeps
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
        """The step's retries as declared (or the settings' defaults), as the orchestrator allows."""
        when = self.reaction_to(envelope)
        retries, compensation_retries = self.flow_of(envelope).retries[self.me]
        if when.reaction is Reaction.APPLY:
            return 1 + (self.config["CALL_RETRIES"] if retries is None else retries)
        return 1 + (self.config["COMPENSATION_RETRIES"] if compensation_retries is None
                    else compensation_retries)

    def handle(self, envelope: Envelope, attempt: int) -> None:
        """Act out the fault the sign-up asked of this step, if any; then react, in one commit."""
        when = self.reaction_to(envelope)
        with self.span(envelope, when, attempt), self._refusing_other_models():
            self._act_out(envelope, when, self._fault(envelope), attempt)
            with self.commit() as commit:
                self.react(commit, envelope, when, attempt)

    def handles_at_once(self, envelope: Envelope) -> bool:
        """May the event be handled in the commit that takes it in? Only with no fault to act
        out here: a sleep or a failure belongs on the worker's threads, not on a delivery's."""
        return self._fault(envelope) is None

    def handle_in(self, commit: Commit, envelope: Envelope) -> None:
        """Handle an event in the caller's commit, as its first attempt (`handles_at_once`),
        which took it into the inbox as handled (`Inbox.add(handled=True)`): as `handle`, with
        nothing to act out; raises what `handle` would (Postponed, Refused, ...)."""
        when = self.reaction_to(envelope)
        with self.span(envelope, when, 1), self._refusing_other_models():
            self.react(commit, envelope, when, attempt=1, marked=True)

    def react(self, commit: Commit, envelope: Envelope, when: When, attempt: int,
              marked: bool = False) -> None:
        """The reaction itself, in the caller's commit, which also marks the event handled
        (`marked`: the caller wrote it handled already)."""
        if when.reaction is Reaction.APPLY:
            self._apply(commit, envelope, when)
        elif when.reaction is Reaction.COMPENSATE:
            self._compensate(commit, envelope, when)
        elif when.reaction is Reaction.CANCEL:
            self._cancel(commit, envelope, when)
        elif when.reaction is Reaction.COMPLETE:
            self._complete(commit, envelope)
        else:
            self._close_clock(commit, envelope.saga_id)
        if not marked and not self.inbox.handled(commit.connection, envelope.event_id, attempt):
            raise AlreadyHandled(envelope.event_id)

    def give_up(self, envelope: Envelope, attempt: int, error: str) -> None:
        """The attempts ran out: undo what may have committed, and say this step failed."""
        when = self.reaction_to(envelope)
        with self.span(envelope, when, attempt), self._refusing_other_models(), self.commit() as commit:
            if when.reaction is Reaction.APPLY:
                self._fail_here(commit, envelope, when, {"reason": "error", "error": error})
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
            fault.undoing("compensation", attempt)
            return
        if when.reaction is not Reaction.APPLY:
            return
        saga_id = envelope.saga_id
        # The saga's deadline is its caller's timeout: a timeout outlasts it, then tries to commit late.
        deadline_in = (parse_moment(str(envelope.payload["deadline"])) - utcnow()).total_seconds()
        pause = fault.sleep_before_commit(max(0.0, deadline_in), self.config["FAULT_LATE_MARGIN"],
                                          self.config["LAB_DELAY"], attempt)
        fault.before_commit(saga_id, attempt, pause, self.sleeps)
        if fault.fails_after_commit():  # the row commits on its own; the handler then fails
            try:
                self.records.apply(saga_id, str(envelope.payload["input"][self.field]), Model.CHOREOGRAPHY,
                                   self._pending(envelope))
            except Held as held:
                if held.locked:  # another saga's semantic lock: as the apply itself would, wait
                    raise Postponed(str(held), LOCK_POLL) from None
                return  # taken for good: the apply itself refuses it
            fault.after_commit(attempt)

    def _apply(self, commit: Commit, envelope: Envelope, when: When) -> None:
        saga_id, payload = envelope.saga_id, envelope.payload
        if utcnow() > parse_moment(str(payload["deadline"])):  # nothing applies after the deadline, anywhere
            undone = self._fail_here(commit, envelope, when, {
                "reason": "timeout", "error": f"step {self.me}: the deadline passed"})
            if undone.changed:
                self._close_clock(commit, saga_id)
            log.warning("saga %s: apply refused, the saga's deadline passed", saga_id)
            return
        value = str(payload["input"][self.field])
        try:
            status = self.records.apply_in(commit.connection, saga_id, value, Model.CHOREOGRAPHY,
                                           self._pending(envelope)).status
        except Held as held:
            if held.locked:  # another saga's semantic lock: ask again until it is released (or the deadline)
                raise Postponed(str(held), LOCK_POLL) from None
            self._fail_here(commit, envelope, when, {"reason": "error", "error": f"step {self.me}: {held}"})
            self._close_clock(commit, saga_id)
            log.warning("saga %s: apply refused for good: %s", saga_id, held)
            return
        if status not in LIVE:  # closed here already (a late apply)
            log.info("saga %s: apply refused, the row is %s", saga_id, status.value)
            return
        self._go_on(commit, envelope, when)
        log.info("saga %s: applied", saga_id)

    def _go_on(self, commit: Commit, envelope: Envelope, when: When) -> None:
        """This step applied: say so, with the input the steps after it need."""
        payload = envelope.payload
        onward = {k: v for k, v in payload["input"].items() if k != self.field}
        if when.then:
            self._emit(commit, when.then, envelope, {**payload, "input": onward})

    def _fail_here(self, commit: Commit, envelope: Envelope, when: When, payload: dict[str, Any]) -> Outcome:
        """This step will not apply: undo its row (a tombstone if it never applied) and say it
        failed. A pivot is never undone, only cancelled: a tombstone if it never applied; if it
        applied after all (it committed, then failed), the saga goes on as if it had just applied."""
        if self.me != self.flow_of(envelope).pivot:
            return self._undo_and_report(commit, envelope, when.otherwise, payload)
        outcome = self.records.cancel_in(commit.connection, envelope.saga_id, Model.CHOREOGRAPHY)
        if outcome.changed and when.otherwise:
            self._emit(commit, when.otherwise, envelope, payload)
        elif not outcome.changed and outcome.status in LIVE:
            self._go_on(commit, envelope, when)
            log.warning("saga %s: the pivot had applied after all; the saga goes on", envelope.saga_id)
        return outcome

    def _pending(self, envelope: Envelope) -> bool:
        """Does this service's row of the saga hold a semantic lock (PENDING until it completes)?"""
        return (self.me in self.flow_of(envelope).locks
                and envelope.payload.get("isolation") == Isolation.SEMANTIC_LOCK)

    def _complete(self, commit: Commit, envelope: Envelope) -> None:
        """The saga completed: a semantic lock held here is released (PENDING -> APPLIED), and
        the entry stops the saga's clock. (A saga that runs without one left its row APPLIED.)"""
        if self._pending(envelope):
            outcome = self.records.confirm_in(commit.connection, envelope.saga_id, Model.CHOREOGRAPHY)
            if outcome is not None and outcome.changed:
                log.info("saga %s: confirmed (its semantic lock released)", envelope.saga_id)
        self._close_clock(commit, envelope.saga_id)

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
        in flight while this ran) means the saga completed in time. A step closed already
        (applied, or cancelled when asked before) sends again what of the saga it could not
        deliver: the entry may be waiting for it (and A asks again while the saga stays open)."""
        outcome = self.records.cancel_in(commit.connection, envelope.saga_id, Model.CHOREOGRAPHY)
        if outcome.changed:
            if when.then:
                self._emit(commit, when.then, envelope,
                           {"reason": "timeout", "error": f"step {self.me}: not applied before the deadline"})
            log.warning("saga %s: timed out before %s applied; cancelled", envelope.saga_id, self.me)
        else:  # closed here already, cancelled or applied: what it told may not have arrived
            again = self.outbox.redrive_saga(commit.connection, envelope.saga_id)
            if again:
                log.warning("saga %s: closed here already when its deadline passed; sending %d "
                            "undelivered event(s) again", envelope.saga_id, again)

    # Publishing --------------------------------------------------------------------------------

    def _emit(self, commit: Commit, event_type: str, cause: Envelope, payload: dict[str, Any]) -> None:
        """Publish an event of ours, in the caller's transaction (the transactional outbox). The
        saga's context (its faults, deadline and definition) goes along with every event."""
        context: dict[str, Any] = {key: cause.payload[key] for key in CONTEXT if key in cause.payload}
        envelope = Envelope(event_type, cause.saga_id, self.me, {**context, **payload},
                            traceparent=current_traceparent() or cause.traceparent)
        self.publish(commit, envelope)

    def publish(self, commit: Commit, envelope: Envelope, handle_here: bool = False) -> bool:
        """Publish an event in the commit: to the services that react to it, and into our own
        inbox if we do, for the worker, or (`handle_here`) as handled by the caller in this
        commit; True if it was taken in here for the caller to handle (`handle_in`)."""
        reacting = self.flow_of(envelope).subscribers(envelope.type)
        taken = False
        if self.me in reacting:  # our own event, for ourselves: straight into our inbox
            row = self.inbox.add(commit.connection, envelope, handled=handle_here)
            if row is not None and not handle_here:
                commit.inbox.append(row)
            taken = row is not None and handle_here
        others = tuple(service for service in reacting if service != self.me)
        commit.outbox += self.outbox.add(commit.connection, envelope, self.transport.destinations(others))
        return taken

    def time_out(self, saga_id: str, again_after: timedelta | None) -> bool:
        """For the deadline watcher: publish <Name>TimedOut for a saga still open past its
        deadline, in the transaction that records it (`again_after`: for a saga stuck since, at
        most once in that long), in the saga's trace (the sign-up in our inbox has it); False if
        the saga closed, or was dealt with, meanwhile."""
        with self.commit() as commit:
            connection = commit.connection
            if again_after is not None:
                due = self.deadlines.nudge(connection, saga_id, again_after)
            else:
                due = self.deadlines.time_out(connection, saga_id)
            if not due:
                return False
            requested = next(filter(None, (self.inbox.first_of(connection, saga_id, kind) for kind in
                                           dict.fromkeys(f.requested for f in self.flows.known.values()))),
                             None)
            definition = requested.payload.get("definition") if requested else None
            flow = self.flows.get(definition)
            self.publish(commit, Envelope(flow.timed_out, saga_id, self.me,
                                          {"definition": definition} if definition else {},
                                          traceparent=requested.traceparent if requested else None))
        return True

    def _close_clock(self, commit: Commit, saga_id: str) -> None:
        if self.is_entry:
            self.deadlines.close(commit.connection, saga_id)

    # Helpers ----------------------------------------------------------------------------------

    def flow_of(self, envelope: Envelope) -> Flow:
        """The flow of the definition the event's saga started under; BadEnvelope for one unknown here."""
        try:
            return self.flows.get(envelope.payload.get("definition"))
        except KeyError as error:
            raise BadEnvelope(f"{error.args[0]}: this service runs "
                              f"{', '.join(self.flows.known)}", "unknown_definition") from None

    def reaction_to(self, envelope: Envelope) -> When:
        """What this service does on the event; BadEnvelope if it takes no such event."""
        when = self.flow_of(envelope).reactions_of(self.me).get(envelope.type)
        if when is None:
            raise BadEnvelope(f"service {self.me} does not react to {envelope.type}", "not_taken")
        return when

    def _fault(self, envelope: Envelope) -> Fault | None:
        """The fault the saga asks of this step, if fault injection is on (the lab's own, always:
        only the lab's signed sign-up can ask for it)."""
        raw = (envelope.payload.get("fail") or {}).get(self.me)
        if not raw:
            return None
        fault = parse_fault(str(raw))
        return fault if self.config["FAULTS_ENABLED"] or fault.kind is FaultKind.LAB else None
