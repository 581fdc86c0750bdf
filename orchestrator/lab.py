"""The isolation lab: the anomaly sagas allow, made to happen on the live services, and the
semantic lock that prevents it (docs/isolation.md).

Two sign-ups for one new username. The first is slow at its last step and fails there, so it
compensates; the second starts while the first holds the username at its locking step (A).
With no countermeasure the second is refused, the username taken by an account that never
comes to exist (a dirty read): both end COMPENSATED and nobody gets the username. Under a
semantic lock the first's account is PENDING, the second waits for it, and applies once the
first has undone itself: it completes.

The first saga's slowness and failure are the lab's own fault (`lab`: a bounded sleep, then a
failure), acted out even when fault injection is off, and asked only by the lab.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from common.consistency import Unreachable
from common.declaration import SagaDefinition
from common.faults import FaultKind
from common.http import CallFailed, Http
from common.status import LIVE, Isolation, Model, RecordStatus, SagaStatus
from observer.observer import Observer
from orchestrator.engine import SagaEngine
from orchestrator.gateway import ParticipantGateway
from orchestrator.model import Saga
from orchestrator.store import SagaStore

ENDS_WITHIN = 30.0  # seconds both sagas have to end in (each is bounded well under it)

Found = TypeVar("Found")


class LabBusy(Exception):
    """Another run of the lab is in progress (one at a time: its delays are bounded, not shared)."""


class LabFailed(Exception):
    """The race could not be set up (a service down, say): nothing to conclude."""


@dataclass(frozen=True)
class Race:
    """Where the lab runs its race: the steps it uses, and how to reach both models."""

    definition: SagaDefinition
    engine: SagaEngine
    store: SagaStore
    gateway: ParticipantGateway
    observer: Observer
    http: Http  # signed calls (the choreographed sign-ups)
    entry_url: str  # where choreographed sign-ups enter


class IsolationLab:
    def __init__(self, race: Callable[[], Race]) -> None:
        self.race = race
        self._running = threading.Lock()

    def run(self, model: Model, countermeasure: Isolation) -> dict[str, Any]:
        """Run the race once; LabBusy if a run is in progress, LabFailed if it cannot be run."""
        if not self._running.acquire(blocking=False):
            raise LabBusy("the lab is running another race; try again when it has finished")
        try:
            race = self.race()
            if not race.definition.locking_steps:
                raise LabFailed(f"{race.definition.key} has no step that holds a semantic lock")
            locking = race.definition.locking_steps[0]
            field = locking.receives[0]
            value = f"lab-{uuid.uuid4().hex[:8]}"
            inputs = [{name: f"lab-{n}-{name}" for name in race.definition.input_fields} for n in (1, 2)]
            for saga_input in inputs:
                saga_input[field] = value
            slow = {race.definition.steps[-1].name: FaultKind.LAB.value}  # slow, then failing
            run = self._orchestrated if model is Model.ORCHESTRATION else self._choreographed
            first, second = run(race, inputs, slow, countermeasure, locking.participant)
            taken = second["status"] == SagaStatus.COMPENSATED and "is taken" in (second["error"] or "")
            return {field: value, "model": model.value,
                    "countermeasure": countermeasure.value, "first": first, "second": second,
                    "anomaly": taken and first["status"] != SagaStatus.COMPLETED}
        finally:
            self._running.release()

    def _orchestrated(self, race: Race, inputs: list[dict[str, str]], slow: dict[str, str],
                      isolation: Isolation, holder: str) -> tuple[dict[str, Any], dict[str, Any]]:
        engine = race.engine
        if not engine.has_room():
            raise LabFailed("too many sagas are waiting to be driven; try again shortly")
        first = engine.create(inputs[0], slow, isolation=isolation)
        engine.submit(first.id)
        self._until_held(race, holder, first.id)
        second = engine.create(inputs[1], {}, isolation=isolation)
        done = engine.drive(second.id, logged=second)

        def first_ended() -> Saga | None:
            saga = race.store.get(first.id)
            return saga if saga is not None and saga.status.finished else None

        ended = _until(first_ended, ENDS_WITHIN, f"the first saga {first.id} has not ended within "
                                                 f"{ENDS_WITHIN:g} s")
        return ({"saga_id": first.id, "status": ended.status.value},
                {"saga_id": done.id, "status": done.status.value, "error": done.error})

    def _choreographed(self, race: Race, inputs: list[dict[str, str]], slow: dict[str, str],
                       isolation: Isolation, holder: str) -> tuple[dict[str, Any], dict[str, Any]]:
        def sign_up(saga_input: dict[str, str], fail: dict[str, str]) -> str:
            try:
                answer = race.http.post_json(f"{race.entry_url}/signups",
                                             {**saga_input, "fail": fail, "isolation": isolation.value},
                                             timeout=10)
            except CallFailed as error:
                raise LabFailed(f"the entry service does not answer: {error}") from None
            if answer.status != 202:
                raise LabFailed(f"the entry service answered {answer.status}: {answer.text[:200]}")
            saga_id = str(answer.json()["saga_id"])
            race.observer.expect(saga_id)
            return saga_id

        first = sign_up(inputs[0], slow)
        self._until_held(race, holder, first)
        second = sign_up(inputs[1], {})
        ended = {saga_id: race.observer.wait(saga_id, ENDS_WITHIN) for saga_id in (first, second)}
        for saga_id, saga in ended.items():
            if saga is None or not SagaStatus(saga["status"]).finished:
                raise LabFailed(f"the saga {saga_id} has not ended within {ENDS_WITHIN:g} s")
        one, two = ended[first], ended[second]
        assert one is not None and two is not None
        # The saga is over when C's last event is seen; the locking service releases its lock
        # when it handles that same event, a moment later: answer once it has, so the rows the
        # answer points at are the final ones.
        self._until_released(race, holder, (first, second))
        return ({"saga_id": first, "status": one["status"]},
                {"saga_id": second, "status": two["status"], "error": two["error"]})

    @staticmethod
    def _until_held(race: Race, service: str, saga_id: str) -> None:
        """Wait until the first saga holds its row at the locking step's service."""
        def held() -> bool:
            row = race.gateway.record(service, saga_id)
            return row is not None and row.get("status") in LIVE
        _until(held, 10, f"the first saga {saga_id} did not reach service {service} within 10 s")

    @staticmethod
    def _until_released(race: Race, service: str, saga_ids: tuple[str, ...]) -> None:
        """Wait until no saga of the race holds a semantic lock (a PENDING row) at `service`."""
        def released() -> bool:
            rows = [race.gateway.record(service, saga_id) for saga_id in saga_ids]
            return not any(row and row.get("status") == RecordStatus.PENDING for row in rows)
        _until(released, ENDS_WITHIN, f"service {service} still holds a lock for {', '.join(saga_ids)} "
                                      f"{ENDS_WITHIN:g} s after the sagas ended")


def _until(found: Callable[[], Found | None], seconds: float, failure: str) -> Found:
    """Ask `found` every 20 ms until it finds something (not None, not False): that; LabFailed
    (`failure`) after `seconds`, or at once when a service it asks does not answer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if answer := found():
                return answer
        except Unreachable as error:
            raise LabFailed(f"a service does not answer: {error}") from None
        time.sleep(0.02)
    raise LabFailed(failure)
