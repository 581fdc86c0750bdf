"""The observer's record of choreographed sagas, batch by batch, on a database of its own
(SQLite, or the MySQL/MariaDB at TEST_DATABASE_URL): each event once, each saga's status from
all of its events so far, an event id another saga holds never taken as this saga's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from choreography.flow import Flows
from common.db import make_engine
from common.status import SagaStatus
from messaging.events import Envelope
from observer.observer import Observer
from observer.tables import choreo_events, metadata
from scripts.stack import database_urls, drop_databases
from tests.support.stacks import TEST_DATABASE_URL

INPUT = {"input": {"username": "ob", "address": "x", "payment": "p"}, "fail": {}, "definition": "signup@1"}


@pytest.fixture
def observer(tmp_path: Path) -> Iterator[Observer]:
    urls = database_urls(TEST_DATABASE_URL, tmp_path, uuid.uuid4().hex[:8], ("observed",))
    engine = make_engine(urls["observed"])
    metadata.create_all(engine)
    yield Observer(engine, Flows.load({}))
    engine.dispose()
    drop_databases(TEST_DATABASE_URL, urls)


def event(kind: str, saga_id: str, source: str, **payload: object) -> Envelope:
    return Envelope(kind, saga_id, source, {"definition": "signup@1", **payload})


def events_of(observer: Observer, saga_id: str) -> list[str]:
    with observer.engine.connect() as connection:
        return list(connection.execute(text(f"SELECT type FROM {choreo_events.name} WHERE saga_id = :s "
                                            "ORDER BY id"), {"s": saga_id}).scalars())


def test_a_sagas_status_comes_from_every_event_it_has_batch_after_batch(observer: Observer) -> None:
    """The last batch alone (A's account removed) would say "compensating"; with the events
    before it, the saga is COMPENSATED, and failed at C with C's error."""
    saga = "batches"
    requested = Envelope("SignupRequested", saga, "a", INPUT)
    assert observer.receive_all([requested, event("AccountCreated", saga, "a")]) == [True, True]
    assert observer.status(saga) is SagaStatus.RUNNING
    assert observer.receive_all([event("AddressStored", saga, "b")]) == [True]
    assert observer.receive_all([event("PaymentFailed", saga, "c", error="card declined")]) == [True]
    assert observer.status(saga) is SagaStatus.COMPENSATING
    assert observer.receive_all([event("AddressRemoved", saga, "b")]) == [True]
    assert observer.receive_all([event("AccountRemoved", saga, "a")]) == [True]
    recorded = observer.get(saga)
    assert recorded is not None
    outcome = (recorded["status"], recorded["failed_step"], recorded["error"])
    assert outcome == ("COMPENSATED", "c", "card declined")
    assert events_of(observer, saga) == ["SignupRequested", "AccountCreated", "AddressStored",
                                         "PaymentFailed", "AddressRemoved", "AccountRemoved"]


def test_a_batch_sent_again_is_all_duplicates_and_changes_nothing(observer: Observer) -> None:
    saga = "again"
    batch = [Envelope("SignupRequested", saga, "a", INPUT), event("AccountFailed", saga, "a", error="no")]
    assert observer.receive_all(batch) == [True, True]
    before = observer.get(saga)
    assert before is not None and before["status"] == "COMPENSATED"

    assert observer.receive_all(batch) == [False, False]

    after = observer.get(saga)
    assert after is not None and after["status"] == "COMPENSATED"
    assert after["updated_at"] == before["updated_at"], "the saga's row not written again"
    assert events_of(observer, saga) == ["SignupRequested", "AccountFailed"]


def test_an_event_id_another_saga_recorded_before_is_not_this_sagas(observer: Observer) -> None:
    """An id reused across sagas: the saga that recorded it first keeps it; for another saga
    it is a duplicate, never one of its events, and the rest of that batch is recorded."""
    mine, other = "mine", "other"
    clashing = event("AccountCreated", other, "a")
    assert observer.receive_all([Envelope("SignupRequested", other, "a", INPUT), clashing]) == [True, True]
    reused = Envelope("AccountCreated", mine, "a", {"definition": "signup@1"}, event_id=clashing.event_id)

    assert observer.receive_all([Envelope("SignupRequested", mine, "a", INPUT), reused]) == [True, False]

    assert events_of(observer, mine) == ["SignupRequested"]
    assert events_of(observer, other) == ["SignupRequested", "AccountCreated"]
    assert observer.receive_all([event("AddressStored", mine, "b")]) == [True]
    assert observer.status(mine) is SagaStatus.RUNNING
