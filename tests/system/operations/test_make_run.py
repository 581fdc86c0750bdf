"""`make run` survives a crash: the README's "Watch a crash" walk-through, through make itself.

kill -9 the orchestrator with a slow saga in flight: supervisord starts it again while the
services keep serving, and the saga finishes. The same for service B. Ctrl-C (SIGINT to make's
process group) then stops all four. (How soon a killed process serves again is measured by
`make bench`, not here.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from choreography.flow import Flows
from scripts.stack import (
    FAST_SETTINGS,
    RECOVERS_FAILED_COMPENSATIONS,
    ROOT,
    database_urls,
    drop_databases,
    free_port,
)
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL

PORTS = {"orchestrator": "ORCHESTRATOR_PORT", "a": "SERVICE_A_PORT", "b": "SERVICE_B_PORT",
         "c": "SERVICE_C_PORT"}
MODULES = {"orchestrator": "orchestrator.wsgi", "a": "service_a.wsgi", "b": "service_b.wsgi",
           "c": "service_c.wsgi"}


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`make run` on free ports, its databases and supervisord's files in this test's folders."""
    ports = {name: free_port() for name in PORTS}
    databases = database_urls(TEST_DATABASE_URL, tmp_path, f"run{os.getpid()}")
    # As make run's defaults do, a compensation that failed while its service was down is taken
    # up again once it is back (here after a second, not a minute).
    env = {**os.environ, **FAST_SETTINGS, **RECOVERS_FAILED_COMPENSATIONS, "RUN_DIR": str(tmp_path / "run"),
           **{PORTS[name]: str(port) for name, port in ports.items()},
           "ORCHESTRATOR_DATABASE_URL": databases["orchestrator"],
           **{f"SERVICE_{s.upper()}_DATABASE_URL": databases[s] for s in "abc"}}
    env.pop("SERVICE_SECRET", None)  # make run makes one for its run
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    running = {"process": process, "urls": urls, "ports": ports, "log": log}
    try:
        for name in PORTS:
            wait_healthy(urls[name], log)
        yield running
    finally:
        if process.poll() is None:  # as Ctrl-C does: supervisord stops its programs
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Whatever outlived it (supervisord's programs run in process groups of their own).
        subprocess.run(["pkill", "-9", "-f", f"127.0.0.1:({'|'.join(map(str, ports.values()))}) "],
                       check=False)
        drop_databases(TEST_DATABASE_URL, databases)


def wait_healthy(url: str, log: Path, seconds: float = 60) -> None:
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.1), reraise=True):
        with attempt:
            assert requests.get(f"{url}/health", timeout=1).status_code == 200, log.read_text()[-2000:]


def pids(running: dict[str, Any], name: str) -> list[int]:
    """The pids of one program, as the README finds them: pgrep -f on its command line."""
    found = subprocess.run(["pgrep", "-f", f"127.0.0.1:{running['ports'][name]} {MODULES[name]}"],
                           capture_output=True, text=True, check=False).stdout.split()
    return [int(pid) for pid in found]


def kill_9(running: dict[str, Any], name: str, program: str) -> None:
    """kill -9 every process of a program, and wait until supervisord has started it again."""
    old = pids(running, name)
    assert old, f"{name} is not running"
    spawned_before = running["log"].read_text().count(f"spawned: '{program}'")
    for pid in old:
        os.kill(pid, signal.SIGKILL)
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.05), reraise=True):
        with attempt:
            assert running["log"].read_text().count(f"spawned: '{program}'") > spawned_before


def saga(running: dict[str, Any], saga_id: str) -> dict[str, Any]:
    answer = requests.get(f"{running['urls']['orchestrator']}/sagas/{saga_id}", timeout=5)
    return answer.json()  # type: ignore[no-any-return]


def wait_in_flight(running: dict[str, Any], saga_id: str, step: int) -> None:
    """Until the saga is RUNNING at `step` (its call to that step's service under way)."""
    for attempt in Retrying(stop=stop_after_delay(10), wait=wait_fixed(0.02), reraise=True):
        with attempt:
            found = saga(running, saga_id)
            assert (found["status"], found["current_step"]) == ("RUNNING", step), found


def test_make_run_restarts_a_killed_process_and_the_saga_finishes(make_run: dict[str, Any]) -> None:
    urls = make_run["urls"]
    # The orchestrator killed while C takes its time: restarted, it takes the saga back.
    answer = requests.post(f"{urls['orchestrator']}/start", json={**fresh_user(), "fail": {"c": "delay:800"}},
                           headers={"Prefer": "respond-async"}, timeout=10)
    saga_id = answer.json()["saga_id"]
    wait_in_flight(make_run, saga_id, 2)
    kill_9(make_run, "orchestrator", "orchestrator")
    assert requests.get(f"{urls['b']}/health", timeout=2).status_code == 200, "the others kept serving"
    wait_healthy(urls["orchestrator"], make_run["log"])
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            assert saga(make_run, saga_id)["status"] == "COMPLETED"
    assert "taking back 1 unfinished saga" in make_run["log"].read_text()

    # Service B killed in the middle of its call: retried, or compensated, but all or nothing.
    answer = requests.post(f"{urls['orchestrator']}/start", json={**fresh_user(), "fail": {"b": "delay:600"}},
                           headers={"Prefer": "respond-async"}, timeout=10)
    saga_id = answer.json()["saga_id"]
    wait_in_flight(make_run, saga_id, 1)
    kill_9(make_run, "b", "service_b")
    wait_healthy(urls["b"], make_run["log"])
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.2), reraise=True):
        with attempt:
            assert saga(make_run, saga_id)["status"] in ("COMPLETED", "COMPENSATED")
    report = requests.get(f"{urls['orchestrator']}/consistency", timeout=30).json()
    assert (report["complete"], report["violations"]) == (True, [])

    # Ctrl-C stops all four, cleanly.
    os.killpg(make_run["process"].pid, signal.SIGINT)
    make_run["process"].wait(timeout=30)
    for name in PORTS:
        assert pids(make_run, name) == [], f"{name} still running after Ctrl-C"


def test_make_run_gives_each_process_a_broker_account_of_its_own() -> None:
    """With BROKER_URL set, make run makes an account per process (fresh passwords each run), each
    allowed only its own events, and hands each its own URL; BROKER_ACCOUNTS=shared opts out."""
    import pika

    from messaging.broker_accounts import remove
    from messaging.rabbitmq import purge
    from scripts.run import broker_accounts, config
    from tests.support.stacks import BROKER_URL

    namespace = f"saga-run-{uuid.uuid4().hex[:8]}"
    env = {"BROKER_URL": BROKER_URL, "BROKER_NAMESPACE": namespace, "RUN_DIR": "/tmp",
           **{variable: str(5000 + i) for i, variable in enumerate(PORTS.values())}}
    assert broker_accounts({**env, "BROKER_ACCOUNTS": "shared"}) == {}
    urls = broker_accounts(env)
    try:
        parties = {"orchestrator": "observer", "service_a": "a", "service_b": "b", "service_c": "c"}
        assert {name: urlsplit(url).username for name, url in urls.items()} == {
            name: f"{namespace}-{party}" for name, party in parties.items()}
        for url in urls.values():  # each a working account
            pika.BlockingConnection(pika.URLParameters(url)).close()
        written = config(env, urls)
        assert written.count("environment=BROKER_URL=") == 4
        assert "%%2F" in written, "supervisord reads % as the start of an expansion"
    finally:
        purge(BROKER_URL, namespace, Flows.load({}).routes)
        remove(namespace, Flows.load({}).routes)
