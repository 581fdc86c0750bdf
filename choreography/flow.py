"""The choreographed saga, derived from its declaration: which service reacts to which event,
and what it says next.

Nobody directs it. A saga enters at its first step's service as `<Name>Requested`; each
service does its local transaction and publishes the outcome in the same commit; the next one
reacts. A failure travels back as events and each service undoes itself. The last step
decides: it applied means the saga is complete. The entry service watches the deadline; when
it passes, `<Name>TimedOut` asks the last service to close the saga, and the failure travels
back. For the sign-up (sagas/signup.py) that is:

    SignupRequested   -> a applies     -> AccountCreated    | AccountFailed
    AccountCreated    -> b applies     -> AddressStored     | AddressFailed
    AddressStored     -> c applies     -> PaymentRegistered | PaymentFailed
    PaymentFailed     -> b undoes      -> AddressRemoved    | AddressRemovalFailed
    AddressFailed     -> a undoes      -> AccountRemoved    | AccountRemovalFailed
    AddressRemoved    -> a undoes      -> AccountRemoved    | AccountRemovalFailed
    SignupTimedOut    -> c cancels     -> PaymentFailed
    PaymentRegistered -> a completes the saga: stops the clock, confirms its semantic lock
    AddressRemovalFailed -> a stops the clock (over, if unhappily)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from common.declaration import Declaration, Definitions, SagaDefinition, StepKind, load
from common.status import SagaStatus
from messaging.routes import Routes


class Reaction(StrEnum):
    APPLY = "apply"  # do my local transaction (refused once the saga is closed here or past its deadline)
    COMPENSATE = "compensate"  # undo mine, or leave a tombstone if I never applied
    CANCEL = "cancel"  # the deadline passed: a tombstone, unless mine applied (then the saga completed)
    COMPLETE = "complete"  # the saga completed: stop its clock (the entry), confirm a semantic lock held here
    CLOSE = "close"  # the saga is over, unhappily: stop its clock


@dataclass(frozen=True)
class When:
    """On `event`, `service` does `reaction`, then publishes `then` (or `otherwise` if it could not)."""

    event: str
    service: str
    reaction: Reaction
    then: str | None = None
    otherwise: str | None = None


@dataclass(frozen=True)
class Flow:
    """One definition, choreographed."""

    key: str  # the definition's `name@version`, carried by every event of its sagas
    steps: tuple[str, ...]  # the services, in the order they apply
    fields: dict[str, str]  # service -> the input field it stores
    reactions: tuple[When, ...]
    requested: str
    timed_out: str
    applied: dict[str, str]  # service -> the event that says it applied
    failed: dict[str, str]  # service -> the event that says it failed
    undone: tuple[str, ...]  # the events that say a step was undone
    undo_failed: tuple[str, ...]  # ... that undoing it failed
    retries: dict[str, tuple[int | None, int | None]]  # service -> its step's (retries, compensation
    # retries) as declared; None: the settings' CALL_RETRIES, COMPENSATION_RETRIES
    locks: tuple[str, ...] = ()  # services whose rows are semantic locks under one (PENDING until complete)
    pivot: str | None = None  # the last step's service, if it is the pivot: cancelled, never undone

    @classmethod
    def of(cls, definition: SagaDefinition, fields: dict[str, str]) -> Flow:
        """The flow of `definition`: apply in order, undo in reverse from the step that failed."""
        if any(step.kind is StepKind.RETRIABLE for step in definition.steps):
            raise ValueError(f"{definition.key}: the choreography runs no retriable steps")
        if any(step.name != step.participant for step in definition.steps):
            raise ValueError(f"{definition.key}: choreographed, each step is named after its service")
        events = []
        for step in definition.steps:
            if step.events is None:
                raise ValueError(f"{definition.key}: step {step.name} names no events")
            events.append(step.events)
        steps = tuple(step.participant for step in definition.steps)
        for i, named in enumerate(events[:-1]):
            if named.undone is None or named.undo_failed is None:
                raise ValueError(f"{definition.key}: step {definition.steps[i].name} is undone when a "
                                 "later one fails: it must name its undone and undo_failed events")
        requested, timed_out = definition.requested, definition.timed_out
        reactions = [When(requested, steps[0], Reaction.APPLY, events[0].applied, events[0].failed)]
        reactions += [When(events[i - 1].applied, steps[i], Reaction.APPLY, events[i].applied,
                           events[i].failed) for i in range(1, len(steps))]
        for i in reversed(range(1, len(steps))):  # the failure travels back, one step at a time
            before = events[i - 1]
            reactions.append(When(events[i].failed, steps[i - 1], Reaction.COMPENSATE, before.undone,
                                  before.undo_failed))
            if i < len(steps) - 1:
                reactions.append(When(events[i].undone or "", steps[i - 1], Reaction.COMPENSATE,
                                      before.undone, before.undo_failed))
        reactions.append(When(timed_out, steps[-1], Reaction.CANCEL, then=events[-1].failed))
        locks = tuple(step.participant for step in definition.steps if step.locks)
        reactions += [When(events[-1].applied, service, Reaction.COMPLETE)
                      for service in dict.fromkeys((steps[0], *locks))]
        reactions += [When(named.undo_failed or "", steps[0], Reaction.CLOSE)  # over, if unhappily
                      for named in events[1:-1]]
        return cls(definition.key, steps, {s: fields[s] for s in steps}, tuple(reactions), requested,
                   timed_out, applied={s: e.applied for s, e in zip(steps, events, strict=True)},
                   failed={s: e.failed for s, e in zip(steps, events, strict=True)},
                   undone=tuple(e.undone for e in events[:-1] if e.undone),
                   undo_failed=tuple(e.undo_failed for e in events[:-1] if e.undo_failed),
                   retries={s.participant: (s.retries, s.compensation_retries) for s in definition.steps},
                   locks=locks, pivot=steps[-1] if definition.steps[-1].kind is StepKind.PIVOT else None)

    @property
    def entry(self) -> str:
        return self.steps[0]

    @property
    def last(self) -> str:
        return self.steps[-1]

    # What follows is derived from the fields once, when first asked (each event asks).

    @cached_property
    def event_types(self) -> frozenset[str]:
        return frozenset({self.requested, self.timed_out, *(w.then for w in self.reactions if w.then),
                          *(w.otherwise for w in self.reactions if w.otherwise)})

    @cached_property
    def sources(self) -> dict[str, str]:
        """Event type -> the only service that may publish it."""
        return {self.requested: self.entry, self.timed_out: self.entry,
                **{t: w.service for w in self.reactions for t in (w.then, w.otherwise) if t}}

    @cached_property
    def _reactions_by_service(self) -> dict[str, dict[str, When]]:
        by_service: dict[str, dict[str, When]] = {}
        for when in self.reactions:
            by_service.setdefault(when.service, {})[when.event] = when
        return by_service

    def reactions_of(self, service: str) -> dict[str, When]:
        """What `service` reacts to: event type -> what it does."""
        return self._reactions_by_service.get(service, {})

    def subscribers(self, event_type: str) -> tuple[str, ...]:
        """The services that react to an event of this type."""
        return tuple(when.service for when in self.reactions if when.event == event_type)

    @cached_property
    def ends(self) -> dict[str, SagaStatus]:
        """How the observer reads the saga's end from an event it has seen."""
        return {self.applied[self.last]: SagaStatus.COMPLETED,
                self.failed[self.entry]: SagaStatus.COMPENSATED,
                **({self.undone[0]: SagaStatus.COMPENSATED} if self.undone else {}),
                **dict.fromkeys(self.undo_failed, SagaStatus.COMPENSATION_FAILED)}

    def derive(self, events: list[tuple[str, dict[str, object]]]
               ) -> tuple[SagaStatus, str | None, str | None, str | None]:
        """(status, failed_step, reason, error) of a saga from the events seen so far, in any order."""
        types = {event_type for event_type, _ in events}
        failed = set(self.failed.values())
        ends = self.ends
        failures = [(t, p) for t, p in events if t in failed]
        # What went wrong first decides the reason: a step's own failure, or the deadline (the
        # cancel's failure events say "timeout"); a deadline passing later changes nothing.
        first = next(((t, p) for t, p in events if t == self.timed_out or t in failed), None)
        timed_out = first is not None and (first[0] == self.timed_out or first[1].get("reason") == "timeout")
        undoing = types & {t for t, s in ends.items() if s is not SagaStatus.COMPLETED}
        if self.applied[self.last] in types and not types & set(self.undo_failed):
            return SagaStatus.COMPLETED, None, None, None
        if first is None:  # events arrive in any order: an undo seen before the failure behind it
            return (SagaStatus.COMPENSATING if undoing else SagaStatus.RUNNING), None, None, None
        if types & {t for t, s in ends.items() if s is SagaStatus.COMPENSATION_FAILED}:
            status = SagaStatus.COMPENSATION_FAILED
        elif undoing:
            status = SagaStatus.COMPENSATED
        else:
            status = SagaStatus.COMPENSATING
        if timed_out:  # the step that was still to apply when time ran out
            late = next((step for step in self.steps if self.applied[step] not in types), self.last)
            return status, late, "timeout", f"step {late}: not applied before the deadline"
        first_type, failure = failures[0] if failures else ("", {})
        return status, self.sources.get(first_type), "error", str(failure.get("error") or "") or None


@dataclass(frozen=True)
class Flows:
    """The flow of every definition a process knows, and the one new sign-ups start under. An
    event carries its saga's definition (`"definition": "signup@1"`), so a saga finishes under
    the flow it started with; one without is the default's."""

    known: dict[str, Flow]
    default: Flow

    @classmethod
    def of(cls, declaration: Declaration, definitions: Definitions) -> Flows:
        fields = {service.name: service.field for service in declaration.services}
        known = {d.key: Flow.of(d, fields) for d in definitions}
        flows = cls(known, known[definitions.default.key])
        sources: dict[str, str] = {}
        for flow in known.values():
            for event_type, owner in flow.sources.items():
                if sources.setdefault(event_type, owner) != owner:
                    raise ValueError(f"event {event_type} has two publishers: {sources[event_type]} "
                                     f"and {owner}")
        return flows

    def get(self, key: object) -> Flow:
        """The flow of the definition `key` names (the default's for none: an event from before
        definitions were carried); KeyError for one not known here."""
        if key is None:
            return self.default
        if not isinstance(key, str) or key not in self.known:
            raise KeyError(f"unknown saga definition {key!r}")
        return self.known[key]

    @cached_property
    def event_types(self) -> frozenset[str]:
        return frozenset(t for flow in self.known.values() for t in flow.event_types)

    @cached_property
    def sources(self) -> dict[str, str]:
        return {t: s for flow in self.known.values() for t, s in flow.sources.items()}

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s for flow in self.known.values() for s in flow.steps))

    def subscriptions(self, service: str) -> tuple[str, ...]:
        """Every event type `service` reacts to, in any flow, that another service publishes."""
        sources = self.sources
        return tuple(dict.fromkeys(t for flow in self.known.values() for t in flow.reactions_of(service)
                                   if sources.get(t) != service))

    @cached_property
    def routes(self) -> Routes:
        """What a transport needs: each event's publisher, and what each service takes from others."""
        return Routes(self.sources, {service: self.subscriptions(service) for service in self.services})

    @classmethod
    def load(cls, env: Mapping[str, str]) -> Flows:
        """The flows of the declaration SAGA_DECLARATION names, SAGA_DEFINITION's the default."""
        declaration = load(env)
        return cls.of(declaration, declaration.registry(env))
