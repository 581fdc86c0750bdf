"""Several orchestrators on one saga log: each saga is driven by one instance at a time, always.

Instances are told apart by host and process, not by ORCHESTRATOR_ID alone, and every write
is fenced by owner and lease epoch: killed, frozen or twinned, no two drive one saga.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from common.status import SagaStatus
from scripts.stack import Stack, free_port
from tests.support.calls import wait_for_saga
from tests.support.checks import consistency
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL

SLOW = {"b": "delay:400", "c": "delay:400"}


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    running = Stack(tmp_path / "stack", TEST_DATABASE_URL).start()
    yield running
    running.stop()


def add_orchestrator(stack: Stack, label: str, orchestrator_id: str) -> None:
    port = free_port()
    stack.urls[label] = f"http://127.0.0.1:{port}"
    stack.start_process("orchestrator", port=port, label=label,
                        extra_env={"ORCHESTRATOR_ID": orchestrator_id})
    stack.wait_healthy(label)


def owners_in_order(stack: Stack, saga_id: str) -> list[str]:
    """Which instance made each attempt, runs of the same one folded."""
    with stack.engines["orchestrator"].connect() as connection:
        owners = connection.execute(text("SELECT orchestrator FROM saga_events WHERE saga_id = :s "
                                         "ORDER BY id"), {"s": saga_id}).scalars().all()
    return [owner for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]


def running_sagas_driven_by(stack: Stack, orchestrator_id: str) -> int:
    """Sagas still RUNNING that an instance of this orchestrator has made attempts for."""
    with stack.engines["orchestrator"].connect() as connection:
        return int(connection.execute(text(
            "SELECT COUNT(*) FROM sagas WHERE status = 'RUNNING' AND EXISTS (SELECT 1 FROM saga_events "
            "WHERE saga_events.saga_id = sagas.id AND saga_events.orchestrator LIKE :owner)"),
            {"owner": f"{orchestrator_id}@%"}).scalar_one())


def start_many(stack: Stack, targets: list[str], count: int) -> list[str]:
    def start(i: int) -> str:
        answer = requests.post(f"{stack.urls[targets[i % len(targets)]]}/start", timeout=10,
                               headers={"Prefer": "respond-async"}, json={**fresh_user(), "fail": SLOW})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["saga_id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(start, range(count)))


def ended(stack: Stack, saga_id: str) -> bool:
    row = stack.saga_row(saga_id)
    return row is not None and SagaStatus(row["status"]).finished


def start_in_flight(stack: Stack, targets: list[str], count: int, orchestrator_id: str) -> list[str]:
    """Start `count` sagas, and another batch if a busy machine ended them all before one was
    seen in flight at an instance of `orchestrator_id`: every saga started, one still running there."""
    saga_ids: list[str] = []
    for _ in range(5):
        batch = start_many(stack, targets, count)
        saga_ids += batch
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.02), reraise=True):
            with attempt:  # until one is in flight there, or the whole batch has ended
                running = running_sagas_driven_by(stack, orchestrator_id)
                assert running > 0 or all(ended(stack, saga_id) for saga_id in batch)
        if running > 0:
            return saga_ids
    raise AssertionError(f"five batches of sagas ended before one was seen in flight at {orchestrator_id}")


def assert_never_two_drivers(stack: Stack, via: str = "orchestrator") -> None:
    with stack.engines["orchestrator"].connect() as connection:
        duplicates = connection.execute(text(
            "SELECT saga_id, step, action, attempt, COUNT(*) FROM saga_events "
            "GROUP BY saga_id, step, action, attempt HAVING COUNT(*) > 1")).all()
    assert duplicates == [], "an attempt number made twice means two drivers at once"
    assert consistency(stack, via)["violations"] == []


def test_a_dead_orchestrators_sagas_are_taken_over_exactly_once(stack: Stack) -> None:
    add_orchestrator(stack, "second", "second-orchestrator")
    first = stack.env("orchestrator")["ORCHESTRATOR_ID"]
    saga_ids = start_in_flight(stack, ["orchestrator", "second"], 16, first)
    stack.kill("orchestrator")  # mid-saga: some of its sagas are in flight there
    for saga_id in saga_ids:
        wait_for_saga(stack, saga_id, "COMPLETED", seconds=60)
        assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED"] * 3
        names = [owner.split("@")[0] for owner in owners_in_order(stack, saga_id)]
        # Driven by one orchestrator, or by the first and then (after its death) the second:
        # never handed back and forth, so never by both at once.
        assert names in (["second-orchestrator"], [stack.env("orchestrator")["ORCHESTRATOR_ID"]],
                         [stack.env("orchestrator")["ORCHESTRATOR_ID"], "second-orchestrator"]), names
    assert any(len(owners_in_order(stack, s)) == 2 for s in saga_ids), \
        "the kill should have left sagas for the second orchestrator to finish"
    assert_never_two_drivers(stack, via="second")


def test_two_live_orchestrators_under_one_id_never_share_a_saga(stack: Stack) -> None:
    """The same ORCHESTRATOR_ID twice (as a second gunicorn worker would have): neither takes
    the other's live sagas; when one dies, the other finishes its sagas, once."""
    same = stack.env("orchestrator")["ORCHESTRATOR_ID"]
    add_orchestrator(stack, "twin", same)
    saga_ids = start_many(stack, ["orchestrator", "twin"], 16)
    for saga_id in saga_ids:
        wait_for_saga(stack, saga_id, "COMPLETED", seconds=60)
        assert len(owners_in_order(stack, saga_id)) == 1, "both alive: one driver a saga, start to end"
    instances = {owners_in_order(stack, s)[0] for s in saga_ids}
    assert len(instances) == 2 and all(i.startswith(f"{same}@") for i in instances), instances
    saga_ids = start_many(stack, ["orchestrator", "twin"], 16)
    stack.kill("twin")
    for saga_id in saga_ids:
        wait_for_saga(stack, saga_id, "COMPLETED", seconds=60)
    assert_never_two_drivers(stack)


def logged_time(value: Any) -> datetime:
    """A time as the saga log holds it (a datetime, or SQLite's text), naive UTC."""
    at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return at.replace(tzinfo=None)


def test_a_restart_under_the_same_id_takes_its_dead_predecessors_sagas_at_once(stack: Stack) -> None:
    """At once, not once the dead instance's 60 s leases have run out: each saga it held is
    finished before its old lease would have let anyone else take it (by the log's own clock)."""
    stack.kill("orchestrator")
    stack.restart("orchestrator", extra_env={"LEASE_SECONDS": "60"})
    saga_ids = start_in_flight(stack, ["orchestrator"], 6, stack.env("orchestrator")["ORCHESTRATOR_ID"])
    stack.kill("orchestrator")
    leases = {saga_id: stack.saga_row(saga_id)["lease_expires_at"] for saga_id in saga_ids}
    held = {saga_id: logged_time(until) for saga_id, until in leases.items() if until is not None}
    assert held, "the kill should have left sagas under the dead instance's leases"
    stack.restart("orchestrator", extra_env={"LEASE_SECONDS": "60"})
    for saga_id in saga_ids:
        wait_for_saga(stack, saga_id, "COMPLETED", seconds=90)
    for saga_id, until in held.items():
        finished = logged_time(stack.saga_row(saga_id)["updated_at"])
        assert finished < until, f"{saga_id} finished at {finished}, after its old lease ran out ({until})"
    assert "taking back" in stack.log("orchestrator")
    assert_never_two_drivers(stack)


def test_a_frozen_orchestrator_that_wakes_after_its_lease_cannot_write(stack: Stack) -> None:
    add_orchestrator(stack, "second", "second-orchestrator")
    body = {**fresh_user(), "fail": {"b": "delay:800"}}
    answer = requests.post(f"{stack.urls['orchestrator']}/start", json=body, timeout=10,
                           headers={"Prefer": "respond-async"})
    saga_id = answer.json()["saga_id"]
    wait_for_saga(stack, saga_id, "RUNNING", current_step=1)  # its call to B is in flight
    frozen = stack.processes["orchestrator"].pid
    os.killpg(frozen, signal.SIGSTOP)
    try:
        wait_for_saga(stack, saga_id, "COMPLETED", seconds=30)  # the second took it over
    finally:
        os.killpg(frozen, signal.SIGCONT)
    for attempt in Retrying(stop=stop_after_delay(15), wait=wait_fixed(0.05), reraise=True):
        with attempt:  # the woken driver's answer from B comes back; it tries to write, and stops
            assert f"saga {saga_id}: lease lost" in stack.log("orchestrator")
    first, second = owners_in_order(stack, saga_id)[0], owners_in_order(stack, saga_id)[-1]
    assert first.startswith("test-orchestrator-") and second.startswith("second-orchestrator@")
    assert owners_in_order(stack, saga_id) == [first, second], "nothing written after it woke"
    row = stack.saga_row(saga_id)
    assert row is not None and (row["status"], row["lease_owner"]) == ("COMPLETED", None)
    assert_never_two_drivers(stack)
