"""The engine's order of work, with scripted participants and a real (SQLite) saga log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from common.db import make_engine
from common.status import SagaStatus
from orchestrator.client import Attempt
from orchestrator.engine import SagaEngine
from orchestrator.saga import SIGNUP_STEPS
from orchestrator.store import Event, LeaseLost, SagaStore, Transition, metadata, sagas


class ScriptedClient:
    """Answers each call with the outcome scripted for (step, action); 'ok' otherwise."""

    def __init__(self, script: dict[tuple[str, str], str]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    def post(self, url: str, payload: dict[str, Any], *, retries: int, first_attempt: int = 1,
             fault: str | None = None, on_attempt: Callable[[Attempt], None]) -> Attempt:
        step, action = url.rsplit("/", 2)[-2:]
        self.calls.append((step, action))
        outcome = self.script.get((step, action), "ok")
        for number in range(first_attempt, first_attempt + retries + 1):  # as tenacity would
            attempt = Attempt(number, 200 if outcome == "ok" else None, outcome, 1,
                              None if outcome == "ok" else outcome, {})
            on_attempt(attempt)
            if not attempt.retryable:
                break
        return attempt


def make(tmp_path: Path, script: dict[tuple[str, str], str]) -> tuple[SagaEngine, ScriptedClient]:
    engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    metadata.create_all(engine)
    client = ScriptedClient(script)
    urls = {step.name: f"http://x/{step.name}" for step in SIGNUP_STEPS}
    saga_engine = SagaEngine(SIGNUP_STEPS, urls, SagaStore(engine, 30), client,  # type: ignore[arg-type]
                             owner="me", invoke_retries=2, compensation_retries=2)
    return saga_engine, client


USER = {"username": "u", "address": "a", "payment": "p"}


def test_success_invokes_in_order(tmp_path: Path) -> None:
    engine, client = make(tmp_path, {})
    saga = engine.drive(engine.create(USER, {}).id)
    assert saga.status is SagaStatus.COMPLETED and saga.lease_owner is None
    logged = engine.store.get(saga.id)
    assert logged is not None
    assert replace(logged, updated_at=None) == replace(saga, updated_at=None), \
        "what drive returns is what the log holds"
    assert client.calls == [("a", "invoke"), ("b", "invoke"), ("c", "invoke")]


@pytest.mark.parametrize(("failing", "compensated"), [
    ("a", ["a"]), ("b", ["b", "a"]), ("c", ["c", "b", "a"])])
def test_failure_compensates_from_the_failed_step_backwards(tmp_path: Path, failing: str,
                                                            compensated: list[str]) -> None:
    engine, client = make(tmp_path, {(failing, "invoke"): "error"})
    saga = engine.drive(engine.create(USER, {}).id)
    assert (saga.status, saga.failed_step, saga.reason) == (SagaStatus.COMPENSATED, failing, "error")
    assert [step for step, action in client.calls if action == "compensate"] == compensated


def test_timeout_is_the_reason(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, {("b", "invoke"): "timeout"})
    saga = engine.drive(engine.create(USER, {}).id)
    assert (saga.status, saga.reason) == (SagaStatus.COMPENSATED, "timeout")


def test_a_failing_compensation_stops_in_order(tmp_path: Path) -> None:
    engine, client = make(tmp_path, {("c", "invoke"): "error", ("b", "compensate"): "error"})
    saga = engine.drive(engine.create(USER, {}).id)
    assert saga.status is SagaStatus.COMPENSATION_FAILED and saga.current_step == 1
    assert ("a", "compensate") not in client.calls, "A is not undone before B is"


def test_a_driver_that_lost_its_lease_stops(tmp_path: Path) -> None:
    engine, client = make(tmp_path, {})
    saga = engine.create(USER, {})
    with engine.store.engine.begin() as connection:  # as if another orchestrator had taken it
        connection.execute(update(sagas).where(sagas.c.id == saga.id).values(lease_owner="other"))
    with pytest.raises(LeaseLost):
        engine.store.record_attempt(saga.id, "me", Event("a", "invoke", 1, 200, "ok", 1),
                                    Transition(SagaStatus.RUNNING, 1))
    assert engine.drive(saga.id).status is SagaStatus.RUNNING
    assert client.calls == [("a", "invoke")], "it stops at the first write it cannot make"


class CountingClient(ScriptedClient):
    """Records how many retries each call was allowed and where its numbering started."""

    def __init__(self) -> None:
        super().__init__({})
        self.allowed: list[tuple[int, int]] = []

    def post(self, url: str, payload: dict[str, Any], *, retries: int, first_attempt: int = 1,
             fault: str | None = None, on_attempt: Callable[[Attempt], None]) -> Attempt:
        self.allowed.append((first_attempt, retries))
        return super().post(url, payload, retries=retries, first_attempt=first_attempt,
                            fault=fault, on_attempt=on_attempt)


@pytest.mark.parametrize(("made", "expected"), [(0, (1, 2)), (1, (2, 1)), (3, (4, 0)), (7, (8, 0))])
def test_a_resumed_step_counts_the_attempts_already_logged(tmp_path: Path, made: int,
                                                           expected: tuple[int, int]) -> None:
    engine, _ = make(tmp_path, {})
    client = CountingClient()
    engine.client = client  # type: ignore[assignment]
    saga = engine.create(USER, {})
    for number in range(1, made + 1):
        engine.store.record_attempt(saga.id, "me", Event("a", "invoke", number, 500, "error", 1))
    engine.drive(saga.id, resumed=True)
    assert client.allowed[0] == expected, "retries left = retries - attempts made, at least one try"
    assert client.allowed[1] == (1, 2), "the next step starts afresh"


def test_a_reopened_compensation_gets_a_full_set_of_retries(tmp_path: Path) -> None:
    engine, _ = make(tmp_path, {})
    client = CountingClient()
    engine.client = client  # type: ignore[assignment]
    saga = engine.create(USER, {})
    with engine.store.engine.begin() as connection:  # as if compensating A had failed 6 times
        connection.execute(update(sagas).where(sagas.c.id == saga.id)
                           .values(status="COMPENSATION_FAILED", current_step=0))
    for number in range(1, 7):
        engine.store.record_attempt(saga.id, "me", Event("a", "compensate", number, 500, "error", 1))
    assert engine.store.reopen_failed_compensation(saga.id, "me")
    assert engine.drive(saga.id, resumed=True, reopened=True).status is SagaStatus.COMPENSATED
    assert client.allowed == [(7, 2)], "numbering goes on; the retries start over"


def test_recovery_never_starts_a_second_driver_for_a_saga_this_process_holds(tmp_path: Path) -> None:
    from orchestrator.recovery import Recovery

    engine, client = make(tmp_path, {})
    saga = engine.create(USER, {})
    with engine.store.engine.begin() as connection:  # its lease ran out while it waited here
        connection.execute(update(sagas).where(sagas.c.id == saga.id).values(lease_expires_at=None))
    recovery = Recovery(engine, interval=1, retry_after=30, max_rounds=1)
    with engine._busy_guard:
        engine._busy.add(saga.id)  # queued on this process's background threads
    assert recovery.scan_once() == 0 and client.calls == []
    with engine._busy_guard:
        engine._busy.discard(saga.id)
    assert recovery.scan_once() == 1, "once nothing here holds it, recovery claims it"
    engine.background.shutdown(wait=True)
    logged = engine.store.get(saga.id)
    assert logged is not None and logged.status is SagaStatus.COMPLETED
    assert not engine.busy(saga.id)
