"""The choreographed saga's flow, derived from the declaration, and how the observer reads a
saga's end from its events."""

from __future__ import annotations

import pytest

from choreography.flow import Flow, Flows, Reaction, When
from common.declaration import Declaration, Events, SagaDefinition, Service, Step, StepKind
from common.status import SagaStatus
from sagas.signup import DECLARATION, SERVICES, SIGNUP_V1

ERROR = {"reason": "error", "error": "injected fault before_commit"}
TIMEOUT = {"reason": "timeout", "error": "step c: not applied before the deadline"}
A, B, C = "a", "b", "c"
APPLY, UNDO, CANCEL, CLOSE = Reaction.APPLY, Reaction.COMPENSATE, Reaction.CANCEL, Reaction.CLOSE
COMPLETE = Reaction.COMPLETE
FLOW = Flows.load({}).default

# The sign-up's flow as it was written by hand before it was derived: the derivation must give it
# (with the saga's completion at A a reaction of its own since the semantic lock).
BY_HAND = (
    When("SignupRequested", A, APPLY, then="AccountCreated", otherwise="AccountFailed"),
    When("AccountCreated", B, APPLY, then="AddressStored", otherwise="AddressFailed"),
    When("AddressStored", C, APPLY, then="PaymentRegistered", otherwise="PaymentFailed"),
    When("PaymentFailed", B, UNDO, then="AddressRemoved", otherwise="AddressRemovalFailed"),
    When("AddressFailed", A, UNDO, then="AccountRemoved", otherwise="AccountRemovalFailed"),
    When("AddressRemoved", A, UNDO, then="AccountRemoved", otherwise="AccountRemovalFailed"),
    When("SignupTimedOut", C, CANCEL, then="PaymentFailed"),
    When("PaymentRegistered", A, COMPLETE),  # was CLOSE: now it also confirms A's semantic lock
    When("AddressRemovalFailed", A, CLOSE),
)


def test_the_sign_up_is_derived_as_it_was_written_by_hand() -> None:
    assert FLOW.reactions == BY_HAND
    assert (FLOW.key, FLOW.steps, FLOW.entry, FLOW.last) == ("signup@1", (A, B, C), A, C)
    assert FLOW.fields == {A: "username", B: "address", C: "payment"}
    assert set(FLOW.reactions_of(B)) == {"AccountCreated", "PaymentFailed"}
    assert FLOW.subscribers("SignupTimedOut") == (C,), "the last step decides a timed-out saga"
    assert FLOW.sources["PaymentRegistered"] == C and FLOW.sources["SignupTimedOut"] == A
    assert FLOW.ends["AccountRemoved"] is SagaStatus.COMPENSATED


def test_a_fourth_step_is_applied_after_c_and_undone_before_it() -> None:
    declaration = Declaration(
        (*SERVICES, Service("d", table="table_d", column="email", field="email", port=5004)),
        definitions=(SagaDefinition("signup", 1, steps=(*SIGNUP_V1.steps, Step(
            "d", participant="d", receives=("email",), does="send the welcome", undo="retract it",
            events=Events.named("Welcome", "Sent"))),),), default="signup@1")
    flow = Flows.of(declaration, declaration.registry({})).default
    assert {When("PaymentRegistered", "d", APPLY, then="WelcomeSent", otherwise="WelcomeFailed"),
            When("WelcomeFailed", C, UNDO, then="PaymentRemoved", otherwise="PaymentRemovalFailed"),
            When("PaymentRemoved", B, UNDO, then="AddressRemoved", otherwise="AddressRemovalFailed"),
            When("SignupTimedOut", "d", CANCEL, then="WelcomeFailed"),
            When("WelcomeSent", A, COMPLETE), When("PaymentRemovalFailed", A, CLOSE)} <= set(flow.reactions)
    assert flow.derive([("WelcomeSent", {})])[0] is SagaStatus.COMPLETED
    assert flow.derive([("PaymentRegistered", {})])[0] is SagaStatus.RUNNING


def test_what_the_choreography_cannot_run_is_refused_when_it_is_declared() -> None:
    fields = {s.name: s.field for s in SERVICES}
    with pytest.raises(ValueError, match="retriable"):
        Flow.of(SagaDefinition("x", 1, steps=(SIGNUP_V1.steps[0], Step(
            "b", participant="b", receives=("address",), does="x", kind=StepKind.RETRIABLE,
            events=Events("Ok", "No")))), fields)
    with pytest.raises(ValueError, match="names no events"):
        Flow.of(SagaDefinition("x", 1, steps=(Step("a", participant="a", receives=("username",), does="x",
                                                   undo="y"),)), fields)


def test_every_definition_runs_under_its_own_flow_and_an_unknown_one_is_refused() -> None:
    flows = Flows.of(DECLARATION, DECLARATION.registry({}))
    assert set(flows.known) == {"signup@1", "signup@2"}
    assert flows.get(None) is flows.default and flows.get("signup@2").key == "signup@2"
    with pytest.raises(KeyError):
        flows.get("signup@9")


@pytest.mark.parametrize(("events", "expected"), [
    ([("SignupRequested", {})], (SagaStatus.RUNNING, None, None)),
    ([("SignupRequested", {}), ("AccountCreated", {}), ("AddressStored", {}), ("PaymentRegistered", {})],
     (SagaStatus.COMPLETED, None, None)),
    ([("PaymentRegistered", {}), ("SignupTimedOut", {})], (SagaStatus.COMPLETED, None, None)),
    ([("SignupRequested", {}), ("AccountCreated", {}), ("AddressFailed", ERROR)],
     (SagaStatus.COMPENSATING, "b", "error")),
    ([("AccountCreated", {}), ("AddressFailed", ERROR), ("AccountRemoved", {})],
     (SagaStatus.COMPENSATED, "b", "error")),
    ([("SignupRequested", {}), ("AccountFailed", ERROR)], (SagaStatus.COMPENSATED, "a", "error")),
    # A's undo seen before B's failure that asked for it: not over until the failure is seen.
    ([("AccountCreated", {}), ("AccountRemoved", {})], (SagaStatus.COMPENSATING, None, None)),
    ([("AccountCreated", {}), ("SignupTimedOut", {}), ("PaymentFailed", TIMEOUT), ("AddressRemoved", {}),
      ("AccountRemoved", {})], (SagaStatus.COMPENSATED, "b", "timeout")),
    # C failed, B could not undo itself, and the deadline passed later: the failure was C's error.
    ([("AccountCreated", {}), ("AddressStored", {}), ("PaymentFailed", ERROR), ("AddressRemovalFailed", {}),
      ("SignupTimedOut", {})], (SagaStatus.COMPENSATION_FAILED, "c", "error")),
])
def test_derive_reads_the_end_from_the_events(events: list[tuple[str, dict[str, object]]],
                                              expected: tuple[SagaStatus, str | None, str | None]) -> None:
    status, failed_step, reason, _ = FLOW.derive(events)
    assert (status, failed_step, reason) == expected
