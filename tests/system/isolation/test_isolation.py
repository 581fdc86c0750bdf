"""The isolation lab and its parts on the real processes: the username rule at A, the anomaly
without a countermeasure and its absence under a semantic lock (both models, both transports),
the lock released by compensation, by the deadline's cancel and after kill -9, and what
/consistency says of a lock."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import choreographed, sign_up, start, wait_for_saga
from tests.support.checks import consistency
from tests.support.people import fresh_user
from tests.support.stacks import LAB_RACE, TEST_DATABASE_URL, TRANSPORTS

LOCK = "semantic_lock"


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Both models on one transport, with a short bound on held locks for /consistency and the
    lab race's deadline."""
    running = Stack(tmp_path_factory.mktemp(f"isolation-{request.param}"), TEST_DATABASE_URL,
                    settings={**TRANSPORTS[request.param], **LAB_RACE, "LOCK_ATTENTION_AFTER": "0.3"}).start()
    yield running
    running.stop()


def lab(stack: Stack, model: str, countermeasure: str) -> dict[str, Any]:
    answer = requests.post(f"{stack.urls['orchestrator']}/labs/isolation",
                           json={"model": model, "countermeasure": countermeasure}, timeout=60)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def holders(stack: Stack, username: str) -> list[tuple[str, str]]:
    """(saga id, status) of every row at A for the username, read from A's table."""
    with stack.engines["a"].connect() as connection:
        return [tuple(row) for row in connection.execute(
            text("SELECT saga_id, status FROM table_a WHERE username = :u ORDER BY id"), {"u": username})]


@pytest.mark.parametrize("model", ["orchestration", "choreography"])
def test_without_a_countermeasure_the_second_is_refused_by_an_account_that_never_existed(
        system: Stack, model: str) -> None:
    race = lab(system, model, "none")
    first, second = race["first"], race["second"]
    assert (first["status"], second["status"], race["anomaly"]) == ("COMPENSATED", "COMPENSATED", True), race
    assert f"username '{race['username']}' is taken" in second["error"]
    # Nobody got the username: the first's account was undone, the second's never made.
    rows = dict(holders(system, race["username"]))
    assert rows[first["saga_id"]] == "COMPENSATED"
    assert rows.get(second["saga_id"]) in (None, "CANCELLED")
    assert all(status not in ("APPLIED", "PENDING") for status in rows.values()), rows


@pytest.mark.parametrize("model", ["orchestration", "choreography"])
def test_under_a_semantic_lock_the_second_waits_and_completes(system: Stack, model: str) -> None:
    race = lab(system, model, LOCK)
    first, second = race["first"], race["second"]
    assert (first["status"], second["status"], race["anomaly"]) == ("COMPENSATED", "COMPLETED", False), race
    assert dict(holders(system, race["username"])) == {first["saga_id"]: "COMPENSATED",
                                                       second["saga_id"]: "APPLIED"}, "the lock released"
    path = "/sagas" if model == "orchestration" else "/choreography/sagas"
    saga = requests.get(f"{system.urls['orchestrator']}{path}/{second['saga_id']}", timeout=10).json()
    assert saga["isolation"] == LOCK
    if model == "orchestration":  # waited without spending its retries, then confirmed, logged
        at_a = [(e["action"], e["outcome"]) for e in saga["events"] if e["step"] == "a"]
        assert ("invoke", "locked") in at_a and at_a[-2:] == [("invoke", "ok"), ("confirm", "ok")], at_a


def test_one_run_of_the_lab_at_a_time(system: Stack) -> None:
    answers: list[int] = []

    def run() -> None:
        answers.append(requests.post(f"{system.urls['orchestrator']}/labs/isolation",
                                     json={"model": "orchestration", "countermeasure": "none"},
                                     timeout=60).status_code)

    racers = [threading.Thread(target=run) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(60)
    assert sorted(answers) == [200, 409], answers


def test_bad_lab_requests_are_400(system: Stack) -> None:
    for body in ({"model": "both"}, {"model": "orchestration", "countermeasure": "all"},
                 {"model": "orchestration", "extra": 1}):
        answer = requests.post(f"{system.urls['orchestrator']}/labs/isolation", json=body, timeout=10)
        assert answer.status_code == 400, (body, answer.text)


@pytest.mark.parametrize("model", ["orchestration", "choreography"])
def test_a_username_held_by_a_live_account_is_taken_and_freed_by_compensation(system: Stack,
                                                                              model: str) -> None:
    user = fresh_user()

    def run(**fail: str) -> dict[str, Any]:
        if model == "orchestration":
            return dict(start(system, {**user, "address": fresh_user()["address"]}, **fail).json())
        return choreographed(system, sign_up(system, {**user, "address": fresh_user()["address"]}, **fail))

    undone = run(b="before_commit")
    assert undone["status"] == "COMPENSATED"
    kept = run()  # the compensated account freed the username
    assert kept["status"] == "COMPLETED", kept
    refused = run()
    assert (refused["status"], refused["failed_step"]) == ("COMPENSATED", "a"), refused
    assert f"username '{user['username']}' is taken" in refused["error"]
    assert system.row_status("a", refused["saga_id"]) == "CANCELLED", "a tombstone, holding no username"
    assert holders(system, user["username"])[-1] == (kept["saga_id"], "APPLIED")


def test_the_taken_answer_is_a_4xx_and_is_never_retried(system: Stack) -> None:
    user = fresh_user()
    assert start(system, user).status_code == 200
    answer = start(system, {**user, "address": "elsewhere"})
    assert answer.status_code == 500 and answer.json()["failed_step"] == "a"
    saga = requests.get(f"{system.urls['orchestrator']}/sagas/{answer.json()['saga_id']}", timeout=10).json()
    assert [(e["action"], e["http_status"], e["outcome"]) for e in saga["events"] if e["step"] == "a"] == [
        ("invoke", 409, "rejected"), ("compensate", 200, "ok")]


def test_the_deadlines_cancel_releases_a_lock(system: Stack) -> None:
    """A choreographed saga under a lock times out at B: A's PENDING row is undone on the way
    back, and the username is free again."""
    user = fresh_user()
    saga_id = sign_up(system, {**user, "isolation": LOCK}, b="timeout")
    for attempt in Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.02), reraise=True):
        with attempt:
            assert holders(system, user["username"]) == [(saga_id, "PENDING")]
    saga = choreographed(system, saga_id, seconds=25)
    assert (saga["status"], saga["reason"]) == ("COMPENSATED", "timeout")
    assert holders(system, user["username"]) == [(saga_id, "COMPENSATED")]
    assert choreographed(system, sign_up(system, user))["status"] == "COMPLETED"


def test_consistency_lists_a_lock_held_too_long_and_a_lock_that_outlived_its_saga(system: Stack) -> None:
    user = fresh_user()
    answer = requests.post(f"{system.urls['orchestrator']}/start", json={**user, "isolation": LOCK,
                                                                           "fail": {"c": "delay:900"}},
                           headers={"Prefer": "respond-async"}, timeout=10)
    saga_id = answer.json()["saga_id"]
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.1), reraise=True):
        with attempt:  # LOCK_ATTENTION_AFTER is 0.3 s here; C sleeps 0.9 s (CALL_TIMEOUT is 1 s)
            report = consistency(system)
            held = [n for n in report["needs_attention"] if n["saga_id"] == saga_id]
            assert held and "semantic lock (PENDING)" in held[0]["reason"], report["needs_attention"]
    wait_for_saga(system, saga_id, "COMPLETED")
    assert holders(system, user["username"]) == [(saga_id, "APPLIED")]
    assert not [n for n in consistency(system)["needs_attention"] if n["saga_id"] == saga_id]
    # A lock left PENDING under a finished saga (by hand: nothing in the system does it) is a violation.
    with system.engines["a"].connect() as connection:
        connection.execute(text("UPDATE table_a SET status = 'PENDING' WHERE saga_id = :s"), {"s": saga_id})
    try:
        found = [v for v in consistency(system)["violations"] if v["saga_id"] == saga_id]
        assert found and "the row is PENDING" in found[0]["detail"], found
    finally:
        with system.engines["a"].connect() as connection:
            connection.execute(text("UPDATE table_a SET status = 'APPLIED' WHERE saga_id = :s"),
                               {"s": saga_id})


def test_a_lock_is_released_after_the_orchestrator_and_then_a_are_killed_mid_saga(fresh_stack: Stack) -> None:
    """kill -9 the orchestrator while a saga holds A's lock: recovery finishes it and confirms.
    Then kill -9 A while another holds its lock: the saga completes once A is back, confirmed."""
    stack = fresh_stack
    user = fresh_user()
    saga_id = requests.post(f"{stack.urls['orchestrator']}/start", json={**user, "isolation": LOCK,
                                                                          "fail": {"c": "delay:800"}},
                            headers={"Prefer": "respond-async"}, timeout=10).json()["saga_id"]
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True):
        with attempt:
            assert holders(stack, user["username"]) == [(saga_id, "PENDING")]
    stack.kill("orchestrator")
    stack.restart("orchestrator")
    wait_for_saga(stack, saga_id, "COMPLETED", seconds=40)
    assert holders(stack, user["username"]) == [(saga_id, "APPLIED")]
    events = [(e[0], e[1], e[3]) for e in stack.events(saga_id)]
    assert ("a", "confirm", "ok") in events

    other = fresh_user()
    second = requests.post(f"{stack.urls['orchestrator']}/start", json={**other, "isolation": LOCK,
                                                                         "fail": {"c": "delay:800"}},
                           headers={"Prefer": "respond-async"}, timeout=10).json()["saga_id"]
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True):
        with attempt:  # A has answered (B too): the saga is at C, A's row PENDING
            assert ("b", "invoke", "ok") in [(e[0], e[1], e[3]) for e in stack.events(second)]
    assert holders(stack, other["username"]) == [(second, "PENDING")]
    stack.kill("a")  # the confirm finds A gone, and is tried again until A is back
    for attempt in Retrying(stop=stop_after_delay(20), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            assert [e for e in stack.events(second) if e[:2] == ("a", "confirm")], "the confirm was tried"
    stack.restart("a")
    wait_for_saga(stack, second, "COMPLETED", seconds=40)
    assert holders(stack, other["username"]) == [(second, "APPLIED")]
