"""Readers waiting on a choreographed saga (`GET /choreography/sagas/<id>?wait=`) never take
every thread of the observer's process: the events that end the saga come in on those threads.
More readers than WAIT_SLOTS are answered at once, with Retry-After, and ask again."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from scripts.stack import Stack
from tests.support.calls import choreographed, sign_up
from tests.support.stacks import TEST_DATABASE_URL

THREADS = 4  # the observer's process serves four requests at once; WAIT_SLOTS is half of that
READERS = 6
SLOW_C_IN_TIME = {"CHOREOGRAPHY_DEADLINE": "15"}  # C's three seconds well inside the saga's deadline


@pytest.fixture(scope="module")
def few_threads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(Path(tmp_path_factory.mktemp("few-threads")), TEST_DATABASE_URL,
                    settings={"GUNICORN_THREADS": str(THREADS), **SLOW_C_IN_TIME}).start()
    yield running
    running.stop()


def test_more_waiting_readers_than_threads_still_see_the_saga_end(few_threads: Stack) -> None:
    """Six readers wait on a saga that C makes last three seconds. Were all of them let wait,
    four would hold every thread, C's and B's events would queue behind them, and every wait
    would run out (20 s) with the saga RUNNING; two wait and see it end, the others are told to
    ask again."""
    saga_id = sign_up(few_threads, c="delay:3000")
    choreographed(few_threads, saga_id, statuses=("RUNNING",))  # the observer knows it: no 404
    url = f"{few_threads.urls['orchestrator']}/choreography/sagas/{saga_id}"

    def read(_: int) -> requests.Response:
        return requests.get(url, params={"wait": 20}, timeout=30)

    with ThreadPoolExecutor(READERS) as readers:
        answers = list(readers.map(read, range(READERS)))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    waited = [answer for answer in answers if "Retry-After" not in answer.headers]
    told_to_ask_again = [answer for answer in answers if answer.headers.get("Retry-After") == "1"]
    assert waited and told_to_ask_again, "some waited, the rest were answered at once"
    assert len(waited) + len(told_to_ask_again) == READERS
    assert all(answer.json()["status"] == "COMPLETED" for answer in waited), \
        "each wait ended with the saga, not with its 20 s"
