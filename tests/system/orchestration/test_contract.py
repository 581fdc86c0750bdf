"""The HTTP contract: idempotency, tombstones, races, bad input answered 4xx with nothing written."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import compensate, invoke
from tests.support.checks import all_counts, assert_json_error
from tests.support.people import fresh_user, fresh_value


def saga_id() -> str:
    return uuid.uuid4().hex


@pytest.mark.parametrize("service", ["a", "b", "c"])
def test_repeated_invoke_returns_the_same_answer_and_writes_once(stack: Stack, service: str) -> None:
    sid, value = saga_id(), fresh_value(service)
    before = stack.count(service, f"table_{service}")
    answers = [invoke(stack, service, sid, value) for _ in range(3)]
    assert {a.status_code for a in answers} == {200}
    assert {tuple(sorted(a.json().items())) for a in answers} == {
        (("saga_id", sid), ("service", service), ("status", "APPLIED"))}
    assert stack.count(service, f"table_{service}") == before + 1
    assert stack.row(service, sid) == {"saga_id": sid, "value": value, "status": "APPLIED"}


def test_repeated_compensate_is_idempotent(stack: Stack) -> None:
    sid = saga_id()
    invoke(stack, "b", sid)
    answers = [compensate(stack, "b", sid) for _ in range(3)]
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "COMPENSATED")] * 3
    assert stack.row_status("b", sid) == "COMPENSATED"


def test_compensate_before_invoke_leaves_a_tombstone_that_refuses_the_late_invoke(stack: Stack) -> None:
    sid = saga_id()
    first = compensate(stack, "c", sid)
    assert (first.status_code, first.json()["status"]) == (200, "CANCELLED")
    late = invoke(stack, "c", sid)
    assert late.status_code == 409, late.text
    assert late.json()["status"] == "CANCELLED"
    assert stack.row("c", sid) == {"saga_id": sid, "value": None, "status": "CANCELLED"}
    again = compensate(stack, "c", sid)
    assert (again.status_code, again.json()["status"]) == (200, "CANCELLED")


def test_confirm_releases_a_semantic_lock_once_and_refuses_what_it_cannot_confirm(stack: Stack) -> None:
    sid, username = saga_id(), fresh_value("a")
    held = stack.signed_post("a", "/invoke", {"saga_id": sid, "username": username,
                                              "isolation": "semantic_lock"})
    assert (held.status_code, held.json()["status"]) == (200, "PENDING"), held.text
    answers = [stack.signed_post("a", "/confirm", {"saga_id": sid}) for _ in range(3)]
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "APPLIED")] * 3
    assert stack.row("a", sid) == {"saga_id": sid, "value": username, "status": "APPLIED"}
    missing = saga_id()
    nothing = stack.signed_post("a", "/confirm", {"saga_id": missing})
    assert (nothing.status_code, nothing.json()["error"]["code"]) == (404, "not_found"), nothing.text
    assert stack.row("a", missing) is None, "a confirm writes nothing for a saga it does not know"
    compensate(stack, "a", sid)
    undone = stack.signed_post("a", "/confirm", {"saga_id": sid})
    assert (undone.status_code, undone.json()["status"]) == (409, "COMPENSATED")
    assert_json_error(stack.signed_post("a", "/confirm", {"saga_id": sid}, **{"X-Saga-Attempt": "0"}), 400)


def test_only_the_locking_steps_service_takes_a_semantic_lock(stack: Stack) -> None:
    sid = saga_id()
    refused = stack.signed_post("b", "/invoke", {"saga_id": sid, "address": fresh_value("b"),
                                                 "isolation": "semantic_lock"})
    assert_json_error(refused, 400)
    assert stack.row("b", sid) is None


def test_invoke_after_compensation_is_refused(stack: Stack) -> None:
    sid, username = saga_id(), fresh_value("a")
    invoke(stack, "a", sid, username)
    compensate(stack, "a", sid)
    retry = invoke(stack, "a", sid, username)  # the same saga's invoke again
    assert (retry.status_code, retry.json()["status"]) == (409, "COMPENSATED")
    assert stack.row_status("a", sid) == "COMPENSATED"


def test_concurrent_duplicate_invokes_make_one_row(stack: Stack) -> None:
    sid, username = saga_id(), fresh_value("a")
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: invoke(stack, "a", sid, username), range(16)))
    assert {a.status_code for a in answers} == {200}
    assert stack.rows_of("a", sid) == [{"saga_id": sid, "value": username, "status": "APPLIED"}], \
        "one row, however many invokes raced"


def test_an_invoke_in_flight_when_compensate_lands_is_refused_when_it_wakes(stack: Stack) -> None:
    """The late-commit interleaving, forced: invoke sleeps before its commit, compensate runs."""
    sid = saga_id()
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(invoke, stack, "b", sid, **{"X-Saga-Fault": "delay:2000"})
        # Only once B says the invoke is asleep before its commit is the compensate sent.
        for attempt in Retrying(stop=stop_after_delay(5), wait=wait_fixed(0.01), reraise=True):
            with attempt:
                assert f"saga {sid}: delay:2000 sleeps 2 s before its commit" in stack.log("b")
        first = compensate(stack, "b", sid)  # lands while the invoke sleeps
        assert (first.status_code, first.json()["status"]) == (200, "CANCELLED")
        assert not in_flight.done(), "the invoke must still be sleeping when compensate lands"
        late = in_flight.result()
    assert (late.status_code, late.json()["status"]) == (409, "CANCELLED")
    assert stack.row("b", sid) == {"saga_id": sid, "value": None, "status": "CANCELLED"}


@pytest.mark.parametrize("round_", range(5))
def test_concurrent_invoke_and_compensate_never_leave_an_applied_row(stack: Stack, round_: int) -> None:
    sids = [saga_id() for _ in range(8)]
    with ThreadPoolExecutor(16) as pool:
        invokes = [pool.submit(invoke, stack, "b", sid) for sid in sids]
        compensations = [pool.submit(compensate, stack, "b", sid) for sid in sids]
        results = [(i.result(), c.result()) for i, c in zip(invokes, compensations, strict=True)]
    for sid, (inv, comp) in zip(sids, results, strict=True):
        assert comp.status_code == 200
        final = stack.row_status("b", sid)
        assert final in ("COMPENSATED", "CANCELLED"), f"{sid}: {final}"
        # The answers agree with the row: invoke won (200, then compensated) or lost (409).
        expected = {"COMPENSATED": (200, "COMPENSATED"), "CANCELLED": (409, "CANCELLED")}[final]
        assert (inv.status_code, comp.json()["status"]) == expected


BAD_INVOKES = [
    ("not json", b"username=ada", 400),
    ("a JSON list", b"[1, 2]", 400),
    ("no saga_id", b'{"username": "ada"}', 400),
    ("no own field", b'{"saga_id": "s1"}', 400),
    ("a number", b'{"saga_id": "s1", "username": 5}', 400),
    ("an empty string", b'{"saga_id": "s1", "username": ""}', 400),
    ("an unknown field", b'{"saga_id": "s1", "username": "ada", "admin": true}', 400),
    ("a bad saga id", b'{"saga_id": "a b", "username": "ada"}', 400),
    ("an oversize body", b'{"saga_id": "s1", "username": "' + b"x" * 70_000 + b'"}', 413),
]


@pytest.mark.parametrize(("case", "payload", "status"), BAD_INVOKES, ids=[c[0] for c in BAD_INVOKES])
def test_bad_invoke_is_rejected_and_writes_nothing(stack: Stack, case: str, payload: bytes,
                                                   status: int) -> None:
    before = stack.count("a", "table_a")
    answer = stack.signed_post("a", "/invoke", payload)
    assert_json_error(answer, status)
    assert stack.count("a", "table_a") == before


@pytest.mark.parametrize("headers", [
    {"X-Saga-Fault": "explode"},
    {"X-Saga-Attempt": "first"},
    {"X-Saga-Attempt": "0"},
    {"X-Saga-Attempt": "9" * 5000},  # more digits than int() takes
    {"X-Saga-Fault": "timeout", "X-Saga-Timeout": "86400"},
    {"X-Saga-Fault": "timeout", "X-Saga-Timeout": "-1"},
])
def test_bad_fault_headers_are_rejected(stack: Stack, headers: dict[str, str]) -> None:
    sid = saga_id()
    assert_json_error(invoke(stack, "a", sid, **headers), 400)
    assert stack.row("a", sid) is None


def user_body(**changes: Any) -> dict[str, Any]:
    """A fresh user's sign-up, changed (a None removes the field)."""
    body: dict[str, Any] = {**fresh_user(), **changes}
    return {k: v for k, v in body.items() if v is not None}


BAD_STARTS = [
    ("missing username", {"json": user_body(username=None)}, "", 400),
    ("a number", {"json": user_body(address=12)}, "", 400),
    ("an empty string", {"json": user_body(payment="")}, "", 400),
    ("256 characters", {"json": user_body(username="x" * 256)}, "", 400),
    ("not json", {"data": b"{oops"}, "", 400),
    ("no body", {}, "", 400),
    ("an unknown field", {"json": user_body(role="admin")}, "", 400),
    ("an unknown service", {"json": user_body(fail={"d": "before_commit"})}, "", 400),
    ("an unknown mode", {"json": user_body(fail={"b": "explode"})}, "", 400),
    ("a mode missing its number", {"json": user_body(fail={"b": "transient"})}, "", 400),
    ("a number out of range", {"json": user_body(fail={"b": "delay:999999"})}, "", 400),
    ("fail not an object", {"json": user_body(fail="b")}, "", 400),
    ("an unknown query flag", {"json": user_body()}, "?fail_d=timeout", 400),
    ("an unknown query mode", {"json": user_body()}, "?fail_b=explode", 400),
    ("a fault given twice", {"json": user_body(fail={"b": "timeout"})}, "?fail_b=timeout", 400),
    ("an oversize body", {"data": b'{"username": "' + b"x" * 70_000 + b'"}'}, "", 413),
]


@pytest.mark.parametrize(("case", "kwargs", "query", "status"), BAD_STARTS, ids=[c[0] for c in BAD_STARTS])
def test_bad_start_is_rejected_and_records_nothing(stack: Stack, case: str, kwargs: dict[str, Any],
                                                  query: str, status: int) -> None:
    counts = all_counts(stack)
    answer = requests.post(f"{stack.urls['orchestrator']}/start{query}", timeout=10, **kwargs)
    assert_json_error(answer, status)
    assert all_counts(stack) == counts, "a rejected request must write nothing anywhere"


@pytest.mark.parametrize(("process", "path"), [
    ("orchestrator", "/sagas/no-such-saga"),
    ("orchestrator", "/sagas/no-such-saga/records"),
    ("orchestrator", "/no-such-page"),
    ("a", "/records/no-such-saga"),
    ("b", "/nowhere"),
])
def test_unknown_things_are_json_404s(stack: Stack, process: str, path: str) -> None:
    assert_json_error(requests.get(f"{stack.urls[process]}{path}", timeout=5), 404)


@pytest.mark.parametrize(("process", "path"), [
    ("orchestrator", "/sagas?limit=0"), ("orchestrator", "/sagas?limit=abc"),
    ("orchestrator", "/sagas?status=HAPPY"), ("orchestrator", "/sagas?colour=red"),
    ("c", "/records?limit=100000"),
])
def test_bad_query_arguments_are_400(stack: Stack, process: str, path: str) -> None:
    assert_json_error(requests.get(f"{stack.urls[process]}{path}", timeout=5), 400)


def test_wrong_method_is_a_json_405(stack: Stack) -> None:
    assert_json_error(requests.get(f"{stack.urls['a']}/invoke", timeout=5), 405)


def test_records_lists_newest_first(stack: Stack) -> None:
    first, second, payment = saga_id(), saga_id(), fresh_value("c")
    invoke(stack, "c", first, payment)
    invoke(stack, "c", second)
    records = requests.get(f"{stack.urls['c']}/records?limit=2", timeout=5).json()["records"]
    assert [r["saga_id"] for r in records] == [second, first]
    one = requests.get(f"{stack.urls['c']}/records/{first}", timeout=5).json()
    assert (one["service"], one["payment"], one["status"]) == ("c", payment, "APPLIED")


@pytest.mark.parametrize(("request_body", "service", "status_code"), [
    (None, "a", 200),
    ({"service": "b"}, "b", 200),
    ({"service": "c", "fail": "before_commit"}, "c", 500),
])
def test_test_status_probes_and_leaves_no_applied_row(stack: Stack, request_body: dict[str, str] | None,
                                                      service: str, status_code: int) -> None:
    answer = requests.post(f"{stack.urls['orchestrator']}/test_status", json=request_body, timeout=10)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["service"], body["status_code"]) == (service, status_code)
    assert body["response"]["saga_id" if status_code == 200 else "error"]
    assert body["undone"] is True
    assert stack.row_status(service, body["saga_id"]) in ("COMPENSATED", "CANCELLED")


def test_test_status_rejects_an_unknown_service(stack: Stack) -> None:
    assert_json_error(requests.post(f"{stack.urls['orchestrator']}/test_status",
                                    json={"service": "z"}, timeout=5), 400)


def test_health_everywhere(stack: Stack) -> None:
    for process, url in stack.urls.items():
        answer = requests.get(f"{url}/health", timeout=5)
        assert (answer.status_code, answer.json()["status"]) == (200, "ok"), process
