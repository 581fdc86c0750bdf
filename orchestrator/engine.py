"""The engine that drives any saga definition: invoke forward, compensate in reverse.

It works only from the saga log, so the same `drive` runs a new saga and finishes one
that a dead orchestrator left behind, under the definition the saga started with.
Every state is written before it is acted on; every attempt is written with the state it
decided, in one transaction.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from opentelemetry.trace import SpanKind, StatusCode

from common.db import utcnow
from common.declaration import Definitions, SagaDefinition, Step, StepKind
from common.ids import new_saga_id
from common.metrics import (
    CALL_DURATION,
    COMPENSATIONS,
    COMPENSATIONS_FAILED,
    LEASES_LOST,
    SAGA_DURATION,
    SAGAS_FINISHED,
    SAGAS_STARTED,
    STEP_ATTEMPTS,
)
from common.pacing import Pacing
from common.status import LIVE, Isolation, SagaStatus
from common.tracing import parent, span_in, start_saga_trace, trace_id
from orchestrator.client import Attempt, ParticipantClient
from orchestrator.failpoints import Failpoints
from orchestrator.model import Event, Lease, LeaseLost, Run, Saga, Transition
from orchestrator.store import SagaStore

log = logging.getLogger("orchestrator.saga")
MODEL = "orchestration"
# While another saga's semantic lock holds a step back: asked again after 0.1 s, then after twice
# as long each time, up to the 1 s a participant's Retry-After asks for (30 s of waiting: about
# 35 attempts in the saga's timeline, not 300).
LOCK_PACING = Pacing(0.1, 1.0, 0.0)


@dataclass(frozen=True)
class Defaults:
    """The policy of a step that sets none of its own, and how retries are paced."""

    timeout: float
    retries: int
    compensation_retries: int
    backoff: float  # the first wait between attempts, seconds; doubled each time
    backoff_max: float
    jitter: float  # up to this many seconds are added at random to each wait
    lock_wait: float = 30.0  # seconds a step waits for another saga's semantic lock before failing


def _always(then: Transition) -> Callable[[Attempt], Transition]:
    return lambda _attempt: then


@dataclass(frozen=True)
class Budget:
    """The attempts one call may make: numbers `first` to `last` (None: until it succeeds).

    The one stop rule: the engine must know which attempt is the last before it logs it,
    to write the saga's next state in the same transaction.
    """

    first: int
    last: int | None

    def exhausted_at(self, number: int) -> bool:
        return self.last is not None and number >= self.last


class SagaEngine:
    """Runs sagas of any known definition against participants at `urls`, logging to `store`."""

    def __init__(self, definitions: Definitions, urls: Mapping[str, str], store: SagaStore,
                 client: ParticipantClient, owner: str, defaults: Defaults,
                 failpoints: Failpoints | None = None,
                 background: ThreadPoolExecutor | None = None, queue_limit: int = 256) -> None:
        self.definitions = definitions
        self.urls = dict(urls)
        self.store = store
        self.client = client
        self.owner = owner
        self.defaults = defaults
        self.failpoints = failpoints or Failpoints(None)
        self.background = background or ThreadPoolExecutor(4, thread_name_prefix="saga")
        self.pacing = Pacing(defaults.backoff, defaults.backoff_max, defaults.jitter)
        # Sagas this process drives or has queued: all share our lease owner id, so the lease
        # cannot tell them apart; this set keeps recovery from starting a second driver here.
        self._busy: set[str] = set()
        self._busy_guard = threading.Lock()
        self.queue_limit = queue_limit
        self._in_background = 0  # drives submitted and not yet finished

    def has_room(self) -> bool:
        """May another saga be driven in the background? (The queue is bounded: a flood of
        Prefer: respond-async requests gets 503s, not an ever longer queue.)"""
        with self._busy_guard:
            return self._in_background < self.queue_limit

    def busy(self, saga_id: str) -> bool:
        """Is this process already driving (or about to drive) the saga?"""
        with self._busy_guard:
            return saga_id in self._busy

    def create(self, saga_input: dict[str, str], faults: dict[str, str],
               idempotency_key: str | None = None, request_hash: str | None = None,
               isolation: Isolation = Isolation.NONE) -> Saga:
        """Log a new saga under the default definition, leased to us, before any step runs."""
        definition = self.definitions.default
        saga_id = new_saga_id()
        traceparent = start_saga_trace(f"saga {definition.key}", saga_id, {"saga.definition": definition.key})
        saga = self.store.create(saga_id, (definition.name, definition.version), saga_input,
                                 faults, self.owner, idempotency_key, request_hash, traceparent, isolation)
        SAGAS_STARTED.labels(MODEL).inc()
        log.info("saga %s: started under %s, fail=%s, isolation %s, trace %s", saga.id, definition.key,
                 faults, isolation.value, trace_id(traceparent), extra={"saga_id": saga.id})
        return saga

    def definition_of(self, saga: Saga) -> SagaDefinition:
        """The definition the saga started under; LookupError if this code no longer has it."""
        definition = self.definitions.get(saga.definition_name, saga.definition_version)
        if definition is None:
            raise LookupError(f"saga {saga.id} runs {saga.definition_name}@{saga.definition_version}, "
                              "which this orchestrator does not know")
        return definition

    def drive(self, saga_id: str, run: Run = Run.NEW, logged: Saga | None = None) -> Saga:
        """Drive a saga we hold the lease on until it finishes (or another orchestrator takes it).

        `run` says how this drive began (see `Run`); `logged` is the saga as this process just
        logged it (spares reading it back). The saga is read from the log once; after that our
        own writes are the truth, since the lease keeps every other orchestrator from writing.
        """
        with self._busy_guard:
            self._busy.add(saga_id)
        try:
            saga = logged or self.store.get(saga_id)
            assert saga is not None, f"saga {saga_id} is not in the log"
            lease = saga.lease
            if lease is None or lease.owner != self.owner:
                log.warning("saga %s: not ours to drive (leased to %s)", saga_id, saga.lease_owner)
                return saga
            definition = self.definition_of(saga)
            was_finished = saga.status.finished
            with span_in(f"drive {definition.key}", parent(saga.trace_parent),
                         attributes={"saga.id": saga.id, "saga.run": run.value}):
                try:
                    while not saga.status.finished:
                        if saga.current_step == len(definition.steps):  # every step applied
                            saga = self._confirm(saga, lease, definition, run)
                            continue
                        step = definition.steps[saga.current_step]
                        if saga.status is SagaStatus.RUNNING:
                            saga = self._forward(saga, lease, definition, step, run)
                        else:
                            saga = self._backward(saga, lease, definition, step, run)
                        run = Run.NEW  # only the step a drive starts at can have attempts logged
                except LeaseLost:
                    LEASES_LOST.inc()
                    log.warning("saga %s: lease lost; another orchestrator drives it now", saga_id)
                    saga = self.store.get(saga_id) or saga
                else:
                    if not was_finished:
                        self._count_finished(saga)
            return saga
        finally:
            with self._busy_guard:
                self._busy.discard(saga_id)

    @staticmethod
    def _count_finished(saga: Saga) -> None:
        SAGAS_FINISHED.labels(MODEL, saga.status.value).inc()
        if saga.created_at is not None:
            SAGA_DURATION.labels(MODEL, saga.status.value).observe(
                (utcnow() - saga.created_at).total_seconds())

    def reopen(self, saga_id: str) -> bool:
        """Take a COMPENSATION_FAILED saga back to COMPENSATING, its faults cleared; False if it is not."""
        reopened = self.store.reopen_failed_compensation(saga_id, self.owner, clear_faults=True)
        if reopened:
            log.info("saga %s: retrying the compensation by request (injected faults cleared)", saga_id)
        return reopened

    def submit(self, saga_id: str, run: Run = Run.NEW) -> None:
        """Drive a saga we hold on a background thread (callers ask `has_room` first)."""
        with self._busy_guard:
            self._busy.add(saga_id)
            self._in_background += 1
        self.background.submit(self._drive_logged, saga_id, run)

    def _drive_logged(self, saga_id: str, run: Run) -> None:
        try:
            self.drive(saga_id, run)
        except Exception:  # noqa: BLE001 - nobody else would see it
            log.exception("saga %s: driving failed; recovery resumes it when the lease ends", saga_id)
        finally:
            with self._busy_guard:
                self._in_background -= 1

    # One step forward or back -------------------------------------------------------------

    def _forward(self, saga: Saga, lease: Lease, definition: SagaDefinition, step: Step,
                 run: Run) -> Saga:
        k = saga.current_step
        applied = self._onward(saga, definition, k)

        def failed(last: Attempt) -> Transition:
            # Its effect may still have committed (after_commit, a late commit after a
            # timeout), so going back starts with this very step.
            reason = "timeout" if last.outcome == "timeout" else "error"
            return Transition(SagaStatus.COMPENSATING, k, failed_step=step.name, reason=reason,
                              error=f"step {step.name}: {last.error}")

        payload: dict[str, Any] = {"saga_id": saga.id, **{name: saga.input[name] for name in step.receives}}
        if step.locks and saga.isolation is Isolation.SEMANTIC_LOCK:  # its row PENDING until we confirm
            payload["isolation"] = saga.isolation.value
        retries = step.retries if step.retries is not None else self.defaults.retries
        until_success = step.kind is StepKind.RETRIABLE
        new = self._call(saga, lease, step, "invoke", payload, None if until_success else retries, run,
                         _always(applied), failed)
        if new.status is SagaStatus.COMPLETED:
            log.info("saga %s: COMPLETED", saga.id)
        elif new.status is SagaStatus.RUNNING:
            log.debug("saga %s: step %s applied", saga.id, step.name)
        elif new.status is SagaStatus.COMPENSATING:
            log.warning("saga %s: step %s failed (%s); compensating", saga.id, step.name, new.error)
        return new

    def _backward(self, saga: Saga, lease: Lease, definition: SagaDefinition, step: Step,
                  run: Run) -> Saga:
        k = saga.current_step
        undone = Transition(SagaStatus.COMPENSATED if k == 0 else SagaStatus.COMPENSATING, k - 1)
        # A pivot is never undone, only cancelled: a tombstone if it never committed. If it
        # did commit (a late commit), the saga is past its point of no return: it goes on.
        action = "cancel" if step.kind is StepKind.PIVOT else "compensate"

        def succeeded(attempt: Attempt) -> Transition:
            if action == "cancel" and (attempt.body or {}).get("status") in LIVE:
                onward = self._onward(saga, definition, k)
                return Transition(onward.status, onward.current_step, clears_failure=True)
            return undone

        def failed(last: Attempt) -> Transition:
            return Transition(SagaStatus.COMPENSATION_FAILED, k,
                              compensation_error=f"{action.replace('compensate', 'compensation')} "
                                                 f"of step {step.name} failed at attempt "
                                                 f"{last.number}: {last.error}")

        retries = (step.compensation_retries if step.compensation_retries is not None
                   else self.defaults.compensation_retries)
        new = self._call(saga, lease, step, action, {"saga_id": saga.id}, retries, run, succeeded, failed)
        if new.status is SagaStatus.COMPENSATION_FAILED:
            COMPENSATIONS_FAILED.labels(MODEL, step.name).inc()
            log.error("saga %s: COMPENSATION_FAILED: %s", saga.id, new.compensation_error)
        elif new.status in (SagaStatus.COMPENSATING, SagaStatus.COMPENSATED):
            COMPENSATIONS.labels(MODEL, step.name).inc()
            if new.status is SagaStatus.COMPENSATED:
                log.info("saga %s: COMPENSATED", saga.id)
        else:  # RUNNING or COMPLETED: the cancel found the pivot committed
            log.warning("saga %s: pivot %s had committed after all; going on", saga.id, step.name)
        return new

    @staticmethod
    def _onward(saga: Saga, definition: SagaDefinition, k: int) -> Transition:
        """The state after step k applied: the next step, or COMPLETED after the last (still
        RUNNING, past the last step, while a semantic lock waits to be confirmed)."""
        done = k + 1 == len(definition.steps)
        locked = saga.isolation is Isolation.SEMANTIC_LOCK and definition.locking_steps
        return Transition(SagaStatus.COMPLETED if done and not locked else SagaStatus.RUNNING, k + 1)

    def _confirm(self, saga: Saga, lease: Lease, definition: SagaDefinition, run: Run) -> Saga:
        """Every step applied: release the semantic locks (each locking step's row PENDING ->
        APPLIED, `/confirm`), then COMPLETED. The saga is decided: a confirm is retried until it
        succeeds, like a retriable step, and logged like any call. A refusal (the row undone or
        gone: nothing in the system does that, a person might) cannot be retried away: the saga
        is COMPENSATION_FAILED, for a person, and a retried compensation undoes every step."""
        steps = definition.locking_steps
        for i, step in enumerate(steps):
            last = i + 1 == len(steps)
            then = Transition(SagaStatus.COMPLETED if last else SagaStatus.RUNNING, saga.current_step)

            def refused(attempt: Attempt, step: Step = step) -> Transition:
                return Transition(SagaStatus.COMPENSATION_FAILED, len(definition.steps) - 1,
                                  failed_step=step.name, reason="error",
                                  error=f"step {step.name}: its semantic lock could not be released",
                                  compensation_error=f"confirm of step {step.name} refused at attempt "
                                                     f"{attempt.number}: {attempt.error}")

            saga = self._call(saga, lease, step, "confirm", {"saga_id": saga.id}, None, run,
                              _always(then), refused, refusal_decides=True)
            run = Run.NEW
            if saga.status is SagaStatus.COMPENSATION_FAILED:
                COMPENSATIONS_FAILED.labels(MODEL, step.name).inc()
                log.error("saga %s: COMPENSATION_FAILED: %s", saga.id, saga.compensation_error)
                return saga
        log.info("saga %s: COMPLETED (its semantic locks released)", saga.id)
        return saga

    # One call, with its retries ---------------------------------------------------------

    def _budget(self, saga: Saga, step: Step, action: str, retries: int | None, run: Run) -> Budget:
        """Attempt numbers go on from the log; a resumed step's retries count what the log holds
        (but it still gets one attempt, so a crash before an answer was logged is never taken
        for a failure); a reopened compensation gets a full set again."""
        made, held_back = (0, 0) if run is Run.NEW else self.store.attempts_so_far(saga.id, step.name, action)
        first = made + 1
        if retries is None:
            return Budget(first, None)
        left = retries if run is Run.REOPENED else max(0, retries - (made - held_back))
        return Budget(first, first + left)

    def _call(self, saga: Saga, lease: Lease, step: Step, action: str, payload: dict[str, Any],
              retries: int | None, run: Run, succeeded: Callable[[Attempt], Transition],
              failed: Callable[[Attempt], Transition], refusal_decides: bool = False) -> Saga:
        """Call one step's action until an attempt decides the step; log each attempt, and with
        the deciding one, in the same transaction, the saga's next state. Returns the saga in
        that state. `retries` None: until it succeeds (a retriable step), or, with
        `refusal_decides`, until it succeeds or is refused (a 4xx)."""
        budget = self._budget(saga, step, action, retries, run)
        until_success = retries is None
        timeout = step.timeout if step.timeout is not None else self.defaults.timeout
        waiting_since: float | None = None  # when another saga's semantic lock first held us back
        held = 0  # attempts a lock has refused in this wait
        spare = 0  # attempts refused by a lock, which do not count against the retries

        def attempt_once(number: int) -> Transition | None:
            nonlocal waiting_since, held, spare
            with span_in(f"{action} {step.name}", kind=SpanKind.CLIENT,
                         attributes={"saga.id": saga.id, "saga.step": step.name, "saga.action": action,
                                     "saga.attempt": number}) as span:
                attempt = self.client.attempt(f"{self.urls[step.participant]}/{action}", payload,
                                              number=number, timeout=timeout,
                                              fault=saga.faults.get(step.name))
                span.set_attribute("saga.outcome", attempt.outcome)
                if attempt.http_status is not None:
                    span.set_attribute("http.response.status_code", attempt.http_status)
                if attempt.outcome != "ok":
                    span.set_status(StatusCode.ERROR, attempt.error or attempt.outcome)
            STEP_ATTEMPTS.labels(step.name, action, attempt.outcome).inc()
            CALL_DURATION.labels(step.name, action).observe(attempt.latency_ms / 1000)
            decided: Transition | None = None
            if attempt.outcome != "locked":  # the wait for a lock, if there was one, is over
                waiting_since, held = None, 0
            if attempt.outcome == "ok":  # the participant committed; the log does not know yet
                self.failpoints.hit(f"after_{action}", step.name)
                decided = succeeded(attempt)
            elif attempt.outcome == "locked":  # another saga holds what this one wants, for now
                waiting_since = waiting_since or time.monotonic()
                held += 1
                if time.monotonic() - waiting_since >= self.defaults.lock_wait:
                    decided = failed(replace(attempt, error=f"{attempt.error} (waited "
                                                           f"{self.defaults.lock_wait:g} s)"))
                spare += 1
            elif (not attempt.retryable and (refusal_decides or not until_success)) or \
                    (not until_success and budget.exhausted_at(attempt.number - spare)):
                decided = failed(attempt)
            self.store.record_attempt(saga.id, lease, Event(
                step.name, action, attempt.number, attempt.http_status, attempt.outcome,
                attempt.latency_ms, attempt.error), decided)
            # An attempt that went as planned is in the saga's timeline; the log says what went
            # wrong (of a wait for a lock, its first refusal).
            log.log(logging.DEBUG if attempt.outcome == "ok" or held > 1 else logging.INFO,
                    "saga %s: %s %s attempt %d -> %s%s (%d ms)", saga.id, action, step.name,
                    attempt.number, attempt.outcome,
                    f" {attempt.http_status}" if attempt.http_status else "", attempt.latency_ms,
                    extra={"saga_id": saga.id, "step": step.name, "attempt": attempt.number})
            return decided

        self.failpoints.hit(f"before_{action}", step.name)
        # The budget decides which attempt is the last; the pacing, how long to wait before the next.
        number = budget.first
        while (decided := attempt_once(number)) is None:
            # A lock, and a failure, are each backed off from at a pace of their own.
            pause = LOCK_PACING.after(held) if held else self.pacing.after(number - budget.first + 1)
            time.sleep(pause)
            number += 1
        return decided.applied_to(saga)
