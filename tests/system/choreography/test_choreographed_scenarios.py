"""Every scenario of the orchestrated saga, choreographed: same input, same final rows,
on the embedded transport and on RabbitMQ, checked against the real tables."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import choreographed, event_types, sign_up
from tests.support.checks import assert_json_error, assert_rows, consistency
from tests.support.people import fresh_user

REQUESTED, CREATED, STORED = "SignupRequested", "AccountCreated", "AddressStored"
REGISTERED = "PaymentRegistered"
B_FAILED = [REQUESTED, CREATED, "AddressFailed", "AccountRemoved"]
C_FAILED = [REQUESTED, CREATED, STORED, "PaymentFailed", "AddressRemoved", "AccountRemoved"]
APPLIED_ALL = {"a": "APPLIED", "b": "APPLIED", "c": "APPLIED"}

SCENARIOS: list[tuple[str, dict[str, str], str, str | None, dict[str, str | None], list[str]]] = [
    ("success", {}, "COMPLETED", None, APPLIED_ALL, [REQUESTED, CREATED, STORED, REGISTERED]),
    ("failure at A", {"a": "before_commit"}, "COMPENSATED", "a",
     {"a": "CANCELLED", "b": None, "c": None}, [REQUESTED, "AccountFailed"]),
    ("failure at B", {"b": "before_commit"}, "COMPENSATED", "b",
     {"a": "COMPENSATED", "b": "CANCELLED", "c": None}, B_FAILED),
    ("failure at C", {"c": "before_commit"}, "COMPENSATED", "c",
     {"a": "COMPENSATED", "b": "COMPENSATED", "c": "CANCELLED"}, C_FAILED),
    ("B fails after commit", {"b": "after_commit"}, "COMPENSATED", "b",
     {"a": "COMPENSATED", "b": "COMPENSATED", "c": None}, B_FAILED),
    ("transient failures absorbed", {"b": "transient:2"}, "COMPLETED", None, APPLIED_ALL,
     [REQUESTED, CREATED, STORED, REGISTERED]),
    ("too many transient failures", {"c": "transient:3"}, "COMPENSATED", "c",
     {"a": "COMPENSATED", "b": "COMPENSATED", "c": "CANCELLED"}, C_FAILED),
    ("a compensation retried", {"a": "compensate_transient:2", "b": "before_commit"}, "COMPENSATED", "b",
     {"a": "COMPENSATED", "b": "CANCELLED", "c": None}, B_FAILED),
    ("a failed compensation", {"b": "compensate_fail", "c": "before_commit"}, "COMPENSATION_FAILED", "c",
     {"a": "APPLIED", "b": "APPLIED", "c": "CANCELLED"},
     [REQUESTED, CREATED, STORED, "PaymentFailed", "AddressRemovalFailed"]),
    ("a slow step", {"b": "delay:300"}, "COMPLETED", None, APPLIED_ALL,
     [REQUESTED, CREATED, STORED, REGISTERED]),
]


@pytest.mark.parametrize(("name", "fail", "status", "failed_step", "rows", "events"), SCENARIOS,
                         ids=[s[0] for s in SCENARIOS])
def test_every_scenario_ends_with_the_rows_orchestration_leaves(
        choreo: Stack, name: str, fail: dict[str, str], status: str, failed_step: str | None,
        rows: dict[str, str | None], events: list[str]) -> None:
    signup = fresh_user()
    saga_id = sign_up(choreo, signup, **fail)
    saga = choreographed(choreo, saga_id)
    assert (saga["status"], saga["failed_step"]) == (status, failed_step), saga
    assert saga["reason"] == (None if failed_step is None else "error")
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True):
        with attempt:  # each service's relay tells the observer in its own time
            saga = choreographed(choreo, saga_id)
            assert event_types(saga) == events, "in the order they happened"
    owners = {"SignupRequested": "a", "AccountCreated": "a", "AccountFailed": "a", "AccountRemoved": "a",
              "AddressStored": "b", "AddressFailed": "b", "AddressRemoved": "b", "AddressRemovalFailed": "b",
              "PaymentRegistered": "c", "PaymentFailed": "c"}
    assert all(e["service"] == owners[e["type"]] for e in saga["events"]), "each event is its owner's fact"
    assert saga["input"] == signup
    assert_rows(choreo, saga_id, signup, rows)
    verdict = requests.get(f"{choreo.urls['orchestrator']}/choreography/sagas/{saga_id}/records", timeout=10)
    expected = "inconsistent" if status == "COMPENSATION_FAILED" else "consistent"  # needs attention
    assert verdict.json()["verdict"] == expected, verdict.text


def test_a_failed_compensation_needs_attention_for_the_compensations_error(choreo: Stack) -> None:
    """The consistency check flags the saga with what the compensation reported (B's undo
    failed), not the step failure that started the compensation (C's)."""
    saga_id = sign_up(choreo, fresh_user(), b="compensate_fail", c="before_commit")
    assert choreographed(choreo, saga_id)["status"] == "COMPENSATION_FAILED"
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            events = choreographed(choreo, saga_id)["events"]
            undo = [e for e in events if e["type"] == "AddressRemovalFailed"]
            assert undo and undo[0].get("error"), "B's report on the observer"
    flagged = [n for n in consistency(choreo)["needs_attention"] if n["saga_id"] == saga_id]
    assert [n["reason"] for n in flagged] == [f"a compensation failed: {undo[0]['error']}"], flagged


def test_a_timeout_compensates_and_the_late_commit_is_refused(choreo: Stack) -> None:
    """B outlasts the saga's deadline (4 s in the tests): A's watcher cancels the saga by event,
    C and B leave tombstones, A undoes itself; B's late commit then finds its tombstone."""
    signup = fresh_user()
    saga_id = sign_up(choreo, signup, b="timeout")
    saga = choreographed(choreo, saga_id, seconds=20)
    assert (saga["status"], saga["failed_step"], saga["reason"]) == ("COMPENSATED", "b", "timeout")
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            types = event_types(choreographed(choreo, saga_id))
            assert types[:3] == [REQUESTED, CREATED, "SignupTimedOut"]
            # B closes its step once, whichever reaches it first: the cancel travelling back
            # from C (AddressRemoved), or its own late wake-up past the deadline (AddressFailed).
            # Either way A then undoes itself, once.
            b_said = [t for t in types if t in ("AddressRemoved", "AddressFailed")]
            assert len(b_said) == 1 and types.count("AccountRemoved") == 1, types
            assert sorted(types[3:]) == sorted(["PaymentFailed", *b_said, "AccountRemoved"]), types
            assert types.index(b_said[0]) < types.index("AccountRemoved"), types
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.1), reraise=True):
        with attempt:  # B wakes after the deadline and tries to apply
            assert f"saga {saga_id}: apply refused" in choreo.log("b")
    assert_rows(choreo, saga_id, signup, {"a": "COMPENSATED", "b": "CANCELLED", "c": "CANCELLED"})


def test_a_timeout_at_the_entry_itself(choreo: Stack) -> None:
    signup = fresh_user()
    saga_id = sign_up(choreo, signup, a="timeout")
    saga = choreographed(choreo, saga_id, seconds=20)
    assert (saga["status"], saga["failed_step"], saga["reason"]) == ("COMPENSATED", "a", "timeout")
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert f"saga {saga_id}: apply refused" in choreo.log("a")
    # A's own refusal ends the saga (nothing applied anywhere); the cancel the deadline sent
    # may still be on its way to B and C, and leaves their tombstones when it arrives.
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert_rows(choreo, saga_id, signup, {"a": "CANCELLED", "b": "CANCELLED", "c": "CANCELLED"})


def test_query_flags_work_as_the_body_does(choreo: Stack) -> None:
    signup = fresh_user()
    answer = requests.post(f"{choreo.urls['a']}/signups?fail_c=before_commit", json=signup, timeout=10)
    assert answer.status_code == 202
    saga = choreographed(choreo, answer.json()["saga_id"])
    assert (saga["status"], saga["failed_step"]) == ("COMPENSATED", "c")


def test_the_dashboard_starts_one_through_the_orchestrators_origin(choreo: Stack) -> None:
    answer = requests.post(f"{choreo.urls['orchestrator']}/choreography/signups?fail_b=before_commit",
                           json=fresh_user(), timeout=10)
    assert answer.status_code == 202, answer.text
    assert choreographed(choreo, answer.json()["saga_id"])["status"] == "COMPENSATED"


def counts(stack: Stack) -> dict[str, int]:
    return {"table_a": stack.count("a", "table_a"), "inbox_a": stack.count("a", "inbox"),
            "outbox_a": stack.count("a", "outbox"), "deadlines": stack.count("a", "saga_deadlines"),
            "observed": stack.count("orchestrator", "choreo_sagas")}


@pytest.mark.parametrize("body", [
    {"username": "ada", "address": "x"},
    {"username": "ada", "address": "x", "payment": "y", "fail": {"b": "explode"}},
    {"username": "ada", "address": "x", "payment": "y", "fail": {"d": "before_commit"}},
    {"username": "ada\nforged", "address": "x", "payment": "y"},
    {"username": "", "address": "x", "payment": "y"},
    {"username": "ada", "address": "x", "payment": "y", "fail": []},
])
def test_bad_input_is_400_and_writes_no_row_and_no_event(choreo: Stack, body: dict[str, Any]) -> None:
    before = counts(choreo)
    assert_json_error(requests.post(f"{choreo.urls['a']}/signups", json=body, timeout=10), 400)
    assert counts(choreo) == before


def test_sign_ups_enter_at_a_only(choreo: Stack) -> None:
    assert_json_error(requests.post(f"{choreo.urls['b']}/signups", json=fresh_user(), timeout=10), 404)


def test_the_observer_lists_newest_first_filters_and_404s(choreo: Stack) -> None:
    """Newest first: in the order the observer learned of each saga (two sagas under way at
    once may reach it in either order, over a broker most of all: the second begins after)."""
    first = sign_up(choreo, fresh_user())
    choreographed(choreo, first)
    second = sign_up(choreo, fresh_user(), a="before_commit")
    choreographed(choreo, second)
    base = f"{choreo.urls['orchestrator']}/choreography/sagas"
    listed = requests.get(f"{base}?limit=2", timeout=5).json()["sagas"]
    assert [s["saga_id"] for s in listed] == [second, first]
    completed = requests.get(f"{base}?status=COMPLETED&limit=500", timeout=5).json()["sagas"]
    assert first in [s["saga_id"] for s in completed] and second not in [s["saga_id"] for s in completed]
    assert_json_error(requests.get(f"{base}/{uuid.uuid4().hex}", timeout=5), 404)
    # Nobody knows that saga: 404 at once, not after the 30 s asked for (the timeout would fail).
    assert_json_error(requests.get(f"{base}/{uuid.uuid4().hex}?wait=30", timeout=10), 404)
    cross_site = requests.get(f"{base}/{first}?wait=30", headers={"Sec-Fetch-Site": "cross-site"}, timeout=10)
    assert_json_error(cross_site, 403)
    assert_json_error(requests.get(f"{base}?status=HAPPY", timeout=5), 400)
    flow = requests.get(f"{choreo.urls['orchestrator']}/choreography/flow", timeout=5).json()
    assert flow["steps"] == ["a", "b", "c"] and flow["reactions"][0]["on"] == REQUESTED


def test_the_consistency_check_covers_choreographed_sagas(choreo: Stack) -> None:
    signup = fresh_user()
    done = sign_up(choreo, signup)
    choreographed(choreo, done)
    assert consistency(choreo)["violations"] == []
    change = text("UPDATE table_c SET payment_method = :p WHERE saga_id = :s")
    with choreo.engines["c"].begin() as connection:  # the payment changed by hand
        connection.execute(change, {"s": done, "p": "stolen"})
    found = [(v["saga_id"], v["kind"], v["model"]) for v in consistency(choreo)["violations"]]
    assert found == [(done, "value_mismatch", "choreography")]
    with choreo.engines["c"].begin() as connection:
        connection.execute(change, {"s": done, "p": signup["payment"]})
    assert consistency(choreo)["violations"] == []
