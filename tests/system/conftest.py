"""Systems that several modules of the system tests start alike."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from scripts.stack import Stack
from tests.support.stacks import TEST_DATABASE_URL


@pytest.fixture(scope="module")
def faults_off(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The four processes with FAULTS_ENABLED=0, a module's own: a fault request is refused, and
    every 500 is a bug, never an injected fault."""
    running = Stack(tmp_path_factory.mktemp("faults-off"), TEST_DATABASE_URL,
                    settings={"FAULTS_ENABLED": "0"}).start()
    yield running
    running.stop()
