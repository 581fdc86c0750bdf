"""The saga log as a source for the consistency check (common/consistency.py)."""

from __future__ import annotations

from collections.abc import Iterator

from common.consistency import Part, SagaSnapshot
from orchestrator.definition import Definitions
from orchestrator.store import SagaStore


class OrchestratedSagas:
    """The saga log as a source for the check."""

    model = "orchestration"

    def __init__(self, store: SagaStore, definitions: Definitions) -> None:
        self.store = store
        self.definitions = definitions

    def _parts(self, name: str, version: int) -> tuple[Part, ...]:
        definition = self.definitions.get(name, version)
        if definition is None:
            return ()
        return tuple(Part(s.name, s.participant, s.receives[0]) for s in definition.steps)

    def snapshot(self) -> Iterator[SagaSnapshot]:
        for saga_id, status, saga_input, name, version in self.store.every_saga():
            yield SagaSnapshot(saga_id, status, saga_input, self._parts(name, version))

    def exists(self, saga_id: str) -> bool:
        return self.store.get(saga_id) is not None
