"""The saga log as a source for the consistency check (common/consistency.py)."""

from __future__ import annotations

from typing import Any

from common.consistency import Part, SagaSnapshot
from common.declaration import Definitions
from common.status import Model, SagaStatus
from orchestrator.api.views import saga_json
from orchestrator.model import Saga
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

    def _snapshot(self, saga: Saga) -> SagaSnapshot:
        return SagaSnapshot(saga.id, saga.status, saga.input,
                            self._parts(saga.definition_name, saga.definition_version),
                            attention=f"its compensation failed: {saga.compensation_error}"
                            if saga.status is SagaStatus.COMPENSATION_FAILED else None)

    def page(self, after: str, limit: int) -> list[SagaSnapshot]:
        return [self._snapshot(saga) for saga in self.store.page(after, limit)]

    def snapshot(self, saga_id: str) -> SagaSnapshot | None:
        saga = self.store.get(saga_id)
        return None if saga is None else self._snapshot(saga)

    def exists(self, saga_id: str) -> bool:
        return self.store.get(saga_id) is not None

    def recent(self, limit: int, status: SagaStatus | None) -> list[dict[str, Any]]:
        return [saga_json(saga) for saga in self.store.recent(limit, status)]
