"""The choreographed saga's table, and how the observer reads a saga's end from its events."""

from __future__ import annotations

import pytest

from choreography.flow import ENTRY, EVENT_TYPES, FLOW, LAST, Reaction, derive, reactions_of, subscribers
from common.status import SagaStatus

ERROR = {"reason": "error", "error": "injected fault before_commit"}
TIMEOUT = {"reason": "timeout", "error": "step c: not applied before the deadline"}


def test_every_event_someone_publishes_is_known_and_each_service_reacts_to_its_own_set() -> None:
    assert {w.then for w in FLOW if w.then} | {w.otherwise for w in FLOW if w.otherwise} <= EVENT_TYPES
    assert set(reactions_of("b")) == {"AccountCreated", "PaymentFailed"}
    assert subscribers("SignupTimedOut") == (LAST,), "the last step decides a timed-out saga"
    closes = {(w.service, w.reaction) for w in FLOW if w.event == "PaymentRegistered"}
    assert (ENTRY, Reaction.CLOSE) in closes
    assert "AddressRemovalFailed" in reactions_of(ENTRY), "a saga that ended badly stops its clock too"


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
    ([("AccountCreated", {}), ("SignupTimedOut", {}), ("PaymentFailed", TIMEOUT), ("AddressRemoved", {}),
      ("AccountRemoved", {})], (SagaStatus.COMPENSATED, "b", "timeout")),
    # C failed, B could not undo itself, and the deadline passed later: the failure was C's error.
    ([("AccountCreated", {}), ("AddressStored", {}), ("PaymentFailed", ERROR), ("AddressRemovalFailed", {}),
      ("SignupTimedOut", {})], (SagaStatus.COMPENSATION_FAILED, "c", "error")),
])
def test_derive_reads_the_end_from_the_events(events: list[tuple[str, dict[str, object]]],
                                              expected: tuple[SagaStatus, str | None, str | None]) -> None:
    status, failed_step, reason, _ = derive(events)
    assert (status, failed_step, reason) == expected
