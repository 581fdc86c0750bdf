"""Races between two events of one saga at one service, forced in a fixed order on a real
database (SQLite, or the MySQL/MariaDB at TEST_DATABASE_URL): the handlers themselves, their
tables, and what they publish."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, create_engine, make_url, select, text
from tenacity import Retrying, stop_after_delay, wait_fixed

from choreography.flow import Flows
from choreography.service import ChoreographedService, choreography_tables
from common.db import _write_gates, iso, make_engine, utcnow
from common.faults import Sleeps
from common.schema import init_database
from messaging.events import Envelope
from participant.config import participant_config
from participant.records import RecordStore, records_table
from tests.support.stacks import TEST_DATABASE_URL


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if TEST_DATABASE_URL is None:
        url, database = f"sqlite:///{tmp_path / 'c.db'}", None
    else:
        database = f"saga_race_{uuid.uuid4().hex[:8]}"
        with create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(text(f"CREATE DATABASE `{database}`"))
        url = make_url(TEST_DATABASE_URL).set(database=database).render_as_string(hide_password=False)
    engine = make_engine(url)
    yield engine
    engine.dispose()
    if database:
        with create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(text(f"DROP DATABASE `{database}`"))


def service_c(engine: Engine) -> ChoreographedService:
    """Service C's choreography on `engine`, its threads not started: the test drives its handlers."""
    url = engine.url.render_as_string(hide_password=False)
    c, config = participant_config("c", {"DATABASE_URL": url, "SERVICE_SECRET": "s" * 32}, env={})
    metadata = MetaData()
    table = records_table(metadata, c.table, c.column)
    choreography_tables(metadata)
    init_database(engine, metadata)
    flows = Flows.of(config["DECLARATION"], config["DEFINITIONS"])
    return ChoreographedService(c, flows, config, RecordStore(engine, table, c.column), metadata, Sleeps(1))


def lock_waits(engine: Engine) -> Callable[[], bool]:
    """Is a writer waiting for a lock another transaction holds? (SQLite: a writer queued for the
    process's one write lock; MySQL: a statement of this database still running, while the
    transaction that wrote the row sits idle: it can only be waiting for that row's lock.)"""
    if engine.dialect.name == "sqlite":
        return lambda: bool(_write_gates[engine]._queue)
    watcher = engine.connect()  # open now: the check must not wait for a connection of its own
    query = text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = :db AND COMMAND = 'Query' "
                 "AND (INFO LIKE 'INSERT%' OR INFO LIKE 'UPDATE%')")

    def waiting() -> bool:
        watcher.rollback()  # a fresh look each time
        return bool(watcher.scalar(query, {"db": engine.url.database}))

    return waiting


def published(chorus: ChoreographedService, saga_id: str) -> list[str]:
    t = chorus.outbox.table
    with chorus.outbox.engine.connect() as connection:
        return list(connection.execute(select(t.c.event_type).where(t.c.saga_id == saga_id)
                                        .order_by(t.c.id)).scalars())


def test_the_deadlines_cancel_never_fails_a_saga_whose_last_step_commits_meanwhile(engine: Engine) -> None:
    """C handles AddressStored and SignupTimedOut for one saga at once: the apply's transaction
    is held open (its row inserted, not committed), the cancel runs and waits on it, then the
    apply commits. The cancel finds the row APPLIED: the saga completed in time, and no
    PaymentFailed may go back (B and A would undo themselves under a COMPLETED saga)."""
    c = service_c(engine)
    saga_id = uuid.uuid4().hex
    deadline = iso(utcnow() + timedelta(seconds=60))
    stored = Envelope("AddressStored", saga_id, "b", {"input": {"payment": "card-1"}, "fail": {},
                                                     "deadline": deadline})
    timed_out = Envelope("SignupTimedOut", saga_id, "a", {})
    for envelope in (stored, timed_out):
        c.inbox.receive([envelope])

    inserted, release = threading.Event(), threading.Event()
    apply_in = c.reactions.records.apply_in

    def apply_and_hold(*args: Any, **kwargs: Any) -> Any:
        outcome = apply_in(*args, **kwargs)
        inserted.set()
        assert release.wait(30), "the test never let the apply commit"
        return outcome

    c.reactions.records.apply_in = apply_and_hold  # type: ignore[method-assign]
    errors: list[BaseException] = []

    def run(envelope: Envelope) -> None:
        try:
            c.reactions.handle(envelope, attempt=1)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    applying = threading.Thread(target=run, args=(stored,))
    applying.start()
    assert inserted.wait(30), "the apply reached its insert"
    blocked = lock_waits(engine)
    cancelling = threading.Thread(target=run, args=(timed_out,))
    cancelling.start()
    for attempt in Retrying(stop=stop_after_delay(30), wait=wait_fixed(0.01), reraise=True):
        with attempt:  # the cancel is waiting for the apply's row: the race is on
            assert errors == [] and cancelling.is_alive() and blocked()
    release.set()
    applying.join(30)
    cancelling.join(30)
    assert errors == []

    assert c.reactions.records.get(saga_id).status.value == "APPLIED"  # type: ignore[union-attr]
    assert set(published(c, saga_id)) == {"PaymentRegistered"}, "no PaymentFailed after all"
    seen = [("SignupRequested", {}), ("AccountCreated", {}), ("AddressStored", {}), ("SignupTimedOut", {}),
            *((t, {}) for t in published(c, saga_id))]
    assert c.flows.default.derive(seen)[0].value == "COMPLETED"
    with engine.connect() as connection:
        handled = connection.execute(text("SELECT status FROM inbox WHERE saga_id = :s"), {"s": saga_id})
        assert sorted(handled.scalars()) == ["HANDLED", "HANDLED"]
