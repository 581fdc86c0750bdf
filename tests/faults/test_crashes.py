"""The fault suite: SIGKILL the orchestrator at each point of a saga, restart it, check the tables."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from scripts.stack import RECOVERS_FAILED_COMPENSATIONS, Stack
from tests.support.calls import start_async, wait_for_saga
from tests.support.checks import consistency
from tests.support.people import fresh_user


def crash_at(stack: Stack, point: str) -> None:
    Path(stack.settings["FAILPOINTS_FILE"]).write_text(point)


def start_and_crash(stack: Stack, **fail: str) -> str:
    """Start a saga that will crash the orchestrator; the answer may die with it, so the
    saga is found in the log by its Idempotency-Key."""
    key = uuid.uuid4().hex
    body = {**fresh_user(), "fail": fail}
    # The kill may land before the 202, or between its headers and its body.
    with contextlib.suppress(requests.RequestException):
        requests.post(f"{stack.urls['orchestrator']}/start", json=body, timeout=10,
                      headers={"Prefer": "respond-async", "Idempotency-Key": key})
    wait_until_dead(stack)
    with stack.engines["orchestrator"].connect() as connection:
        return str(connection.execute(text("SELECT id FROM sagas WHERE idempotency_key = :k"),
                                      {"k": key}).scalar_one())


def wait_until_dead(stack: Stack, label: str = "orchestrator") -> None:
    process = stack.processes[label]
    process.wait(timeout=30)
    stack.processes.pop(label)


FORWARD = ["before_invoke:a", "after_invoke:a", "before_invoke:b", "after_invoke:b",
           "before_invoke:c", "after_invoke:c"]
BACKWARD = ["before_compensate:c", "after_compensate:c", "before_compensate:b",
            "after_compensate:b", "before_compensate:a", "after_compensate:a"]


@pytest.mark.parametrize("point", FORWARD)
def test_crash_going_forward_resumes_to_completed(crash_stack: Stack, point: str) -> None:
    stack = crash_stack
    crash_at(stack, point)
    saga_id = start_and_crash(stack)
    stack.restart("orchestrator")
    wait_for_saga(stack, saga_id, "COMPLETED")
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED"] * 3
    step = point[-1]
    invokes = [e for e in stack.events(saga_id) if e[:2] == (step, "invoke")]
    assert invokes and invokes[-1][3] == "ok", f"{step} was invoked again after the crash"
    assert consistency(stack)["violations"] == []


@pytest.mark.parametrize("point", BACKWARD)
def test_crash_while_compensating_resumes_to_compensated(crash_stack: Stack, point: str) -> None:
    stack = crash_stack
    crash_at(stack, point)
    saga_id = start_and_crash(stack, c="before_commit")
    stack.restart("orchestrator")
    wait_for_saga(stack, saga_id, "COMPENSATED")
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["COMPENSATED", "COMPENSATED",
                                                             "CANCELLED"]
    undone = [e[0] for e in stack.events(saga_id) if e[1] == "compensate" and e[3] == "ok"]
    assert undone == ["c", "b", "a"], "compensated in reverse, each step once in the log"
    assert consistency(stack)["violations"] == []


def test_a_saga_interrupted_under_version_1_finishes_under_version_1(crash_stack: Stack) -> None:
    """Killed mid-saga, restarted with signup@2 (C a pivot: cancelled, never compensated) as the
    default: the old saga is still driven by signup@1, and only new sagas run signup@2."""
    stack = crash_stack
    crash_at(stack, "before_invoke:c")
    old = start_and_crash(stack, c="before_commit")
    stack.restart("orchestrator", extra_env={"SAGA_DEFINITION": "signup@2"})
    wait_for_saga(stack, old, "COMPENSATED")
    saga = requests.get(f"{stack.urls['orchestrator']}/sagas/{old}", timeout=5).json()
    assert saga["definition"] == {"name": "signup", "version": 1}
    assert [(e["step"], e["action"]) for e in saga["events"] if e["action"] != "invoke"] == [
        ("c", "compensate"), ("b", "compensate"), ("a", "compensate")]
    new = requests.post(f"{stack.urls['orchestrator']}/start", timeout=30,
                        json={**fresh_user(), "fail": {"c": "before_commit"}})
    saga = requests.get(f"{stack.urls['orchestrator']}/sagas/{new.json()['saga_id']}", timeout=5).json()
    assert saga["definition"] == {"name": "signup", "version": 2}
    assert [(e["step"], e["action"]) for e in saga["events"] if e["action"] != "invoke"] == [
        ("c", "cancel"), ("b", "compensate"), ("a", "compensate")]
    assert [e["attempt"] for e in saga["events"] if e["step"] == "c" and e["action"] == "invoke"] == [
        1, 2, 3, 4, 5], "v2 gives the payment four retries"
    assert [stack.row_status(s, new.json()["saga_id"]) for s in "abc"] == ["COMPENSATED", "COMPENSATED",
                                                                           "CANCELLED"]
    stack.kill("orchestrator")  # the next test gets the default definition back


def test_a_killed_participant_loses_nothing_and_applies_nothing_twice(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(**RECOVERS_FAILED_COMPENSATIONS)
    applied = [start_async(stack) for _ in range(3)]
    for saga_id in applied:
        wait_for_saga(stack, saga_id, "COMPLETED")
    saga_id = start_async(stack, b="delay:700")  # B sleeps before its commit
    wait_for_saga(stack, saga_id, "RUNNING", current_step=1)
    stack.kill("b")  # mid-call
    stack.restart("b")
    # B came back in time (COMPLETED) or not (compensated; a failed compensation of B is
    # retried by the recovery loop once B is back): either way, all or nothing.
    row = wait_for_saga(stack, saga_id, ("COMPLETED", "COMPENSATED"))
    statuses = [stack.row_status(s, saga_id) for s in "abc"]
    if row["status"] == "COMPLETED":
        assert statuses == ["APPLIED"] * 3
    else:
        assert "APPLIED" not in statuses, statuses
    for earlier in applied:  # committed before the kill: still there
        assert stack.row_status("b", earlier) == "APPLIED"
    assert stack.count("b", "table_b") == 4, "one row per saga, however often B was called"
    assert consistency(stack)["violations"] == []
