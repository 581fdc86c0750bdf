"""A saga of four steps, declared in one file (declaration.py) with a fourth service started
from the participant package (service_d.py), run both ways on the real processes: the
orchestrator and the choreography (both transports) take it from the declaration alone."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import choreographed, event_types, sign_up, start
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL, TRANSPORTS

HERE = "tests.system.four_steps"
STEPS = ("a", "b", "c", "d")
FIELDS = {"a": "username", "b": "address", "c": "payment", "d": "email"}
REQUESTED, CREATED, STORED, REGISTERED, SENT = ("SignupRequested", "AccountCreated", "AddressStored",
                                               "PaymentRegistered", "WelcomeSent")
APPLIED = [REQUESTED, CREATED, STORED, REGISTERED, SENT]
# Each step's failure, then every step before it undone, in reverse.
FAILED_AT = {
    "a": [REQUESTED, "AccountFailed"],
    "b": [REQUESTED, CREATED, "AddressFailed", "AccountRemoved"],
    "c": [REQUESTED, CREATED, STORED, "PaymentFailed", "AddressRemoved", "AccountRemoved"],
    "d": [REQUESTED, CREATED, STORED, REGISTERED, "WelcomeFailed", "PaymentRemoved", "AddressRemoved",
          "AccountRemoved"],
}


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def four(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The orchestrator, A, B, C and D running the four-step declaration, on one transport."""
    running = Stack(tmp_path_factory.mktemp(f"four-{request.param}"), TEST_DATABASE_URL,
                    settings={**TRANSPORTS[request.param], "SAGA_DECLARATION": f"{HERE}.declaration"},
                    apps={"d": f"{HERE}.service_d:app"}).start()
    yield running
    running.stop()


def rows(stack: Stack, saga_id: str, signup: dict[str, str]) -> dict[str, str | None]:
    """Each service's row status for the saga (None: no row), its value checked on the way."""
    found: dict[str, str | None] = {}
    for step in STEPS:
        row = stack.row(step, saga_id)
        found[step] = None if row is None else row["status"]
        if row is not None and row["status"] != "CANCELLED":
            assert row["value"] == signup[FIELDS[step]], row
    return found


def expected_rows(failed_at: str | None) -> dict[str, str | None]:
    """Undone before the failed step, a tombstone at it, nothing after it."""
    if failed_at is None:
        return dict.fromkeys(STEPS, "APPLIED")
    at = STEPS.index(failed_at)
    return {step: "COMPENSATED" if i < at else "CANCELLED" if i == at else None
            for i, step in enumerate(STEPS)}


def test_the_definition_and_the_flow_have_four_steps(four: Stack) -> None:
    orchestrator = four.urls["orchestrator"]
    definition = requests.get(f"{orchestrator}/definition", timeout=10).json()
    assert [s["name"] for s in definition["steps"]] == list(STEPS)
    assert definition["input_fields"] == ["username", "address", "payment", "email"]
    flow = requests.get(f"{orchestrator}/choreography/flow", timeout=10).json()
    assert flow["steps"] == list(STEPS)
    assert {"on": REGISTERED, "service": "d", "does": "apply", "then": SENT, "otherwise": "WelcomeFailed"} \
        in flow["reactions"]


@pytest.mark.parametrize("failed_at", [None, *STEPS])
def test_orchestrated_success_and_a_failure_at_each_step(four: Stack, failed_at: str | None) -> None:
    signup = fresh_user(email=True)
    answer = start(four, signup, **({failed_at: "before_commit"} if failed_at else {}))
    body = answer.json()
    assert (answer.status_code, body["status"]) == ((200, "COMPLETED") if failed_at is None
                                                    else (500, "COMPENSATED")), body
    assert body.get("failed_step") == failed_at
    assert rows(four, body["saga_id"], signup) == expected_rows(failed_at)
    saga = requests.get(f"{four.urls['orchestrator']}/sagas/{body['saga_id']}", timeout=10).json()
    invoked = [e["step"] for e in saga["events"] if e["action"] == "invoke" and e["outcome"] == "ok"]
    undone = [e["step"] for e in saga["events"] if e["action"] == "compensate" and e["outcome"] == "ok"]
    assert invoked == list(STEPS[:STEPS.index(failed_at)] if failed_at else STEPS)
    assert undone == ([] if failed_at is None else list(reversed(STEPS[:STEPS.index(failed_at) + 1])))


@pytest.mark.parametrize("failed_at", [None, *STEPS])
def test_choreographed_success_and_a_failure_at_each_step(four: Stack, failed_at: str | None) -> None:
    signup = fresh_user(email=True)
    saga_id = sign_up(four, signup, **({failed_at: "before_commit"} if failed_at else {}))
    saga = choreographed(four, saga_id)
    assert (saga["status"], saga["failed_step"]) == ("COMPLETED" if failed_at is None else "COMPENSATED",
                                                     failed_at), saga
    assert saga["definition"] == {"name": "signup", "version": 1}
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True):
        with attempt:  # each service's relay tells the observer in its own time
            assert event_types(choreographed(four, saga_id)) == (FAILED_AT[failed_at] if failed_at
                                                                  else APPLIED)
    assert rows(four, saga_id, signup) == expected_rows(failed_at)


def test_a_failed_compensation_stops_where_it_failed_in_both_models(four: Stack) -> None:
    """D fails; C cannot undo itself: C (and B and A before it) keep their rows, and the saga
    is COMPENSATION_FAILED, in both models alike."""
    fail = {"c": "compensate_fail", "d": "before_commit"}
    signup = fresh_user(email=True)
    answer = start(four, signup, **fail)
    assert (answer.status_code, answer.json()["status"]) == (500, "COMPENSATION_FAILED"), answer.text
    wanted = {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED", "d": "CANCELLED"}
    assert rows(four, answer.json()["saga_id"], signup) == wanted
    signup = fresh_user(email=True)
    saga_id = sign_up(four, signup, **fail)
    assert choreographed(four, saga_id)["status"] == "COMPENSATION_FAILED"
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            assert event_types(choreographed(four, saga_id)) == [
                REQUESTED, CREATED, STORED, REGISTERED, "WelcomeFailed", "PaymentRemovalFailed"]
    assert rows(four, saga_id, signup) == wanted


def test_the_deadline_cancels_the_last_step_and_everything_before_it_is_undone(four: Stack) -> None:
    """D outlasts the choreographed saga's deadline: A's watcher publishes SignupTimedOut, D
    leaves a tombstone, and C, B and A undo themselves; orchestrated, D's calls time out and
    the saga is compensated from D back (504)."""
    signup = fresh_user(email=True)
    saga_id = sign_up(four, signup, d="timeout")
    saga = choreographed(four, saga_id, seconds=25)
    assert (saga["status"], saga["failed_step"], saga["reason"]) == ("COMPENSATED", "d", "timeout"), saga
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            types = event_types(choreographed(four, saga_id))
            assert types[:5] == [REQUESTED, CREATED, STORED, REGISTERED, "SignupTimedOut"], types
            assert types.count("PaymentRemoved") == types.count("AddressRemoved") == 1, types
            assert types[-1] == "AccountRemoved", types
    assert rows(four, saga_id, signup) == {"a": "COMPENSATED", "b": "COMPENSATED", "c": "COMPENSATED",
                                           "d": "CANCELLED"}
    signup = fresh_user(email=True)
    answer = start(four, signup, d="timeout")
    body: dict[str, Any] = answer.json()
    assert (answer.status_code, body["status"], body["failed_step"], body["reason"]) == \
        (504, "COMPENSATED", "d", "timeout"), body
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.1), reraise=True):
        with attempt:  # D's first attempts committed late and were undone; its last late commit is refused
            assert f"saga {body['saga_id']}: invoke refused, the row is COMPENSATED" in four.log("d")
    assert rows(four, body["saga_id"], signup) == dict.fromkeys(STEPS, "COMPENSATED")
