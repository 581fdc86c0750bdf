"""Fixtures: the four real processes, on SQLite or on the MySQL/MariaDB at TEST_DATABASE_URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from scripts.stack import PROCESSES, Stack
from tests.support.stacks import TEST_DATABASE_URL

# Each test worker runs systems of four processes, each with a pool of connections; MySQL's
# default of 151 connections is too few for several workers at once.
CONNECTIONS_PER_WORKER = 250


def pytest_sessionstart(session: pytest.Session) -> None:
    """On MySQL/MariaDB with parallel workers, make room for their connections (once, in the
    process that hands out the tests), or stop with the reason."""
    workers = getattr(session.config.option, "numprocesses", None)
    workers = workers if isinstance(workers, int) else 0
    if not TEST_DATABASE_URL or hasattr(session.config, "workerinput") or workers < 2:
        return
    needed = CONNECTIONS_PER_WORKER * workers
    engine = create_engine(TEST_DATABASE_URL)
    try:
        with engine.connect() as connection:
            if connection.scalar(text("SELECT @@max_connections")) < needed:
                connection.execute(text(f"SET GLOBAL max_connections = {needed}"))
    except Exception as error:  # no privilege: say what to do rather than fail test by test
        pytest.exit(f"{workers} test workers need max_connections >= {needed} on the test database "
                    f"({error}); raise it, or run one at a time (make test TEST_WORKERS=1)", returncode=4)
    finally:
        engine.dispose()


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
