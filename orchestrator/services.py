"""The orchestrator app's parts, in one typed object its request handlers reach."""

from __future__ import annotations

from dataclasses import dataclass

from common.consistency import SagaSource
from common.declaration import Definitions
from common.web import kept
from observer.observer import Observer
from orchestrator.engine import SagaEngine
from orchestrator.gateway import ParticipantGateway
from orchestrator.lab import IsolationLab
from orchestrator.logbuffer import LogBuffer
from orchestrator.recovery import Recovery
from orchestrator.store import SagaStore


@dataclass(frozen=True)
class Services:
    """Everything a request may need, built once by `create_app`."""

    definitions: Definitions
    store: SagaStore
    engine: SagaEngine
    gateway: ParticipantGateway
    recovery: Recovery
    logs: LogBuffer
    observer: Observer  # the choreographed saga's, hosted here beside the dashboard
    lab: IsolationLab
    sagas: tuple[SagaSource, ...]  # where sagas of each model are recorded (for /consistency)


def services() -> Services:
    """The current app's services (inside a request or an app context)."""
    return kept(Services)
