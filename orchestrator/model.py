"""The saga log's domain: a saga, one attempt at a step, a transition, and how a drive began."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import Enum

from common.status import Isolation, SagaStatus


class LeaseLost(Exception):
    """Another orchestrator holds this saga now; whoever drove it must stop."""


class DuplicateIdempotencyKey(Exception):
    """A saga was already started with this Idempotency-Key."""


class Run(Enum):
    """How a drive of a saga began: it decides where attempt numbers and retry budgets start."""

    NEW = "new"  # just created here: the first attempt is number 1, every retry is left
    RESUMED = "resumed"  # taken over after a crash or a lost lease: the log may hold attempts
    # already; they count against the step's retries (but one attempt is always made)
    REOPENED = "reopened"  # a failed compensation given another round: a full set of retries


@dataclass(frozen=True)
class Saga:
    """One row of the saga log."""

    id: str
    status: SagaStatus
    input: dict[str, str]
    faults: dict[str, str]
    current_step: int
    definition_name: str
    definition_version: int
    isolation: Isolation = Isolation.NONE
    failed_step: str | None = None
    reason: str | None = None
    error: str | None = None
    compensation_error: str | None = None
    compensation_rounds: int = 0
    idempotency_key: str | None = None
    request_hash: str | None = None
    lease_owner: str | None = None
    lease_epoch: int = 0
    lease_expires_at: datetime | None = None
    trace_parent: str | None = None  # the W3C traceparent of the saga's root span
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def lease(self) -> Lease | None:
        return None if self.lease_owner is None else Lease(self.lease_owner, self.lease_epoch)


@dataclass(frozen=True)
class Lease:
    """The right to drive a saga: who holds it, and in which epoch (it goes up at every
    change of hands, so a driver that lost the saga and came back cannot write)."""

    owner: str
    epoch: int


@dataclass(frozen=True)
class Event:
    """One attempt at a step's invoke, compensate or cancel, as the log keeps it."""

    step: str
    action: str
    attempt: int
    http_status: int | None
    outcome: str
    latency_ms: int
    error: str | None = None
    orchestrator: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class Transition:
    """A saga's next state, written to the log before anything acts on it."""

    status: SagaStatus
    current_step: int
    failed_step: str | None = None
    reason: str | None = None
    error: str | None = None
    compensation_error: str | None = None
    clears_failure: bool = False  # a pivot found committed after all: the saga goes on, no failure

    @property
    def details(self) -> dict[str, str | None]:
        """The failure columns this transition writes (the others keep their values)."""
        names = ("failed_step", "reason", "error", "compensation_error")
        if self.clears_failure:
            return dict.fromkeys(names)
        return {name: value for name in names if (value := getattr(self, name)) is not None}

    def applied_to(self, saga: Saga) -> Saga:
        """The saga as the log holds it once this transition is written."""
        details = self.details
        new = replace(saga, status=self.status, current_step=self.current_step,
                      failed_step=details.get("failed_step", saga.failed_step),
                      reason=details.get("reason", saga.reason),
                      error=details.get("error", saga.error),
                      compensation_error=details.get("compensation_error", saga.compensation_error))
        return replace(new, lease_owner=None, lease_expires_at=None) if self.status.finished else new
