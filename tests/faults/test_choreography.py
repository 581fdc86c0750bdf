"""The choreographed saga under SIGKILL, broken broker connections and a randomised soak:
every saga ends COMPLETED or COMPENSATED, nothing is applied twice, nothing is lost."""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.checks import assert_all_or_nothing
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL, TRANSPORTS

SETTINGS = {"CHOREOGRAPHY_DEADLINE": "20"}  # long enough to live through a kill and a restart


@pytest.fixture(scope="module", params=sorted(TRANSPORTS))
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp(f"choreo-faults-{request.param}"), TEST_DATABASE_URL,
                    settings={**SETTINGS, **TRANSPORTS[request.param]}).start()
    yield running
    running.stop()


@pytest.fixture
def stack(system: Stack) -> Stack:
    """The module's system with all four processes alive, whatever the last test left."""
    for name in ("orchestrator", "a", "b", "c"):
        process = system.processes.get(name)
        if process is None or process.poll() is not None:
            system.processes.pop(name, None)
            system.restart(name)
    return system


def try_sign_up(stack: Stack, fail: dict[str, str]) -> str | None:
    """A fresh user's sign-up, or None if A did not take it (it may be dead just now)."""
    try:
        answer = requests.post(f"{stack.urls['a']}/signups", json={**fresh_user(), "fail": fail}, timeout=10)
    except requests.RequestException:
        return None
    return str(answer.json()["saga_id"]) if answer.status_code == 202 else None


UNDER_WAY = ("RUNNING", "COMPENSATING")


def in_flight(stack: Stack, saga_ids: list[str]) -> tuple[list[str], bool]:
    """The sagas the observer holds as under way (not finished) with at least one step applied;
    and whether any of `saga_ids` may still be (under way, or not heard of yet)."""
    listed = requests.get(f"{stack.urls['orchestrator']}/choreography/sagas", params={"limit": 500},
                          timeout=10).json()["sagas"]
    mine = {saga["saga_id"]: saga for saga in listed if saga["saga_id"] in saga_ids}
    flying = [saga_id for saga_id, saga in mine.items() if saga["status"] in UNDER_WAY
              and requests.get(f"{stack.urls['orchestrator']}/choreography/sagas/{saga_id}", timeout=10)
              .json()["events"][1:]]
    return flying, len(mine) < len(saga_ids) or any(s["status"] in UNDER_WAY for s in mine.values())


def sign_up_in_flight(stack: Stack, faults: list[dict[str, str]], at_least: int) -> list[str]:
    """Sign up a saga for each of `faults`, and another round if a busy machine ended them all
    before `at_least` were seen under way at once (mid-saga): every saga signed up."""
    saga_ids: list[str] = []
    for _ in range(5):
        batch = [saga_id for fail in faults if (saga_id := try_sign_up(stack, fail))]
        saga_ids += batch
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.02), reraise=True):
            with attempt:  # until enough are under way past their sign-up, or none can be any more
                flying, may_be = in_flight(stack, batch)
                assert len(flying) >= at_least or not may_be
        if len(flying) >= at_least:
            return saga_ids
    raise AssertionError(f"five rounds of sign-ups ended before {at_least} were seen under way at once")


@pytest.mark.parametrize("victim", ["a", "b", "c", "orchestrator"])
def test_a_killed_process_loses_nothing_and_applies_nothing_twice(stack: Stack, victim: str) -> None:
    """SIGKILL one process (its relay, inbox worker and consumer with it) with sagas in flight."""
    faults: list[dict[str, str]] = [{"b": "delay:400"}, {"c": "delay:400", "b": "delay:200"},
                                    {"c": "before_commit"}, {"b": "after_commit"}, {"a": "delay:300"}]
    saga_ids = sign_up_in_flight(stack, faults * 2, at_least=2)
    stack.kill(victim)
    time.sleep(0.5)  # down a while, as a crash is: the fault itself, not a wait for anything
    stack.restart(victim)
    statuses = assert_all_or_nothing(stack, saga_ids)
    assert "COMPLETED" in statuses


@pytest.mark.parametrize("system", ["rabbitmq"], indirect=True)
def test_broker_connections_cut_mid_saga(stack: Stack) -> None:
    """(The embedded transport's counterpart is the kill above: its connections are HTTP calls.)"""
    saga_ids = sign_up_in_flight(stack, [{"b": "delay:300"}] * 8, at_least=1)
    assert cut_broker_connections(f"saga-test-{stack.tag}") >= 4, "the consumers' and the publishers'"
    assert assert_all_or_nothing(stack, saga_ids) == ["COMPLETED"] * len(saga_ids)
    logs = "".join(stack.log(name) for name in ("a", "b", "c", "orchestrator"))
    assert "reconnecting" in logs, "the consumers noticed and came back"


def cut_broker_connections(namespace: str) -> int:
    """Close this run's connections (named after its namespace), not other runs' on the broker."""
    listed = subprocess.run(["rabbitmqctl", "-q", "--no-table-headers", "list_connections", "pid",
                             "client_properties"], capture_output=True, text=True, timeout=60, check=True)
    pids = [line.split("\t")[0] for line in listed.stdout.splitlines()
            if f'{{"connection_name","{namespace} ' in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "cut by a test"],
                       capture_output=True, text=True, timeout=60, check=True)
    return len(pids)


SOAK_SAGAS = int(os.environ.get("CHOREOGRAPHY_SOAK_SAGAS", "300"))
SOAK_CLIENTS = 16
KILL_EVERY = 2.0


def random_faults(rng: random.Random) -> dict[str, str]:
    """A fault that ends in COMPLETED or COMPENSATED (never COMPENSATION_FAILED) at a random step."""
    step = rng.choice("abc")
    return rng.choice([{}, {}, {step: "before_commit"}, {step: "after_commit"},
                       {step: f"transient:{rng.randint(1, 3)}"}, {step: f"delay:{rng.randint(20, 300)}"},
                       {"a": "compensate_transient:2", "c": "before_commit"}])


# Each leg of CI soaks one transport: the embedded one on SQLite, RabbitMQ on MariaDB.
SOAK_TRANSPORT = "rabbitmq" if TEST_DATABASE_URL else "embedded"


@pytest.mark.parametrize("system", [SOAK_TRANSPORT], indirect=True)
def test_soak(stack: Stack) -> None:
    rng = random.Random(os.environ.get("SOAK_SEED", "7"))
    started: list[str] = []
    guard = threading.Lock()
    done = threading.Event()

    def client(seed: int) -> None:
        mine = random.Random(seed)
        while True:
            with guard:
                if len(started) >= SOAK_SAGAS:
                    return
            for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.2), reraise=True):
                with attempt:  # A may be dead just now: until it takes the sign-up
                    saga_id = try_sign_up(stack, random_faults(mine))
                    assert saga_id is not None, "A took no sign-up for a minute"
            with guard:
                started.append(saga_id)

    def killer() -> None:
        while not done.wait(KILL_EVERY):
            victim = rng.choice(["a", "b", "c", "orchestrator"])
            stack.kill(victim)
            stack.restart(victim)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(SOAK_CLIENTS)]
    chaos = threading.Thread(target=killer)
    for thread in [*threads, chaos]:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    chaos.join()
    statuses = assert_all_or_nothing(stack, started, seconds=120)
    counts: dict[str, Any] = {status: statuses.count(status) for status in set(statuses)}
    print(f"\nchoreography soak ({stack.transport}): {len(started)} sagas, {SOAK_CLIENTS} clients, "
          f"a kill every {KILL_EVERY:g} s, {counts}, 0 violations")

