"""Idempotency-Key on /start, retrying a failed compensation, and the consistency check."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import requests
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import RECOVERS_FAILED_COMPENSATIONS, ROOT, Stack
from tests.support.calls import wait_for_saga
from tests.support.checks import consistency
from tests.support.people import fresh_user


def start(stack: Stack, body: dict[str, Any], key: str | None = None, **headers: str) -> requests.Response:
    if key:
        headers["Idempotency-Key"] = key
    return requests.post(f"{stack.urls['orchestrator']}/start", json=body, headers=headers, timeout=60)


def test_a_repeated_key_answers_as_the_first_and_starts_nothing(stack: Stack) -> None:
    key, body = uuid.uuid4().hex, {**fresh_user(), "fail": {"b": "before_commit"}}
    first = start(stack, body, key)
    sagas = stack.count("orchestrator", "sagas")
    again = start(stack, body, key)  # the same request again, on purpose
    assert (again.status_code, again.json()) == (first.status_code, first.json())
    assert first.status_code == 500 and first.json()["status"] == "COMPENSATED"
    assert stack.count("orchestrator", "sagas") == sagas, "the repeat started nothing"


def test_the_same_key_with_another_body_is_422(stack: Stack) -> None:
    key = uuid.uuid4().hex
    first = start(stack, fresh_user(), key)
    assert first.status_code == 200
    sagas = stack.count("orchestrator", "sagas")
    other = start(stack, fresh_user(), key)
    assert other.status_code == 422, other.text
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert stack.count("orchestrator", "sagas") == sagas


def test_a_repeat_while_the_first_runs_is_409(stack: Stack) -> None:
    key = uuid.uuid4().hex
    body = {**fresh_user(), "fail": {"b": "delay:600"}}  # sent three times with one key, on purpose
    first: dict[str, requests.Response] = {}
    runner = threading.Thread(target=lambda: first.update(answer=start(stack, body, key)))
    runner.start()
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.01), reraise=True):
        with attempt, stack.engines["orchestrator"].connect() as connection:  # until it is logged
            assert connection.execute(text("SELECT COUNT(*) FROM sagas WHERE idempotency_key = :k"),
                                      {"k": key}).scalar_one()
    during = start(stack, body, key)
    runner.join()
    assert during.status_code == 409, during.text
    assert during.json()["error"]["saga_id"] == first["answer"].json()["saga_id"]
    after = start(stack, body, key)
    assert (after.status_code, after.json()) == (200, first["answer"].json())


def test_retry_resumes_a_failed_compensation(stack: Stack) -> None:
    failed = start(stack, {**fresh_user(), "fail": {"b": "compensate_fail", "c": "before_commit"}})
    saga_id = failed.json()["saga_id"]
    assert failed.json()["status"] == "COMPENSATION_FAILED"
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED", "APPLIED", "CANCELLED"]
    retried = requests.post(f"{stack.urls['orchestrator']}/sagas/{saga_id}/retry", timeout=30)
    assert retried.status_code == 200 and retried.json()["status"] == "COMPENSATED", retried.text
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["COMPENSATED", "COMPENSATED", "CANCELLED"]
    saga = stack.saga_row(saga_id)
    assert (saga["compensation_rounds"], saga["faults"], saga["compensation_error"]) == (1, "{}", None)
    assert "compensation_error" not in retried.json()
    again = requests.post(f"{stack.urls['orchestrator']}/sagas/{saga_id}/retry", timeout=30)
    assert again.status_code == 409, again.text
    assert requests.post(f"{stack.urls['orchestrator']}/sagas/nope/retry", timeout=5).status_code == 404


def test_the_recovery_loop_retries_a_failed_compensation_once_the_service_is_back(
        make_stack: Callable[..., Stack]) -> None:
    stack = make_stack(**RECOVERS_FAILED_COMPENSATIONS)
    stack.kill("b")
    failed = start(stack, fresh_user())  # B unreachable: invoke fails, and so does compensating B
    saga_id = failed.json()["saga_id"]
    assert failed.json()["status"] == "COMPENSATION_FAILED", failed.text
    assert stack.row_status("a", saga_id) == "APPLIED"
    stack.restart("b")
    wait_for_saga(stack, saga_id, "COMPENSATED")
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["COMPENSATED", "CANCELLED", None]


def run_check(stack: Stack) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORCHESTRATOR_DATABASE_URL": stack.db_urls["orchestrator"]}
    env.update({f"SERVICE_{s.upper()}_URL": stack.urls[s] for s in "abc"})
    return subprocess.run([sys.executable, "-m", "orchestrator.check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_consistency_finds_every_kind_of_violation(fresh_stack: Stack) -> None:
    stack = fresh_stack
    done = start(stack, fresh_user()).json()["saga_id"]
    other = start(stack, fresh_user()).json()["saga_id"]
    undone = start(stack, {**fresh_user(), "fail": {"c": "before_commit"}}).json()["saga_id"]
    mixed = start(stack, fresh_user()).json()["saga_id"]
    report = requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=30).json()
    assert (report["ok"], report["checked"], report["violations"]) == (True, 4, [])
    assert run_check(stack).returncode == 0
    with stack.engines["a"].begin() as connection:  # break each guarantee by hand
        connection.execute(text("UPDATE table_a SET status = 'COMPENSATED' WHERE saga_id = :s"), {"s": done})
    with stack.engines["b"].begin() as connection:
        connection.execute(text("UPDATE table_b SET status = 'APPLIED' WHERE saga_id = :s"), {"s": undone})
    with stack.engines["b"].begin() as connection:  # the intruder's address, on a COMPLETED saga
        connection.execute(text("UPDATE table_b SET address = 'elsewhere' WHERE saga_id = :s"), {"s": other})
    with stack.engines["a"].begin() as connection:  # a row the choreography would have made
        connection.execute(text("UPDATE table_a SET model = 'choreography' WHERE saga_id = :s"), {"s": mixed})
    orphan = uuid.uuid4().hex
    stack.signed_post("c", "/invoke", {"saga_id": orphan, "payment": "x"})
    expected = {(done, "completed_without_row"), (undone, "compensated_with_applied_row"),
                (other, "value_mismatch"), (mixed, "model_mismatch"), (orphan, "applied_row_without_saga")}
    report = requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=30).json()
    assert {(v["saga_id"], v["kind"]) for v in report["violations"]} == expected
    assert (report["ok"], report["complete"], report["next"]) == (False, True, None)
    # A page at a time (one saga each): the same violations, found over several pages.
    paged = consistency(stack, limit=1)
    assert {(v["saga_id"], v["kind"]) for v in paged["violations"]} == expected
    assert (paged["checked"], paged["pages"]) == (report["checked"], report["checked"] + 1)
    check = run_check(stack)
    assert check.returncode == 1 and "5 violation(s)" in check.stderr, check.stderr
    cross_site = requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=10,
                              headers={"Sec-Fetch-Site": "cross-site"})
    assert cross_site.status_code == 403, "a page elsewhere cannot make it scan"


def test_the_check_reports_nothing_false_under_load(fresh_stack: Stack) -> None:
    """16 clients start sagas (some failing) while the check runs again and again."""
    stack = fresh_stack
    stop = threading.Event()
    started: list[int] = []

    def client(number: int) -> None:
        while not stop.is_set():
            fail = {"c": "before_commit"} if number % 4 == 0 else {}
            # 504: a step outlasted the tests' 1 s call timeout on a busy machine, and the saga
            # was compensated; an ending like the others, for the check to get right.
            assert start(stack, {**fresh_user(), "fail": fail}).status_code in (200, 500, 504)
            started.append(1)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    reports = []
    try:  # check again and again until 8 checks have run and over 100 sagas have started
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.2), reraise=True):
            with attempt:  # (a busy machine runs fewer sagas a second: wait for them)
                reports.append(requests.get(f"{stack.urls['orchestrator']}/consistency", timeout=60).json())
                assert len(reports) >= 8 and len(started) > 100, (len(reports), len(started))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert len(started) > 100, "the load ran"
    assert all(r["complete"] for r in reports)
    assert [v for r in reports for v in r["violations"]] == [], "no violation while sagas run"
    assert any(r["in_progress"] for r in reports), "the check ran while sagas were in flight"
