"""A backlog larger than one request: the events that queued while the observer was down reach it
whole when it is back, in as many requests as the receivers' body limit takes, none dead-lettered
for the size of the batch it was sent in."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from tenacity import Retrying, stop_after_delay, wait_fixed

from scripts.stack import Stack
from tests.support.calls import choreographed, sign_up
from tests.support.stacks import TEST_DATABASE_URL

LIMIT = 4096  # MAX_BODY_BYTES here: a dozen sign-ups' events are more than one request's worth
# Attempts enough that none gives up while the observer is down (the tests' back-off is short).
SETTINGS = {"MAX_BODY_BYTES": str(LIMIT), "RELAY_MAX_ATTEMPTS": "1000", "CHOREOGRAPHY_DEADLINE": "30"}
SAGAS = 12


def outbox_to_observer(stack: Stack, service: str) -> dict[str, tuple[int, int]]:
    """Status -> (rows, bytes of their envelopes) of what `service`'s outbox holds for the observer."""
    query = text("SELECT status, COUNT(*), SUM(LENGTH(envelope)) FROM outbox "
                 "WHERE destination = 'observer' GROUP BY status")
    with stack.engines[service].connect() as connection:
        return {status: (int(rows), int(size)) for status, rows, size in connection.execute(query)}


def test_a_backlog_larger_than_a_request_reaches_the_observer_whole(tmp_path: Path) -> None:
    stack = Stack(tmp_path, TEST_DATABASE_URL, settings=SETTINGS).start()
    try:
        stack.kill("orchestrator")  # the observer: the services go on without it
        saga_ids = [sign_up(stack) for _ in range(SAGAS)]
        for attempt in Retrying(stop=stop_after_delay(60), wait=wait_fixed(0.1), reraise=True):
            with attempt:  # every step applied, every event to the observer waiting in an outbox
                waiting = {service: outbox_to_observer(stack, service) for service in "abc"}
                assert all(waiting[s].get("PENDING", (0, 0))[0] >= SAGAS for s in "abc"), waiting
        assert waiting["a"]["PENDING"][1] > LIMIT, waiting  # A's backlog: more than one request

        stack.restart("orchestrator")

        for saga_id in saga_ids:
            saga = choreographed(stack, saga_id, seconds=60, events=4)
            assert saga["status"] == "COMPLETED", saga
        for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.1), reraise=True):
            with attempt:
                sent = {service: outbox_to_observer(stack, service) for service in "abc"}
                assert all(set(sent[s]) == {"SENT"} for s in "abc"), sent  # none DEAD, none left
    finally:
        stack.stop()
