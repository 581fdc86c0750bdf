"""Two orchestrators on one saga log: one is killed, the other finishes its sagas, never both."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import text

from scripts.stack import Stack, free_port
from tests.support import TEST_DATABASE_URL, wait_for_saga


@pytest.fixture
def two_orchestrators(tmp_path) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    stack = Stack(tmp_path / "stack", TEST_DATABASE_URL).start()
    port = free_port()
    stack.start_process("orchestrator", port=port, label="second",
                        extra_env={"ORCHESTRATOR_ID": "second-orchestrator"})
    stack.urls["second"] = f"http://127.0.0.1:{port}"
    stack.wait_healthy("second")
    yield stack
    stack.stop()


def owners_in_order(stack: Stack, saga_id: str) -> list[str]:
    """Which orchestrator made each attempt, runs of the same one folded."""
    with stack.engines["orchestrator"].connect() as connection:
        owners = connection.execute(text("SELECT orchestrator FROM saga_events WHERE saga_id = :s "
                                         "ORDER BY id"), {"s": saga_id}).scalars().all()
    return [owner for i, owner in enumerate(owners) if i == 0 or owners[i - 1] != owner]


def test_a_dead_orchestrators_sagas_are_taken_over_exactly_once(two_orchestrators: Stack) -> None:
    stack = two_orchestrators
    first_id = stack.env("orchestrator")["ORCHESTRATOR_ID"]

    def start(i: int) -> str:
        target = stack.urls["orchestrator" if i % 2 == 0 else "second"]
        answer = requests.post(f"{target}/start", headers={"Prefer": "respond-async"}, timeout=10,
                               json={"username": f"u{i}", "address": "a", "payment": "p",
                                     "fail": {"b": "delay:400", "c": "delay:400"}})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["saga_id"])

    with ThreadPoolExecutor(8) as pool:
        saga_ids = list(pool.map(start, range(16)))
    stack.kill("orchestrator")  # half of the sagas are in flight there
    for saga_id in saga_ids:
        wait_for_saga(stack, saga_id, "COMPLETED", seconds=60)
        assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED"] * 3
        owners = owners_in_order(stack, saga_id)
        # Driven by one orchestrator, or by the first and then (after its death) the second:
        # never handed back and forth, so never by both at once.
        assert owners in (["second-orchestrator"], [first_id], [first_id, "second-orchestrator"]), owners
    taken_over = [s for s in saga_ids if owners_in_order(stack, s) == [first_id, "second-orchestrator"]]
    assert taken_over, "the kill should have left sagas for the second orchestrator to finish"
    with stack.engines["orchestrator"].connect() as connection:
        duplicates = connection.execute(text(
            "SELECT saga_id, step, action, attempt, COUNT(*) FROM saga_events "
            "GROUP BY saga_id, step, action, attempt HAVING COUNT(*) > 1")).all()
    assert duplicates == [], "an attempt number made twice means two drivers at once"
    report = requests.get(f"{stack.urls['second']}/consistency", timeout=30).json()
    assert (report["ok"], report["violations"]) == (True, [])
