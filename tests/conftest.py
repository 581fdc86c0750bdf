"""Fixtures: the four real processes, on SQLite or on the MySQL/MariaDB at TEST_DATABASE_URL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.stack import PROCESSES, Stack
from tests.support import TEST_DATABASE_URL


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One running system shared by the tests that only start sagas (each uses its own ids)."""
    running = Stack(tmp_path_factory.mktemp("stack"), TEST_DATABASE_URL).start()
    yield running
    running.stop()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start systems of a test's own, with extra settings; all are stopped afterwards."""
    started: list[Stack] = []

    def make(**settings: str) -> Stack:
        started.append(Stack(tmp_path / f"stack{len(started)}", TEST_DATABASE_URL,
                             settings=settings).start())
        return started[-1]

    yield make
    for running in started:
        running.stop()


@pytest.fixture
def fresh_stack(make_stack: Callable[..., Stack]) -> Stack:
    """A system of its own, for tests that kill and restart processes."""
    return make_stack()


@pytest.fixture
def user() -> dict[str, str]:
    """A sign-up with values unique to the test."""
    tag = uuid.uuid4().hex[:10]
    return {"username": f"user-{tag}", "address": f"{tag} Main Street", "payment": f"card-{tag}"}


@pytest.fixture(scope="session")
def crash_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A system for the tests that kill and restart its processes; its orchestrator reads a
    crash point from a file (none armed unless a test writes one)."""
    workdir = tmp_path_factory.mktemp("crash")
    stack = Stack(workdir, TEST_DATABASE_URL,
                  settings={"FAILPOINTS_FILE": str(workdir / "failpoint")}).start()
    yield stack
    stack.stop()


@pytest.fixture
def crash_stack(crash_system: Stack) -> Stack:
    """The shared system with all four processes alive and nothing armed, whatever the last
    test left (a test that starts extra processes stops them itself)."""
    Path(crash_system.settings["FAILPOINTS_FILE"]).unlink(missing_ok=True)
    for name in PROCESSES:
        process = crash_system.processes.get(name)
        if process is None or process.poll() is not None:
            crash_system.processes.pop(name, None)
            crash_system.restart(name)
    return crash_system
