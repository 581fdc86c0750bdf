"""The broker restarted under load: RabbitMQ's application stopped for 5 s and started again
while 16 clients sign up (on a node of this test's own, so that the tests sharing the
machine's broker are not disturbed): every saga ends, the rows agree, and no event is lost or
handled twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.checks import assert_all_or_nothing
from tests.support.people import fresh_user
from tests.support.stacks import TEST_DATABASE_URL, PrivateBroker

CLIENTS = 16
OUTAGE = 5.0  # seconds the broker's application is down: the fault this test injects


@pytest.fixture
def broker() -> Iterator[PrivateBroker]:
    started = PrivateBroker().start()
    yield started
    started.stop()


def test_the_broker_restarted_under_load_loses_nothing(broker: PrivateBroker, tmp_path: Path) -> None:
    # A deadline longer than the outage: every sign-up must complete, none time out.
    stack = Stack(tmp_path / "stack", TEST_DATABASE_URL,
                  settings={"BROKER_URL": broker.url, "BROKER_NODE": broker.node,
                            "CHOREOGRAPHY_DEADLINE": "60"}).start()
    try:
        started: list[str] = []
        guard = threading.Lock()
        stop = threading.Event()

        def client() -> None:
            with requests.Session() as session:
                while not stop.is_set():
                    answer = session.post(f"{stack.urls['a']}/signups", json=fresh_user(), timeout=30)
                    assert answer.status_code == 202, answer.text  # A takes sign-ups, broker or not
                    with guard:
                        started.append(answer.json()["saga_id"])

        def wait_for_sign_ups(count: int) -> None:
            for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.05), reraise=True):
                with attempt:
                    assert len(started) >= count, f"{len(started)} sign-ups so far, waiting for {count}"

        threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            wait_for_sign_ups(50)  # under load before the fault
            broker.ctl("stop_app")
            before = len(started)
            time.sleep(OUTAGE)  # the outage itself: the fault, not a wait for anything
            assert len(started) > before, "sign-ups went on while the broker was away"
            broker.ctl("start_app")
            wait_for_sign_ups(len(started) + 50)  # and after it
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        statuses = assert_all_or_nothing(stack, started, seconds=120)
        assert statuses == ["COMPLETED"] * len(started), {s: statuses.count(s) for s in set(statuses)}
        logs = "".join(stack.log(name) for name in ("a", "b", "c", "orchestrator"))
        assert "reconnecting" in logs, "the consumers noticed the broker go, and came back"
    finally:
        stack.stop()
