"""The choreographed saga on both transports: the embedded one (HTTP) and RabbitMQ."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.stack import Stack
from tests.support.stacks import TEST_DATABASE_URL, TRANSPORTS


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def choreo(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running system per transport, shared by a module's tests (each uses its own sagas)."""
    running = Stack(tmp_path_factory.mktemp(f"choreo-{request.param}"), TEST_DATABASE_URL,
                    settings=TRANSPORTS[request.param]).start()
    yield running
    running.stop()
