"""Nothing stays stuck unseen: a choreographed saga whose events were dead-lettered (C was down
longer than the relays' attempts) is flagged by /consistency, nudged by A, and finished by a
redrive of its dead letters, or by the nudge once C is back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import choreographed, sign_up
from tests.support.checks import assert_rows, consistency
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL

# The deadline 4 s (the tests'); a relay gives up on a destination after 3 attempts (about a
# second); a saga open 2 s past its deadline is stuck.
SETTINGS = {"RELAY_MAX_ATTEMPTS": "3", "CHOREOGRAPHY_STUCK_AFTER": "2"}


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stuck"), TEST_DATABASE_URL, settings=SETTINGS).start()
    yield running
    running.stop()


def dead_letters_of(stack: Stack, saga_id: str) -> list[dict[str, Any]]:
    answer = requests.get(f"{stack.urls['orchestrator']}/choreography/dead-letters", timeout=10).json()
    return [letter for letter in answer["dead_letters"] if letter.get("saga_id") == saga_id]


def stuck_with_c_down(stack: Stack) -> tuple[str, dict[str, str]]:
    """Sign up while C is down and wait until the saga is stuck: what B and A sent to C is
    dead-lettered, and /consistency lists the saga as needing attention."""
    stack.kill("c")
    signup = fresh_user()
    saga_id = sign_up(stack, signup)
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            letters = dead_letters_of(stack, saga_id)
            assert {(d["service"], d["type"], d["destination"]) for d in letters} >= {
                ("b", "AddressStored", "c"), ("a", "SignupTimedOut", "c")}, letters
            # (C is down: the check cannot judge rows, but it lists what needs attention.)
            report = requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=30).json()
            flagged = [n for n in report["needs_attention"] if n["saga_id"] == saga_id]
            assert flagged and flagged[0]["model"] == "choreography", flagged
            assert "after its deadline" in flagged[0]["reason"]
    assert choreographed(stack, saga_id, statuses=("COMPENSATING",))["status"] == "COMPENSATING"
    assert_rows(stack, saga_id, signup, {"a": "APPLIED", "b": "APPLIED", "c": None})
    return saga_id, signup


def assert_compensated(stack: Stack, saga_id: str, signup: dict[str, str]) -> None:
    saga = choreographed(stack, saga_id, seconds=30)
    assert (saga["status"], saga["reason"]) == ("COMPENSATED", "timeout"), saga
    assert_rows(stack, saga_id, signup, {"a": "COMPENSATED", "b": "COMPENSATED", "c": "CANCELLED"})
    report = consistency(stack)
    assert report["violations"] == []
    assert saga_id not in [n["saga_id"] for n in report["needs_attention"]]


def test_a_redrive_of_the_dead_letters_finishes_a_stuck_saga(system: Stack) -> None:
    saga_id, signup = stuck_with_c_down(system)
    system.restart("c")
    origin = system.urls["orchestrator"]
    for letter in dead_letters_of(system, saga_id):  # as the dashboard's button sends it
        request = {"where": letter["where"], "service": letter["service"], "event_id": letter["event_id"]}
        answer = requests.post(f"{origin}/choreography/dead-letters/redrive", json=request, timeout=10,
                               headers={"Origin": origin})
        assert answer.status_code == 200, answer.text
        again = requests.post(f"{origin}/choreography/dead-letters/redrive", json=request, timeout=10,
                              headers={"Origin": origin})
        assert (again.status_code, again.json()["redriven"]) == (200, 0), "idempotent"
    assert_compensated(system, saga_id, signup)
    assert dead_letters_of(system, saga_id) == [], "none left: each went out again"


def test_a_stuck_saga_is_finished_by_a_nudge_once_c_is_back(system: Stack) -> None:
    """No redrive: A publishes SignupTimedOut again for a saga stuck past its deadline."""
    saga_id, signup = stuck_with_c_down(system)
    system.restart("c")
    assert_compensated(system, saga_id, signup)
    assert f"saga {saga_id}: still open" in system.log("a"), "A nudged it"


def outbox_status(stack: Stack, service: str, saga_id: str, event_type: str, destination: str) -> str | None:
    query = text("SELECT status FROM outbox WHERE saga_id = :s AND event_type = :t AND destination = :d")
    with stack.engines[service].connect() as connection:
        return connection.execute(query, {"s": saga_id, "t": event_type, "d": destination}).scalar()


def test_a_completion_the_entry_never_heard_is_sent_again_when_it_asks(system: Stack) -> None:
    """C applied in time, but its PaymentRegistered to A was dead-lettered (A was down longer
    than C's relay tries): A's clock stays open to the deadline; asked to cancel, C finds its
    row applied and sends again what it could not deliver, and the saga completes."""
    signup = fresh_user()
    saga_id = sign_up(system, signup, c="delay:1500")  # C applies 1.5 s in, inside the 4 s deadline
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.02), reraise=True):
        with attempt:  # A's AccountCreated has reached B: A's part is done, C is about to apply
            assert system.row_status("b", saga_id) == "APPLIED"
    system.kill("a")
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert outbox_status(system, "c", saga_id, "PaymentRegistered", "a") == "DEAD"
    system.restart("a")
    saga = choreographed(system, saga_id, seconds=30)
    assert saga["status"] == "COMPLETED", saga
    assert_rows(system, saga_id, signup, {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"})
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True):
        with attempt:  # A heard it: its clock is closed, nothing needs attention
            assert outbox_status(system, "c", saga_id, "PaymentRegistered", "a") == "SENT"
            assert saga_id not in [n["saga_id"] for n in consistency(system)["needs_attention"]]
    assert f"saga {saga_id}: closed here already when its deadline passed" in system.log("c")


def test_a_redrive_needs_a_signature_or_the_dashboard(system: Stack) -> None:
    request = {"where": "outbox", "service": "b", "event_id": "0" * 32}
    url = f"{system.urls['orchestrator']}/choreography/dead-letters/redrive"
    assert requests.post(url, json=request, timeout=10).status_code == 401
    elsewhere = requests.post(url, json=request, timeout=10, headers={"Origin": "http://evil.example"})
    assert elsewhere.status_code == 403
    signed = system.signed_post("orchestrator", "/choreography/dead-letters/redrive", request)
    assert (signed.status_code, signed.json()["redriven"]) == (200, 0), "nothing dead-lettered: nothing to do"
