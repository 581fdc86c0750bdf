"""Every status value in the system, in one place."""

from enum import StrEnum


class RecordStatus(StrEnum):
    """The state of a participant's row for one saga."""

    APPLIED = "APPLIED"  # the local transaction's effect is in place
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


class Model(StrEnum):
    """The two ways a saga runs. A participant's row records the one that created it, and only
    that model may change it."""

    ORCHESTRATION = "orchestration"
    CHOREOGRAPHY = "choreography"
