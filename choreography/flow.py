"""The choreographed sign-up, whole: which service reacts to which event, and what it says next.

Nobody directs it. A sign-up enters at A as SignupRequested; each service does its local
transaction and publishes the outcome in the same commit; the next one reacts. A failure
travels back as events and each service undoes itself. The last step decides: C applied
means the sign-up is complete. The entry service watches the deadline; when it passes,
SignupTimedOut asks the last service to close the saga, and the failure travels back.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from common.status import SagaStatus


class Reaction(StrEnum):
    APPLY = "apply"  # do my local transaction (refused once the saga is closed here or past its deadline)
    COMPENSATE = "compensate"  # undo mine, or leave a tombstone if I never applied
    CANCEL = "cancel"  # the deadline passed: a tombstone, unless mine applied (then the saga completed)
    CLOSE = "close"  # the saga completed: stop its clock


@dataclass(frozen=True)
class When:
    """On `event`, `service` does `reaction`, then publishes `then` (or `otherwise` if it could not)."""

    event: str
    service: str
    reaction: Reaction
    then: str | None = None
    otherwise: str | None = None


A, B, C = "a", "b", "c"
FLOW = (
    When("SignupRequested", A, Reaction.APPLY, then="AccountCreated", otherwise="AccountFailed"),
    When("AccountCreated", B, Reaction.APPLY, then="AddressStored", otherwise="AddressFailed"),
    When("AddressStored", C, Reaction.APPLY, then="PaymentRegistered", otherwise="PaymentFailed"),
    When("PaymentFailed", B, Reaction.COMPENSATE, then="AddressRemoved",
         otherwise="AddressRemovalFailed"),
    When("AddressFailed", A, Reaction.COMPENSATE, then="AccountRemoved",
         otherwise="AccountRemovalFailed"),
    When("AddressRemoved", A, Reaction.COMPENSATE, then="AccountRemoved",
         otherwise="AccountRemovalFailed"),
    When("SignupTimedOut", C, Reaction.CANCEL, then="PaymentFailed"),
    When("PaymentRegistered", A, Reaction.CLOSE),
    When("AddressRemovalFailed", A, Reaction.CLOSE),  # over, if unhappily: no deadline to watch
)

STEPS = (A, B, C)  # in the order they apply
ENTRY, LAST = STEPS[0], STEPS[-1]
FIELDS = {A: "username", B: "address", C: "payment"}  # the sign-up field each service stores
APPLIED = {A: "AccountCreated", B: "AddressStored", C: "PaymentRegistered"}
FAILED = {A: "AccountFailed", B: "AddressFailed", C: "PaymentFailed"}
REQUESTED, TIMED_OUT = "SignupRequested", "SignupTimedOut"

# How the observer reads the saga's end from the events it has seen.
ENDS = {"PaymentRegistered": SagaStatus.COMPLETED, "AccountRemoved": SagaStatus.COMPENSATED,
        "AccountFailed": SagaStatus.COMPENSATED, "AddressRemovalFailed": SagaStatus.COMPENSATION_FAILED,
        "AccountRemovalFailed": SagaStatus.COMPENSATION_FAILED}

EVENT_TYPES = frozenset({REQUESTED, TIMED_OUT, *(w.then for w in FLOW if w.then),
                         *(w.otherwise for w in FLOW if w.otherwise)})
SOURCES = {REQUESTED: ENTRY, TIMED_OUT: ENTRY,
           **{t: w.service for w in FLOW for t in (w.then, w.otherwise) if t}}


def reactions_of(service: str) -> dict[str, When]:
    """What `service` reacts to: event type -> what it does."""
    return {when.event: when for when in FLOW if when.service == service}


def subscribers(event_type: str) -> tuple[str, ...]:
    """The services that react to an event of this type."""
    return tuple(when.service for when in FLOW if when.event == event_type)


def derive(events: list[tuple[str, dict[str, object]]]
           ) -> tuple[SagaStatus, str | None, str | None, str | None]:
    """(status, failed_step, reason, error) of a saga from the events seen so far, in any order."""
    types = {event_type for event_type, _ in events}
    failures = [(t, p) for t, p in events if t in FAILED.values()]
    # What went wrong first decides the reason: a step's own failure, or the deadline (the
    # cancel's failure events say "timeout"); a deadline passing later changes nothing.
    first = next(((t, p) for t, p in events if t == TIMED_OUT or t in FAILED.values()), None)
    timed_out = first is not None and (first[0] == TIMED_OUT or first[1].get("reason") == "timeout")
    if types & {t for t, s in ENDS.items() if s is SagaStatus.COMPENSATION_FAILED}:
        status = SagaStatus.COMPENSATION_FAILED
    elif "PaymentRegistered" in types:
        return SagaStatus.COMPLETED, None, None, None
    elif types & {t for t, s in ENDS.items() if s is SagaStatus.COMPENSATED}:
        status = SagaStatus.COMPENSATED
    elif first is not None:
        status = SagaStatus.COMPENSATING
    else:
        return SagaStatus.RUNNING, None, None, None
    if timed_out:  # the step that was still to apply when time ran out
        late = next((step for step in STEPS if APPLIED[step] not in types), LAST)
        return status, late, "timeout", f"step {late}: not applied before the deadline"
    first_type, failure = failures[0] if failures else ("", {})
    return status, SOURCES.get(first_type), "error", str(failure.get("error") or "") or None
