"""The engine that drives any saga definition: invoke forward, compensate in reverse.

It works only from the saga log, so the same `drive` runs a new saga and finishes one
that a dead orchestrator left behind. Every state is written before it is acted on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from common.status import SagaStatus
from orchestrator.client import Attempt, ParticipantClient
from orchestrator.failpoints import Failpoints
from orchestrator.saga import Step
from orchestrator.store import Event, LeaseLost, Saga, SagaStore, Transition, new_saga_id

log = logging.getLogger("orchestrator.saga")


class SagaEngine:
    """Runs sagas of `steps` against participants at `urls`, logging to `store`."""

    def __init__(self, steps: Sequence[Step], urls: dict[str, str], store: SagaStore,
                 client: ParticipantClient, owner: str, invoke_retries: int,
                 compensation_retries: int, failpoints: Failpoints | None = None,
                 background: ThreadPoolExecutor | None = None) -> None:
        self.steps = tuple(steps)
        self.urls = urls
        self.store = store
        self.client = client
        self.owner = owner
        self.invoke_retries = invoke_retries
        self.compensation_retries = compensation_retries
        self.failpoints = failpoints or Failpoints(None)
        self.background = background or ThreadPoolExecutor(4, thread_name_prefix="saga")
        # Sagas this process drives or has queued: all share our lease owner id, so the lease
        # cannot tell them apart; this set keeps recovery from starting a second driver here.
        self._busy: set[str] = set()
        self._busy_guard = threading.Lock()

    def busy(self, saga_id: str) -> bool:
        """Is this process already driving (or about to drive) the saga?"""
        with self._busy_guard:
            return saga_id in self._busy

    def create(self, saga_input: dict[str, str], faults: dict[str, str],
               idempotency_key: str | None = None, request_hash: str | None = None) -> Saga:
        """Log a new saga, leased to us, before any step runs."""
        saga = self.store.create(new_saga_id(), saga_input, faults, self.owner,
                                 idempotency_key, request_hash)
        log.info("saga %s: started %s fail=%s", saga.id, saga_input.get("username"), faults)
        return saga

    def drive(self, saga_id: str, resumed: bool = False, reopened: bool = False,
              logged: Saga | None = None) -> Saga:
        """Drive a saga we hold the lease on until it finishes (or another orchestrator takes it).

        `resumed`: another process (or a crash) interrupted it, so the log may already hold
        attempts of the step at hand. `reopened`: a failed compensation gets a new round,
        with a full set of retries. `logged`: the saga as this process just logged it
        (spares reading it back).
        The saga is read from the log once; after that our own writes are the truth, since
        the lease keeps every other orchestrator from writing.
        """
        with self._busy_guard:
            self._busy.add(saga_id)
        try:
            saga = logged or self.store.get(saga_id)
            assert saga is not None, f"saga {saga_id} is not in the log"
            try:
                while not saga.status.finished:
                    if saga.status is SagaStatus.RUNNING:
                        saga = self._forward(saga, resumed)
                    else:
                        saga = self._backward(saga, resumed, reopened)
                    resumed = reopened = False
            except LeaseLost:
                log.warning("saga %s: lease lost; another orchestrator drives it now", saga_id)
                saga = self.store.get(saga_id) or saga
            return saga
        finally:
            with self._busy_guard:
                self._busy.discard(saga_id)

    def reopen(self, saga_id: str) -> bool:
        """Take a COMPENSATION_FAILED saga back to COMPENSATING, its faults cleared; False if it is not."""
        reopened = self.store.reopen_failed_compensation(saga_id, self.owner, clear_faults=True)
        if reopened:
            log.info("saga %s: retrying the compensation by request (injected faults cleared)", saga_id)
        return reopened

    def submit(self, saga_id: str, resumed: bool = False, reopened: bool = False) -> None:
        """Drive a saga we hold on a background thread."""
        with self._busy_guard:
            self._busy.add(saga_id)
        self.background.submit(self._drive_logged, saga_id, resumed, reopened)

    def _drive_logged(self, saga_id: str, resumed: bool, reopened: bool) -> None:
        try:
            self.drive(saga_id, resumed, reopened)
        except Exception:  # noqa: BLE001 - nobody else would see it
            log.exception("saga %s: driving failed; recovery resumes it when the lease ends",
                          saga_id)

    def _forward(self, saga: Saga, resumed: bool) -> Saga:
        k = saga.current_step
        step = self.steps[k]
        done = k + 1 == len(self.steps)
        applied = Transition(SagaStatus.COMPLETED if done else SagaStatus.RUNNING, k + 1)

        def failed(last: Attempt) -> Transition:
            # Its effect may still have committed (after_commit, a late commit after a
            # timeout), so compensation starts with this very step.
            reason = "timeout" if last.outcome == "timeout" else "error"
            return Transition(SagaStatus.COMPENSATING, k, failed_step=step.name, reason=reason,
                              error=f"step {step.name}: {last.error}")

        new = self._call(saga, step, "invoke", {"saga_id": saga.id, **saga.input},
                         self.invoke_retries, resumed, False, applied, failed)
        if new.status is SagaStatus.COMPLETED:
            log.info("saga %s: COMPLETED", saga.id)
        elif new.status is SagaStatus.COMPENSATING:
            log.warning("saga %s: step %s failed (%s); compensating", saga.id, step.name, new.error)
        return new

    def _backward(self, saga: Saga, resumed: bool, reopened: bool) -> Saga:
        k = saga.current_step
        step = self.steps[k]
        undone = Transition(SagaStatus.COMPENSATED if k == 0 else SagaStatus.COMPENSATING, k - 1)

        def failed(last: Attempt) -> Transition:
            return Transition(SagaStatus.COMPENSATION_FAILED, k,
                              compensation_error=f"compensation of step {step.name} failed "
                                                 f"at attempt {last.number}: {last.error}")

        new = self._call(saga, step, "compensate", {"saga_id": saga.id},
                         self.compensation_retries, resumed or reopened, reopened, undone, failed)
        if new.status is SagaStatus.COMPENSATED:
            log.info("saga %s: COMPENSATED", saga.id)
        elif new.status is SagaStatus.COMPENSATION_FAILED:
            log.error("saga %s: COMPENSATION_FAILED: %s", saga.id, new.compensation_error)
        return new

    def _call(self, saga: Saga, step: Step, action: str, payload: dict[str, Any], retries: int,
              resumed: bool, fresh_retries: bool, succeeded: Transition,
              failed: Callable[[Attempt], Transition]) -> Saga:
        """Call one step's action with retries; log each attempt, and with the deciding one,
        in the same transaction, the saga's next state. Returns the saga in that state."""
        # Attempt numbers go on from the log. Retries are counted across restarts too (but a
        # resumed step still gets one attempt, so a crash before its answer was logged is
        # never taken for a failure); a reopened compensation starts a new set of retries.
        made = self.store.attempts_so_far(saga.id, step.name, action) if resumed else 0
        first = made + 1
        if not fresh_retries:
            retries = max(0, retries - made)
        decided: list[Transition] = []

        def record(attempt: Attempt) -> None:
            if attempt.outcome == "ok":  # the participant committed; the log does not know yet
                self.failpoints.hit(f"after_{action}", step.name)
                decided.append(succeeded)
            elif not attempt.retryable or attempt.number >= first + retries:
                decided.append(failed(attempt))
            self.store.record_attempt(saga.id, self.owner, Event(
                step.name, action, attempt.number, attempt.http_status, attempt.outcome,
                attempt.latency_ms, attempt.error), decided[-1] if decided else None)
            log.info("saga %s: %s %s attempt %d -> %s%s (%d ms)", saga.id, action, step.name,
                     attempt.number, attempt.outcome,
                     f" {attempt.http_status}" if attempt.http_status else "", attempt.latency_ms)

        self.failpoints.hit(f"before_{action}", step.name)
        self.client.post(f"{self.urls[step.name]}/{action}", payload, retries=retries,
                         first_attempt=first, fault=saga.faults.get(step.name), on_attempt=record)
        assert decided, "the last attempt always decides"
        return decided[-1].applied_to(saga)
