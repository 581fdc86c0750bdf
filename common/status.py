"""Every status value in the system, in one place."""

from enum import StrEnum


class RecordStatus(StrEnum):
    """The state of a participant's row for one saga."""

    APPLIED = "APPLIED"  # the local transaction's effect is in place
    PENDING = "PENDING"  # in place, but a semantic lock: not final until its saga completes
    COMPENSATED = "COMPENSATED"  # it was applied, then undone
    CANCELLED = "CANCELLED"  # a tombstone: compensated before anything was applied


class SagaStatus(StrEnum):
    """The state of a saga in the orchestrator's log."""

    RUNNING = "RUNNING"  # invoking steps forward
    COMPENSATING = "COMPENSATING"  # a step failed for good; undoing steps in reverse
    COMPLETED = "COMPLETED"  # every step applied
    COMPENSATED = "COMPENSATED"  # every step undone or cancelled
    COMPENSATION_FAILED = "COMPENSATION_FAILED"  # a compensation could not be completed

    @property
    def finished(self) -> bool:
        return self in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.COMPENSATION_FAILED)


UNFINISHED = (SagaStatus.RUNNING, SagaStatus.COMPENSATING)
LIVE = (RecordStatus.APPLIED, RecordStatus.PENDING)  # a row whose effect is in place


class Isolation(StrEnum):
    """What a saga does about the anomaly sagas allow (their steps' effects are seen before the
    saga is over): nothing, or a semantic lock (a locking step's row is PENDING until the saga
    completes, and another saga that wants what it holds waits)."""

    NONE = "none"
    SEMANTIC_LOCK = "semantic_lock"


class Model(StrEnum):
    """The two ways a saga runs. A participant's row records the one that created it, and only
    that model may change it."""

    ORCHESTRATION = "orchestration"
    CHOREOGRAPHY = "choreography"
