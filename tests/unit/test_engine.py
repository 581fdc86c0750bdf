"""The engine's order of work, with scripted participants and a real (SQLite) saga log.

The sign-up (all steps compensatable) and a second definition with a pivot and a
retriable step, to prove what the standard saga kinds mean here.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

import orchestrator.engine
from common.db import make_engine
from common.declaration import Definitions, SagaDefinition, Service, Step, StepKind
from common.status import Isolation, SagaStatus
from orchestrator.engine import Defaults, SagaEngine
from orchestrator.migrate import upgrade
from orchestrator.model import Event, Lease, LeaseLost, Run, Transition
from orchestrator.recovery import Recovery
from orchestrator.store import SagaStore, sagas
from sagas.signup import SIGNUP_V1, SIGNUP_V2
from tests.support.people import fresh_user
from tests.support.scripted import ScriptedParticipants

FAST = Defaults(timeout=1, retries=2, compensation_retries=2, backoff=0, backoff_max=0, jitter=0)

TRIP = SagaDefinition("trip", 1, steps=(
    Step("hotel", participant="hotel", receives=("name",), does="book a room",
         undo="cancel the booking"),
    Step("card", participant="card", receives=("card",), kind=StepKind.PIVOT, does="charge the card"),
    Step("email", participant="email", receives=("name", "email"), kind=StepKind.RETRIABLE,
         does="send the confirmation"),
))
TRIP_INPUT = {"name": "ada", "card": "visa", "email": "ada@example.org"}


def make(tmp_path: Path, script: dict[tuple[str, str], list[str]],
         known: tuple[SagaDefinition, ...] = (SIGNUP_V1, SIGNUP_V2),
         default: str = "signup@1") -> tuple[SagaEngine, ScriptedParticipants]:
    database = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    upgrade(database)
    participants = ScriptedParticipants(script)
    definitions = Definitions.of(known, default)
    urls = {name: f"http://x/{name}" for name in definitions.participants}
    engine = SagaEngine(definitions, urls, SagaStore(database, 30), participants,  # type: ignore[arg-type]
                        owner="me", defaults=FAST)
    return engine, participants


def test_success_invokes_in_order_sending_each_participant_only_its_fields(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {})
    user = fresh_user()
    saga = engine.drive(engine.create(user, {}).id)
    assert saga.status is SagaStatus.COMPLETED and saga.lease_owner is None
    logged = engine.store.get(saga.id)
    assert logged is not None
    assert replace(logged, updated_at=None) == replace(saga, updated_at=None), \
        "what drive returns is what the log holds"
    assert participants.actions("invoke") == ["a", "b", "c"]
    assert participants.payloads == {"a": {"saga_id": saga.id, "username": user["username"]},
                                     "b": {"saga_id": saga.id, "address": user["address"]},
                                     "c": {"saga_id": saga.id, "payment": user["payment"]}}


@pytest.mark.parametrize(("failing", "compensated"), [
    ("a", ["a"]), ("b", ["b", "a"]), ("c", ["c", "b", "a"])])
def test_failure_compensates_from_the_failed_step_backwards(tmp_path: Path, failing: str,
                                                            compensated: list[str]) -> None:
    engine, participants = make(tmp_path, {(failing, "invoke"): ["error"]})
    saga = engine.drive(engine.create(fresh_user(), {}).id)
    assert (saga.status, saga.failed_step, saga.reason) == (SagaStatus.COMPENSATED, failing, "error")
    assert participants.numbers(failing, "invoke") == [1, 2, 3], "CALL_RETRIES=2: three attempts"
    assert participants.actions("compensate") == compensated


def test_a_rejected_invoke_is_not_retried(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("b", "invoke"): ["rejected"]})
    saga = engine.drive(engine.create(fresh_user(), {}).id)
    assert saga.status is SagaStatus.COMPENSATED
    assert participants.numbers("b", "invoke") == [1], "a 4xx would answer the same again"


def test_timeout_is_the_reason(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, {("b", "invoke"): ["timeout"]})
    saga = engine.drive(engine.create(fresh_user(), {}).id)
    assert (saga.status, saga.reason) == (SagaStatus.COMPENSATED, "timeout")


def test_a_failing_compensation_stops_in_order(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("c", "invoke"): ["error"], ("b", "compensate"): ["error"]})
    saga = engine.drive(engine.create(fresh_user(), {}).id)
    assert saga.status is SagaStatus.COMPENSATION_FAILED and saga.current_step == 1
    assert "a" not in participants.actions("compensate"), "A is not undone before B is"
    assert saga.compensation_error == "compensation of step b failed at attempt 3: error"


def test_a_driver_that_lost_its_lease_stops_at_its_next_write(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {})
    saga = engine.create(fresh_user(), {})
    real_attempt = participants.attempt

    def taken_during_the_call(*args: Any, **kwargs: Any) -> Any:
        with engine.store.engine.begin() as connection:  # another orchestrator takes it meanwhile
            connection.execute(update(sagas).where(sagas.c.id == saga.id)
                               .values(lease_owner="other", lease_epoch=2))
        return real_attempt(*args, **kwargs)

    participants.attempt = taken_during_the_call  # type: ignore[method-assign]
    assert engine.drive(saga.id).status is SagaStatus.RUNNING
    assert participants.actions("invoke") == ["a"], "it stops at the first write it cannot make"
    assert engine.store.events(saga.id) == [], "and that write left nothing behind"


def test_a_stale_epoch_cannot_write_even_under_the_same_owner(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, {})
    saga = engine.create(fresh_user(), {})
    assert saga.lease == Lease("me", 1)
    with engine.store.engine.begin() as connection:  # its lease ran out; it was claimed again
        connection.execute(update(sagas).where(sagas.c.id == saga.id).values(lease_expires_at=None))
    assert engine.store.claim(saga.id, "me")
    with pytest.raises(LeaseLost):
        engine.store.record_attempt(saga.id, Lease("me", 1), Event("a", "invoke", 1, 200, "ok", 1),
                                    Transition(SagaStatus.RUNNING, 1))
    engine.store.record_attempt(saga.id, Lease("me", 2), Event("a", "invoke", 1, 200, "ok", 1))
    assert len(engine.store.events(saga.id)) == 1


def test_a_saga_leased_to_another_is_not_driven(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {})
    saga = engine.create(fresh_user(), {})
    with engine.store.engine.begin() as connection:
        connection.execute(update(sagas).where(sagas.c.id == saga.id).values(lease_owner="other"))
    assert engine.drive(saga.id, Run.RESUMED).status is SagaStatus.RUNNING
    assert participants.calls == []


@pytest.mark.parametrize(("made", "numbers"), [(0, [1, 2, 3]), (1, [2, 3]), (3, [4]), (7, [8])])
def test_a_resumed_step_counts_the_attempts_already_logged(tmp_path: Path, made: int,
                                                           numbers: list[int]) -> None:
    engine, participants = make(tmp_path, {("a", "invoke"): ["error"]})
    saga = engine.create(fresh_user(), {})
    for number in range(1, made + 1):
        engine.store.record_attempt(saga.id, Lease("me", 1), Event("a", "invoke", number, 500, "error", 1))
    assert engine.drive(saga.id, Run.RESUMED).status is SagaStatus.COMPENSATED
    assert participants.numbers("a", "invoke") == numbers, \
        "retries left = retries - attempts made, but always one attempt"
    assert participants.numbers("a", "compensate") == [1], "the next call starts afresh"


def test_waiting_for_a_semantic_lock_spends_no_retries_and_the_saga_confirms_it(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("a", "invoke"): ["locked", "locked", "locked", "ok"],
                                           ("a", "confirm"): ["error", "ok"]})
    saga = engine.drive(engine.create(fresh_user(), {}, isolation=Isolation.SEMANTIC_LOCK).id)
    assert saga.status is SagaStatus.COMPLETED
    assert participants.numbers("a", "invoke") == [1, 2, 3, 4], "CALL_RETRIES=2, yet four attempts"
    assert participants.payloads["a"] == {"saga_id": saga.id}, "the confirm sends the saga id alone"
    assert participants.numbers("a", "confirm") == [1, 2], "retried until it succeeds"
    assert [c for c in participants.calls if c[1] == "confirm"] == [("a", "confirm", 1), ("a", "confirm", 2)]
    assert participants.calls[-1][1] == "confirm", "after the last step"


def test_a_lock_is_asked_about_less_and_less_often(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """0.1 s, then twice as long each time, up to the 1 s of A's Retry-After: a saga waiting out
    another's lock fills its timeline with tens of attempts, not hundreds."""
    engine, participants = make(tmp_path, {("a", "invoke"): ["locked"] * 6 + ["ok"]})
    pauses: list[float] = []
    monkeypatch.setattr(orchestrator.engine.time, "sleep", pauses.append)
    saga = engine.drive(engine.create(fresh_user(), {}, isolation=Isolation.SEMANTIC_LOCK).id)
    assert saga.status is SagaStatus.COMPLETED
    assert participants.numbers("a", "invoke") == [1, 2, 3, 4, 5, 6, 7]
    assert pauses == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_a_resumed_step_does_not_count_the_attempts_a_lock_held_back(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("a", "invoke"): ["error"]})
    saga = engine.create(fresh_user(), {}, isolation=Isolation.SEMANTIC_LOCK)
    for number in range(1, 6):
        engine.store.record_attempt(saga.id, Lease("me", 1), Event("a", "invoke", number, 409, "locked", 1))
    engine.store.record_attempt(saga.id, Lease("me", 1), Event("a", "invoke", 6, 500, "error", 1))
    assert engine.drive(saga.id, Run.RESUMED).status is SagaStatus.COMPENSATED
    assert participants.numbers("a", "invoke") == [7, 8], "one of its three attempts was spent, not six"


def test_a_refused_confirm_is_a_failed_compensation_for_a_person(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("a", "confirm"): ["rejected"]})
    saga = engine.drive(engine.create(fresh_user(), {}, isolation=Isolation.SEMANTIC_LOCK).id)
    assert (saga.status, saga.failed_step, saga.current_step) == (SagaStatus.COMPENSATION_FAILED, "a", 2)
    assert saga.compensation_error is not None and "confirm of step a refused" in saga.compensation_error
    assert participants.numbers("a", "confirm") == [1], "a refusal is not retried"
    assert engine.reopen(saga.id)  # a person retries it: every step is undone
    assert engine.drive(saga.id, Run.REOPENED).status is SagaStatus.COMPENSATED
    assert participants.actions("compensate") == ["c", "b", "a"]


def test_a_reopened_compensation_gets_a_full_set_of_retries(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("a", "compensate"): ["error", "error", "ok"]})
    saga = engine.create(fresh_user(), {})
    with engine.store.engine.begin() as connection:  # as if compensating A had failed 6 times
        connection.execute(update(sagas).where(sagas.c.id == saga.id)
                           .values(status="COMPENSATION_FAILED", current_step=0))
    for number in range(1, 7):
        engine.store.record_attempt(saga.id, Lease("me", 1),
                                    Event("a", "compensate", number, 500, "error", 1))
    assert engine.store.reopen_failed_compensation(saga.id, "me")
    assert engine.drive(saga.id, Run.REOPENED).status is SagaStatus.COMPENSATED
    assert participants.numbers("a", "compensate") == [7, 8, 9], "numbering goes on; retries start over"


def test_recovery_never_starts_a_second_driver_for_a_saga_this_process_holds(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {})
    saga = engine.create(fresh_user(), {})
    with engine.store.engine.begin() as connection:  # its lease ran out while it waited here
        connection.execute(update(sagas).where(sagas.c.id == saga.id).values(lease_expires_at=None))
    recovery = Recovery(engine, interval=1, retry_after=30, max_rounds=1)
    with engine._busy_guard:
        engine._busy.add(saga.id)  # queued on this process's background threads
    assert recovery.scan_once() == 0 and participants.calls == []
    with engine._busy_guard:
        engine._busy.discard(saga.id)
    assert recovery.scan_once() == 1, "once nothing here holds it, recovery claims it"
    engine.background.shutdown(wait=True)
    logged = engine.store.get(saga.id)
    assert logged is not None and logged.status is SagaStatus.COMPLETED
    assert not engine.busy(saga.id)


def test_the_recovery_loop_reopens_a_failed_compensation_at_most_max_rounds_times(tmp_path: Path) -> None:
    engine, participants = make(tmp_path, {("c", "invoke"): ["error"], ("b", "compensate"): ["error"]})
    saga = engine.drive(engine.create(fresh_user(), {}).id)
    assert saga.status is SagaStatus.COMPENSATION_FAILED
    recovery = Recovery(engine, interval=1, retry_after=0, max_rounds=2)
    claimed = []
    for _ in range(4):
        claimed.append(recovery.scan_once())
        engine.background.shutdown(wait=True)  # let the round finish before the next scan
        engine.background = type(engine.background)(2)
    assert claimed == [1, 1, 0, 0], "two rounds, then it is left for a person"
    logged = engine.store.get(saga.id)
    assert logged is not None
    assert (logged.status, logged.compensation_rounds) == (SagaStatus.COMPENSATION_FAILED, 2)
    assert participants.numbers("b", "compensate") == list(range(1, 10)), "three attempts a round"


# Versions -----------------------------------------------------------------------------------

def test_a_saga_finishes_under_the_version_it_started_with(tmp_path: Path) -> None:
    """Started under signup@1, driven after the default moved to signup@2 (C a pivot there)."""
    old, _ = make(tmp_path, {})
    saga = old.create(fresh_user(), {})
    engine, participants = make(tmp_path, {("c", "invoke"): ["error"]}, default="signup@2")
    finished = engine.drive(saga.id, Run.RESUMED)
    assert (finished.definition_name, finished.definition_version) == ("signup", 1)
    assert finished.status is SagaStatus.COMPENSATED
    assert participants.actions("compensate") == ["c", "b", "a"], "v1 compensates C"
    assert participants.actions("cancel") == [], "v2 would have cancelled it"
    new = engine.drive(engine.create(fresh_user(), {}).id)
    assert new.definition_version == 2 and participants.actions("cancel") == ["c"]


def test_a_saga_of_a_definition_this_code_lacks_is_not_driven(tmp_path: Path) -> None:
    old, _ = make(tmp_path, {}, known=(TRIP,), default="trip@1")
    saga = old.create(TRIP_INPUT, {})
    engine, participants = make(tmp_path, {})
    with pytest.raises(LookupError, match="trip@1"):
        engine.drive(saga.id, Run.RESUMED)
    assert participants.calls == []


# A pivot and a retriable step ---------------------------------------------------------------

def trip(tmp_path: Path, script: dict[tuple[str, str], list[str]]) -> tuple[SagaEngine, ScriptedParticipants]:
    return make(tmp_path, script, known=(TRIP,), default="trip@1")


def test_after_the_pivot_a_retriable_step_is_retried_until_it_succeeds(tmp_path: Path) -> None:
    engine, participants = trip(tmp_path, {("email", "invoke"): ["error"] * 6 + ["rejected", "ok"]})
    saga = engine.drive(engine.create(TRIP_INPUT, {}).id)
    assert saga.status is SagaStatus.COMPLETED
    assert participants.numbers("email", "invoke") == list(range(1, 9)), \
        "far past CALL_RETRIES, a 4xx included: it is never given up"
    assert participants.actions("compensate") == participants.actions("cancel") == []
    assert participants.payloads["email"] == {"saga_id": saga.id, "name": "ada", "email": "ada@example.org"}


def test_a_failed_pivot_is_cancelled_never_compensated_and_earlier_steps_are_undone(tmp_path: Path) -> None:
    engine, participants = trip(tmp_path, {("card", "invoke"): ["error"]})
    saga = engine.drive(engine.create(TRIP_INPUT, {}).id)
    assert (saga.status, saga.failed_step) == (SagaStatus.COMPENSATED, "card")
    assert participants.actions("cancel") == ["card"]
    assert participants.actions("compensate") == ["hotel"]
    assert "email" not in participants.actions("invoke")


def test_a_pivot_that_committed_after_all_takes_the_saga_forward(tmp_path: Path) -> None:
    """It timed out three times, but the cancel finds it applied (a late commit): go on."""
    engine, participants = trip(tmp_path, {("card", "invoke"): ["timeout"], ("card", "cancel"): ["applied"]})
    saga = engine.drive(engine.create(TRIP_INPUT, {}).id)
    assert saga.status is SagaStatus.COMPLETED
    assert (saga.failed_step, saga.reason, saga.error) == (None, None, None), "no failure stays on it"
    assert participants.actions("compensate") == []
    assert participants.actions("invoke") == ["hotel", "card", "card", "card", "email"]


def test_a_pivot_whose_cancel_fails_waits_as_a_failed_compensation(tmp_path: Path) -> None:
    engine, participants = trip(tmp_path, {("card", "invoke"): ["error"], ("card", "cancel"): ["error"]})
    saga = engine.drive(engine.create(TRIP_INPUT, {}).id)
    assert (saga.status, saga.current_step) == (SagaStatus.COMPENSATION_FAILED, 1)
    assert saga.compensation_error and saga.compensation_error.startswith("cancel of step card")
    assert participants.actions("compensate") == [], "the hotel stays booked until the card is settled"


@pytest.mark.parametrize(("kinds", "message"), [
    ((StepKind.PIVOT, StepKind.COMPENSATABLE), "compensatable, then at most one pivot"),
    ((StepKind.RETRIABLE, StepKind.COMPENSATABLE), "compensatable, then at most one pivot"),
    ((StepKind.PIVOT, StepKind.PIVOT), "at most one pivot"),
])
def test_a_definition_out_of_order_is_refused(kinds: tuple[StepKind, ...], message: str) -> None:
    steps = tuple(Step(f"s{i}", participant="p", receives=("x",), does="do", kind=kind,
                       undo="undo" if kind is StepKind.COMPENSATABLE else None)
                  for i, kind in enumerate(kinds))
    with pytest.raises(ValueError, match=message):
        SagaDefinition("bad", 1, steps=steps)


def test_only_a_compensatable_step_has_a_compensation() -> None:
    with pytest.raises(ValueError, match="compensation"):
        Step("p", participant="p", receives=("x",), does="do", kind=StepKind.PIVOT, undo="undo")
    with pytest.raises(ValueError, match="compensation"):
        Step("c", participant="p", receives=("x",), does="do")


@pytest.mark.parametrize("name", ["inventory", "Hotel", "2fa", "e-mail", ""])
def test_a_name_the_tables_and_settings_cannot_hold_is_refused_when_declared(name: str) -> None:
    """A step's name is kept in 8 characters by the saga log (on MySQL a longer one would fail
    every write of a running saga); a service's goes into setting names: checked when declared."""
    with pytest.raises(ValueError, match="a name is a lowercase letter"):
        Step(name, participant="p", receives=("x",), does="do", undo="undo")
    with pytest.raises(ValueError, match="a name is a lowercase letter"):
        Service(name, table="t", column="c", field="x", port=5009)
    assert Step("shipping", participant="p", receives=("x",), does="do", undo="undo").name == "shipping"
    for reserved in ("observer", "broker"):  # the choreography's other destinations
        with pytest.raises(ValueError, match="destination"):
            Service(reserved, table="t", column="c", field="x", port=5009)


def test_an_unknown_default_is_refused() -> None:
    with pytest.raises(ValueError, match="signup@9"):
        Definitions.of((SIGNUP_V1,), "signup@9")
