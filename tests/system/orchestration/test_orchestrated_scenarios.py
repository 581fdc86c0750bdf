"""Every scenario of the design, end to end, checked against the real tables."""

from __future__ import annotations

import pytest
import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import COMPENSATE_ATTEMPTS, INVOKE_ATTEMPTS, start
from tests.support.checks import assert_rows
from tests.support.people import fresh_user


def compensations(stack: Stack, saga_id: str) -> list[str]:
    """The steps compensated successfully, in the order they were."""
    return [step for step, action, _, outcome in stack.events(saga_id)
            if action == "compensate" and outcome == "ok"]


def test_success_applies_every_step(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "COMPLETED"
    assert [s["step"] for s in body["steps"]] == ["a", "b", "c"]
    assert_rows(stack, body["saga_id"], user, {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"})
    assert stack.events(body["saga_id"]) == [("a", "invoke", 1, "ok"), ("b", "invoke", 1, "ok"),
                                             ("c", "invoke", 1, "ok")]
    assert stack.saga_row(body["saga_id"])["status"] == "COMPLETED"


@pytest.mark.parametrize(("failing", "rows", "order"), [
    ("a", {"a": "CANCELLED", "b": None, "c": None}, ["a"]),
    ("b", {"a": "COMPENSATED", "b": "CANCELLED", "c": None}, ["b", "a"]),
    ("c", {"a": "COMPENSATED", "b": "COMPENSATED", "c": "CANCELLED"}, ["c", "b", "a"]),
])
def test_failure_compensates_in_reverse(stack: Stack, failing: str,
                                        rows: dict[str, str | None], order: list[str]) -> None:
    user = fresh_user()
    answer = start(stack, user, **{failing: "before_commit"})
    assert answer.status_code == 500, answer.text
    body = answer.json()
    assert (body["status"], body["failed_step"], body["reason"]) == ("COMPENSATED", failing, "error")
    assert_rows(stack, body["saga_id"], user, rows)
    assert compensations(stack, body["saga_id"]) == order
    invokes = [e for e in stack.events(body["saga_id"]) if e[0] == failing and e[1] == "invoke"]
    assert [e[2] for e in invokes] == list(range(1, INVOKE_ATTEMPTS + 1)), "retried, then gave up"
    assert stack.saga_row(body["saga_id"])["status"] == "COMPENSATED"


def test_step_that_committed_then_failed_is_compensated_itself(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user, b="after_commit")
    assert answer.status_code == 500, answer.text
    body = answer.json()
    assert (body["status"], body["failed_step"]) == ("COMPENSATED", "b")
    assert_rows(stack, body["saga_id"], user, {"a": "COMPENSATED", "b": "COMPENSATED", "c": None})
    assert compensations(stack, body["saga_id"]) == ["b", "a"]


def test_timeout_compensates_and_refuses_the_late_commit(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user, b="timeout")
    assert answer.status_code == 504, answer.text
    body = answer.json()
    saga_id = body["saga_id"]
    assert (body["status"], body["failed_step"], body["reason"]) == ("COMPENSATED", "b", "timeout")
    outcomes = [e[3] for e in stack.events(saga_id) if e[:2] == ("b", "invoke")]
    assert outcomes == ["timeout"] * INVOKE_ATTEMPTS
    # The last attempt's late commit reaches B after B was compensated; B must refuse it.
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert f"saga {saga_id}: invoke refused, the row is COMPENSATED" in stack.log("b")
    assert_rows(stack, saga_id, user, {"a": "COMPENSATED", "b": "COMPENSATED", "c": None})


def test_transient_failures_are_absorbed_by_retries(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user, b="transient:2")
    assert answer.status_code == 200, answer.text
    saga_id = answer.json()["saga_id"]
    assert [e for e in stack.events(saga_id) if e[0] == "b"] == [
        ("b", "invoke", 1, "error"), ("b", "invoke", 2, "error"), ("b", "invoke", 3, "ok")]
    assert_rows(stack, saga_id, user, {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"})


def test_too_many_transient_failures_compensate(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user, c=f"transient:{INVOKE_ATTEMPTS}")
    assert answer.status_code == 500, answer.text
    assert_rows(stack, answer.json()["saga_id"], user,
                {"a": "COMPENSATED", "b": "COMPENSATED", "c": "CANCELLED"})


def test_failed_compensation_leaves_the_saga_visible(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user, b="compensate_fail", c="before_commit")
    assert answer.status_code == 500, answer.text
    body = answer.json()
    saga_id = body["saga_id"]
    assert (body["status"], body["failed_step"]) == ("COMPENSATION_FAILED", "c")
    assert body["error"].startswith("step c: ")
    assert body["compensation_error"].startswith("compensation of step b failed at attempt 4")
    attempts = [e for e in stack.events(saga_id) if e[:2] == ("b", "compensate")]
    assert [e[2] for e in attempts] == list(range(1, COMPENSATE_ATTEMPTS + 1))
    # Compensation stops at B, in order: A is not undone before B is.
    assert_rows(stack, saga_id, user, {"a": "APPLIED", "b": "APPLIED", "c": "CANCELLED"})
    listed = requests.get(f"{stack.urls['orchestrator']}/sagas",
                          params={"status": "COMPENSATION_FAILED"}, timeout=5).json()["sagas"]
    assert saga_id in [saga["saga_id"] for saga in listed]


def test_transient_compensation_failures_are_retried(stack: Stack) -> None:
    user = fresh_user()
    answer = start(stack, user, a="compensate_transient:2", b="before_commit")
    assert answer.status_code == 500, answer.text
    saga_id = answer.json()["saga_id"]
    assert answer.json()["status"] == "COMPENSATED"
    assert [e for e in stack.events(saga_id) if e[:2] == ("a", "compensate")] == [
        ("a", "compensate", 1, "error"), ("a", "compensate", 2, "error"),
        ("a", "compensate", 3, "ok")]
    assert_rows(stack, saga_id, user, {"a": "COMPENSATED", "b": "CANCELLED", "c": None})


def test_delay_lets_a_person_watch_and_still_completes(stack: Stack) -> None:
    user = fresh_user()
    answer = requests.post(f"{stack.urls['orchestrator']}/start", json={**user, "fail": {"b": "delay:300"}},
                           headers={"Prefer": "respond-async"}, timeout=10)
    assert answer.status_code == 202, answer.text
    saga_id = answer.json()["saga_id"]
    seen = set()
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True):
        with attempt:
            saga = requests.get(f"{stack.urls['orchestrator']}/sagas/{saga_id}", timeout=5).json()
            seen.add((saga["status"], saga["current_step"]))
            assert saga["status"] == "COMPLETED"
    assert ("RUNNING", 1) in seen, f"B's step was never seen running: {seen}"
    latency = [e["latency_ms"] for e in saga["events"] if e["step"] == "b"]
    assert latency and latency[0] >= 300
    assert_rows(stack, saga_id, user, {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"})


def test_query_flags_inject_faults_like_the_body(stack: Stack) -> None:
    user = fresh_user()
    answer = requests.post(f"{stack.urls['orchestrator']}/start?fail_b=after_commit", json=user,
                           timeout=30)
    assert answer.status_code == 500, answer.text
    saga = requests.get(f"{stack.urls['orchestrator']}/sagas/{answer.json()['saga_id']}",
                        timeout=5).json()
    assert saga["fail"] == {"b": "after_commit"}
    assert_rows(stack, saga["saga_id"], user, {"a": "COMPENSATED", "b": "COMPENSATED", "c": None})


def test_saga_detail_lists_events_in_order(stack: Stack) -> None:
    user = fresh_user()
    saga_id = start(stack, user, c="before_commit").json()["saga_id"]
    saga = requests.get(f"{stack.urls['orchestrator']}/sagas/{saga_id}", timeout=5).json()
    assert saga["input"] == user
    assert [(e["step"], e["action"], e["attempt"]) for e in saga["events"]] == [
        ("a", "invoke", 1), ("b", "invoke", 1), ("c", "invoke", 1), ("c", "invoke", 2),
        ("c", "invoke", 3), ("c", "compensate", 1), ("b", "compensate", 1), ("a", "compensate", 1)]
    first = saga["events"][0]
    assert set(first) == {"step", "action", "attempt", "http_status", "outcome", "latency_ms",
                          "error", "orchestrator", "at"}
    assert first["orchestrator"].startswith("test-orchestrator-")
    assert saga["events"][3]["http_status"] == 500 and saga["events"][3]["error"]
    records = requests.get(f"{stack.urls['orchestrator']}/sagas/{saga_id}/records", timeout=5).json()
    assert records["verdict"] == "consistent"
    assert records["rows"]["c"]["status"] == "CANCELLED"


def test_saga_list_is_newest_first_and_filters(stack: Stack) -> None:
    user = fresh_user()
    first = start(stack, user).json()["saga_id"]
    second = start(stack, fresh_user(), a="before_commit").json()["saga_id"]
    listed = requests.get(f"{stack.urls['orchestrator']}/sagas?limit=2", timeout=5).json()["sagas"]
    assert [s["saga_id"] for s in listed] == [second, first]
    completed = requests.get(f"{stack.urls['orchestrator']}/sagas?status=COMPLETED&limit=500",
                             timeout=5).json()["sagas"]
    assert first in [s["saga_id"] for s in completed]
    assert second not in [s["saga_id"] for s in completed]
    assert {s["status"] for s in completed} == {"COMPLETED"}
