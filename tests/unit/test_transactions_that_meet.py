"""Transactions that meet on MySQL, made to meet on purpose between two connections: one MySQL
rolls back to break a deadlock is run again, whole, and what it did is told once; an event id
another transaction records at the same moment is found taken; a saga's row another inserts
between the observer's locking read and its insert is locked as found.

Runs against the MySQL/MariaDB at TEST_DATABASE_URL (the MariaDB leg of `make test`).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import Engine, create_engine, text
from tenacity import Retrying, stop_after_delay, wait_fixed

from choreography.flow import Flows
from common.db import again_if_deadlocked, make_engine, raw_writing
from messaging.events import Envelope
from observer.observer import Observer
from observer.tables import choreo_events, choreo_sagas, metadata
from scripts.stack import database_urls, drop_databases
from tests.support.stacks import TEST_DATABASE_URL

pytestmark = pytest.mark.skipif(not TEST_DATABASE_URL, reason="MySQL's locks: with TEST_DATABASE_URL")


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A fresh database of the test's own."""
    urls = database_urls(TEST_DATABASE_URL, tmp_path, uuid.uuid4().hex[:8], ("deadlocks",))
    yield urls["deadlocks"]
    drop_databases(TEST_DATABASE_URL, urls)


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def other_engine(url: str) -> Iterator[Engine]:
    """A second client of the same database: the other transaction the observer's meets."""
    engine = create_engine(url, isolation_level="READ COMMITTED")
    yield engine
    engine.dispose()


def until_waiting(engine: Engine, saga_id: str) -> None:
    """Until another connection of this database asks to lock the saga's row (it waits there)."""
    for attempt in Retrying(stop=stop_after_delay(20), wait=wait_fixed(0.01), reraise=True):
        with attempt, engine.connect() as connection:
            asking = connection.execute(text(
                "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() "
                "AND id <> CONNECTION_ID() AND info LIKE :statement"),
                {"statement": f"%{saga_id}%FOR UPDATE%"}).scalar_one()
            assert asking, "the other transaction has not asked for the row yet"


def test_a_transaction_chosen_as_a_deadlocks_victim_runs_again(engine: Engine) -> None:
    """Two transactions each take one row and then want the other's: MySQL rolls one back
    (error 1213), which runs again once the other has committed. Both end committed."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE pair (id INT PRIMARY KEY, n INT NOT NULL)"))
        connection.execute(text("INSERT INTO pair VALUES (1, 0), (2, 0)"))
    both_hold_one = threading.Barrier(2, timeout=20)
    runs = {1: 0, 2: 0}
    failures: list[BaseException] = []

    def transfer(first: int, then: int) -> None:
        try:
            for attempt in again_if_deadlocked():
                with attempt, raw_writing(engine) as connection:
                    runs[first] += 1
                    connection.cursor.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (first,))
                    if runs[first] == 1:  # the first time only: both hold one row, then cross
                        both_hold_one.wait()
                    connection.cursor.execute("UPDATE pair SET n = n + 1 WHERE id = %s", (then,))
        except BaseException as error:  # noqa: BLE001 - the test's thread reports to the test
            failures.append(error)

    threads = [threading.Thread(target=transfer, args=pair) for pair in ((1, 2), (2, 1))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    assert sorted(runs.values()) == [1, 2], "one of them was the victim, and ran again once"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT n FROM pair ORDER BY id")).scalars().all() == [2, 2]


def received(event_type: str, result: str) -> float:
    return REGISTRY.get_sample_value("saga_events_received_total",
                                     {"service": "observer", "type": event_type, "result": result}) or 0.0


def test_the_observer_records_a_batch_once_when_mysql_runs_it_again(engine: Engine, other_engine: Engine,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The observer's batch (a saga new to it, and one it knows) meets another transaction that
    holds an event of the batch and wants the new saga's row, which the batch has just
    inserted: MySQL rolls the batch back (the lighter of the two), the other lets go, and the
    observer runs the batch again at once: every event recorded, and counted, once."""
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE weight (n INT)"))
    observer = Observer(engine, Flows.load({}))
    new_saga, known_saga = "deadlock-new", "deadlock-known"
    observer.expect(known_saga)
    requested = Envelope("SignupRequested", new_saga, "a",
                         {"input": {"username": "dl", "address": "x", "payment": "p"}, "fail": {},
                          "definition": "signup@1"})
    created = Envelope("AccountCreated", known_saga, "a", {"definition": "signup@1"})
    crossing: list[threading.Thread] = []
    failures: list[BaseException] = []

    def other() -> None:
        """Heavier than the batch (MySQL rolls back the lighter): holds the sign-up's event id,
        then wants the new saga's row; rolls back once it has it."""
        try:
            with other_engine.connect() as connection:
                connection.execute(text("INSERT INTO weight VALUES " + ",".join(["(1)"] * 2000)))
                connection.execute(text(
                    "INSERT INTO choreo_events (event_id, saga_id, type, source, occurred_at, received_at, "
                    "payload) VALUES (:id, 'elsewhere', 'SignupRequested', 'a', '', NOW(), '{}')"),
                    {"id": requested.event_id})
                connection.execute(text("SELECT status FROM choreo_sagas WHERE saga_id = :id FOR UPDATE"),
                                   {"id": new_saga})
                connection.rollback()
        except BaseException as error:  # noqa: BLE001 - the test's thread reports to the test
            failures.append(error)

    inserts: list[str] = []

    def orchestrated(_connection: object, saga_id: str) -> bool:
        """Asked in the batch's transaction just after it inserted the new saga's row: the first
        time, start the other transaction and return once it waits for that row."""
        inserts.append(saga_id)
        if not crossing:
            crossing.append(threading.Thread(target=other))
            crossing[0].start()
            until_waiting(engine, new_saga)
        return False

    observer.orchestrated = orchestrated
    record = observer._record

    def record_once_the_other_let_go(*args: Any) -> Any:
        """The batch's run again starts once the other has rolled back, as it does a moment
        after the batch's rollback gave it the row: a busy machine could otherwise let the
        run again take the row first, and the two meet a second time."""
        if crossing:
            crossing[0].join(30)
        return record(*args)

    monkeypatch.setattr(observer, "_record", record_once_the_other_let_go)
    before = received("SignupRequested", "new"), received("AccountCreated", "new")

    assert observer.receive_all([requested, created]) == [True, True]

    crossing[0].join(30)
    assert not failures, "the other transaction got the row once the batch was rolled back"
    assert inserts == [new_saga, new_saga], "the batch ran twice"
    after = received("SignupRequested", "new"), received("AccountCreated", "new")
    assert (after[0] - before[0], after[1] - before[1]) == (1, 1), "each event counted once"
    with engine.connect() as connection:
        events = connection.execute(text(f"SELECT saga_id, type FROM {choreo_events.name} "
                                         "ORDER BY saga_id")).all()
        rows = connection.execute(text(f"SELECT saga_id, input FROM {choreo_sagas.name}")).all()
    sagas = {saga_id: saga_input for saga_id, saga_input in rows}
    assert [tuple(e) for e in events] == [(known_saga, "AccountCreated"), (new_saga, "SignupRequested")]
    assert sagas[new_saga] is not None and "dl" in sagas[new_saga], "the new saga's input recorded"


def test_an_event_id_another_saga_records_at_the_same_moment_is_a_duplicate(engine: Engine,
                                                                           other_engine: Engine) -> None:
    """An event id that another transaction is recording for another saga when the batch looks
    (not committed yet: the batch does not see it) is not the batch's to record: its insert
    waits, finds the id taken, and the event is a duplicate; the rest of the batch is recorded."""
    metadata.create_all(engine)
    observer = Observer(engine, Flows.load({}))
    saga = "clash"
    requested = Envelope("SignupRequested", saga, "a",
                         {"input": {"username": "cl", "address": "x", "payment": "p"}, "fail": {},
                          "definition": "signup@1"})
    clashing = Envelope("AccountCreated", saga, "a", {"definition": "signup@1"})
    results: list[list[bool | object]] = []
    with other_engine.connect() as other:
        other.execute(text(
            "INSERT INTO choreo_events (event_id, saga_id, type, source, occurred_at, received_at, payload) "
            "VALUES (:id, 'elsewhere', 'AccountCreated', 'a', '', NOW(), '{}')"), {"id": clashing.event_id})
        batch = threading.Thread(target=lambda: results.append(observer.receive_all([requested, clashing])))
        batch.start()
        for attempt in Retrying(stop=stop_after_delay(20), wait=wait_fixed(0.01), reraise=True):
            with attempt, engine.connect() as connection:
                assert connection.execute(text(
                    "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() "
                    "AND info LIKE 'INSERT IGNORE INTO choreo_events%'")).scalar_one(), "not inserting yet"
        other.commit()
    batch.join(30)
    assert results == [[True, False]]
    with engine.connect() as connection:
        events = connection.execute(text("SELECT saga_id, type FROM choreo_events ORDER BY id")).all()
        status = connection.execute(text("SELECT status FROM choreo_sagas WHERE saga_id = :id"),
                                    {"id": saga}).scalar_one()
    assert [tuple(e) for e in events] == [("elsewhere", "AccountCreated"), (saga, "SignupRequested")]
    assert status == "RUNNING"


def test_a_saga_another_batch_inserts_between_the_lock_and_the_insert_is_locked_as_found(
        engine: Engine, other_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two batches both new to a saga: the other inserts its row (and commits) after this
    batch's locking read found none, before this batch's insert, which then finds the row
    there: the batch locks it as the other wrote it and records its event."""
    metadata.create_all(engine)
    observer = Observer(engine, Flows.load({}))
    saga, earlier = "meets", datetime(2026, 1, 2, 3, 4, 5)
    created = Envelope("AccountCreated", saga, "a", {"definition": "signup@1"})
    insert = observer._new_saga

    class InsertedByAnother:
        """The batch's insert of the saga's row, the other's landing just before it."""

        sql = insert.sql

        def parameters(self, values: dict[str, object]) -> object:
            with other_engine.begin() as other:
                other.execute(choreo_sagas.insert().values(saga_id=saga, status="RUNNING",
                                                           created_at=earlier, updated_at=earlier))
            return insert.parameters(values)

    monkeypatch.setattr(observer, "_new_saga", InsertedByAnother())

    assert observer.receive_all([created]) == [True]

    with engine.connect() as connection:
        events = connection.execute(text(f"SELECT saga_id, type FROM {choreo_events.name}")).all()
        row = connection.execute(text(f"SELECT status, created_at FROM {choreo_sagas.name}")).one()
    assert [tuple(e) for e in events] == [(saga, "AccountCreated")]
    assert tuple(row) == ("RUNNING", earlier), "the other's row, brought up to date, not a second one"
