"""The saga log survives the orchestrator: SIGKILL it mid-saga and the saga still finishes."""

from __future__ import annotations

from scripts.stack import Stack, free_port
from tests.support.calls import start_async, wait_for_saga


def test_killed_while_waiting_on_a_participant_resumes_forward(crash_stack: Stack) -> None:
    stack = crash_stack
    saga_id = start_async(stack, b="delay:800")
    wait_for_saga(stack, saga_id, "RUNNING", current_step=1)  # B's invoke is in flight
    stack.kill("orchestrator")
    stack.restart("orchestrator")
    wait_for_saga(stack, saga_id, "COMPLETED")
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED"] * 3
    assert len(stack.rows_of("b", saga_id)) == 1, "B applied once, however often it was invoked"


def test_killed_while_compensating_resumes_the_compensation(crash_stack: Stack) -> None:
    stack = crash_stack
    saga_id = start_async(stack, b="compensate_transient:3", c="before_commit")
    wait_for_saga(stack, saga_id, "COMPENSATING", current_step=1)  # compensating B, failing
    stack.kill("orchestrator")
    stack.restart("orchestrator")
    wait_for_saga(stack, saga_id, "COMPENSATED")
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["COMPENSATED", "COMPENSATED",
                                                             "CANCELLED"]
    attempts = [e[2] for e in stack.events(saga_id) if e[:2] == ("b", "compensate")]
    assert attempts == list(range(1, len(attempts) + 1)), "attempt numbers go on after restart"
    assert attempts[-1] == 4, "compensate_transient:3 lets the 4th attempt through"


def test_another_orchestrator_takes_over_when_the_lease_runs_out(crash_stack: Stack) -> None:
    stack = crash_stack
    saga_id = start_async(stack, c="delay:800")
    wait_for_saga(stack, saga_id, "RUNNING", current_step=2)
    stack.kill("orchestrator")
    port = free_port()
    stack.start_process("orchestrator", port=port, label="second",
                        extra_env={"ORCHESTRATOR_ID": "second-orchestrator"})
    stack.wait_healthy("second", url=f"http://127.0.0.1:{port}")
    row = wait_for_saga(stack, saga_id, "COMPLETED")
    assert [stack.row_status(s, saga_id) for s in "abc"] == ["APPLIED"] * 3
    assert row["lease_owner"] is None, "a finished saga holds no lease"
    assert "claimed for recovery" in stack.log("second")
    stack.kill("second")  # the next test gets the shared system as it was
