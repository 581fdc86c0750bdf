"""The saga log as a source for the consistency check (common/consistency.py)."""

from __future__ import annotations

from common.consistency import Part, SagaSnapshot
from common.status import Model, SagaStatus
from orchestrator.definition import Definitions
from orchestrator.store import SagaStore


class OrchestratedSagas:
    """The saga log as a source for the check."""

    model = Model.ORCHESTRATION

    def __init__(self, store: SagaStore, definitions: Definitions) -> None:
        self.store = store
        self.definitions = definitions

    def _parts(self, name: str, version: int) -> tuple[Part, ...]:
        definition = self.definitions.get(name, version)
        if definition is None:
            return ()
        return tuple(Part(s.name, s.participant, s.receives[0]) for s in definition.steps)

    def page(self, after: str, limit: int) -> list[SagaSnapshot]:
        return [SagaSnapshot(saga.id, saga.status, saga.input,
                             self._parts(saga.definition_name, saga.definition_version),
                             attention=f"its compensation failed: {saga.compensation_error}"
                             if saga.status is SagaStatus.COMPENSATION_FAILED else None)
                for saga in self.store.page(after, limit)]

    def exists(self, saga_id: str) -> bool:
        return self.store.get(saga_id) is not None
