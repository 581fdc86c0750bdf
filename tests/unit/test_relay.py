"""The relay against a real outbox (SQLite, or MySQL with TEST_DATABASE_URL) and a transport
that answers at once: every row handed to it is delivered once and marked sent; a failed
delivery is rescheduled and sent again when it falls due."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
from tenacity import Retrying, stop_after_delay, wait_fixed

from common.db import make_engine, raw_writing
from common.pacing import Pacing
from messaging.events import Envelope
from messaging.outbox import Outbox, OutboxRow, Outcome, outbox_table
from messaging.relay import Relay
from messaging.transport import Delivery
from scripts.stack import database_urls, drop_databases
from tests.support.stacks import TEST_DATABASE_URL

DESTINATIONS = ["b", "observer"]


class Recording:
    """A transport that takes every event, except the first attempt at each one `refuse` names."""

    def __init__(self, refuse: Callable[[str, str], bool] = lambda _destination, _text: False) -> None:
        self.refuse = refuse
        self.delivered: list[tuple[str, str]] = []
        self.refused: set[tuple[str, str]] = set()
        self._guard = threading.Lock()

    def destinations(self, subscribers: tuple[str, ...]) -> list[str]:
        return list(subscribers)

    def deliver(self, destination: str, envelopes: list[str]) -> list[Delivery]:
        answers = []
        with self._guard:
            for text in envelopes:
                if self.refuse(destination, text) and (destination, text) not in self.refused:
                    self.refused.add((destination, text))
                    answers.append(Delivery(False, error="503 from the destination"))
                else:
                    self.delivered.append((destination, text))
                    answers.append(Delivery(True))
        return answers

    def close(self) -> None:
        return None


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    """An outbox in SQLite, or in a fresh MySQL database of its own with TEST_DATABASE_URL."""
    urls = database_urls(TEST_DATABASE_URL, tmp_path, uuid.uuid4().hex[:8], ("outbox",))
    engine = make_engine(urls["outbox"])
    metadata = MetaData()
    table = outbox_table(metadata)
    metadata.create_all(engine)
    yield Outbox(engine, table, handover=60)  # no scan finds a handed row: the relay must send it
    engine.dispose()
    drop_databases(TEST_DATABASE_URL, urls)


Starter = Callable[[Recording], Relay]


@pytest.fixture
def started(outbox: Outbox) -> Iterator[Starter]:
    """Start a relay from the outbox over a transport; each is stopped before the outbox goes."""
    relays: list[Relay] = []

    def start(transport: Recording) -> Relay:
        relay = Relay("a", outbox, transport, DESTINATIONS, Pacing(0.05, 0.1, 0.0), max_attempts=5, poll=0.2)
        relay.start()
        relays.append(relay)
        return relay

    yield start
    for relay in relays:
        relay.stop()


def queue(outbox: Outbox, events: int) -> list[OutboxRow]:
    rows: list[OutboxRow] = []
    with raw_writing(outbox.engine) as connection:
        for n in range(events):
            envelope = Envelope("AccountCreated", f"saga-{n}", "a", {"n": n})
            rows += outbox.add(connection, envelope, DESTINATIONS)
    return rows


def statuses(outbox: Outbox) -> dict[str, int]:
    with outbox.engine.connect() as connection:
        found = connection.execute(select(outbox.table.c.status)).scalars().all()
    return {status: found.count(status) for status in set(found)}


def until(condition: Callable[[], bool], seconds: float = 20) -> None:
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.02), reraise=True):
        with attempt:
            assert condition(), "the relay never got there"


def test_each_handed_row_is_delivered_once_and_marked(outbox: Outbox, started: Starter) -> None:
    transport = Recording()
    relay = started(transport)
    rows = queue(outbox, 30)
    relay.push(rows)
    until(lambda: statuses(outbox) == {"SENT": 60})
    assert sorted(transport.delivered) == sorted((row.destination, row.envelope) for row in rows)


def test_a_failed_delivery_is_rescheduled_then_sent_again(outbox: Outbox, started: Starter) -> None:
    transport = Recording(refuse=lambda destination, _text: destination == "b")
    relay = started(transport)
    rows = queue(outbox, 3)
    relay.push(rows)
    until(lambda: len(transport.refused) == 3)
    until(lambda: statuses(outbox) == {"SENT": 6})
    t = outbox.table
    with outbox.engine.connect() as connection:
        retried = connection.execute(select(t.c.attempts, t.c.last_error).where(t.c.destination == "b")).all()
    assert retried == [(1, None)] * 3, "the failed attempt counted; its error cleared once sent"
    assert sorted(transport.delivered) == sorted((row.destination, row.envelope) for row in rows)


def test_settle_marks_exactly_the_confirmed_rows_of_each_destination(outbox: Outbox) -> None:
    """One statement marks many rows sent (its IN list padded to a power of two with a repeated
    id): every confirmed row, of each destination, and no other."""
    rows = queue(outbox, 70)  # two destinations each: 70 of b's (an IN list of 128), 3 of the observer's
    confirmed = [row for row in rows if row.destination == "b"] + rows[1:6:2]  # 3 of the observer's
    left = [row for row in rows if row not in confirmed]
    refused = left[0]
    outbox.settle([Outcome(row, sent=True) for row in confirmed]
                  + [Outcome(refused, sent=False, error="503", retry_in=30)])
    t = outbox.table
    with outbox.engine.connect() as connection:
        found = {(r.destination, r.event_id): (r.status, r.attempts, r.sent_at is not None)
                 for r in connection.execute(select(t.c.destination, t.c.event_id, t.c.status,
                                                    t.c.attempts, t.c.sent_at))}
    assert {key for key, (status, _, _) in found.items() if status == "SENT"} == {
        (row.destination, row.event_id) for row in confirmed}
    assert all(sent_at for status, _, sent_at in found.values() if status == "SENT")
    assert found[(refused.destination, refused.event_id)] == ("PENDING", 1, False)
    assert sum(1 for status, _, _ in found.values() if status == "PENDING") == len(left)


@pytest.mark.parametrize("dead", [False, True], ids=["to_retry", "dead"])
def test_a_failed_attempt_does_not_undo_a_row_another_lane_sent(outbox: Outbox, dead: bool) -> None:
    """The same row sent by two lanes at once (handed to one, found by another's scan): one
    confirms it, the other fails; the row stays SENT, neither due again nor dead-lettered."""
    [row] = [row for row in queue(outbox, 1) if row.destination == "b"]
    outbox.settle([Outcome(row, sent=True)])
    outbox.settle([Outcome(row, sent=False, dead=dead, error="503", retry_in=0)])
    t = outbox.table
    with outbox.engine.connect() as connection:
        found = connection.execute(select(t.c.status, t.c.attempts, t.c.last_error)
                                   .where(t.c.destination == "b")).one()
    assert tuple(found) == ("SENT", 0, None)
