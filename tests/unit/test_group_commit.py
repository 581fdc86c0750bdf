"""Group commit (common/group_commit.py): on SQLite, the saga log's writes that queue while one
commits share the next transaction, each caller with its own answer and none going on before
its write is committed; a database error fails its group and nothing of it; a write the lease
fences out, or whose idempotency key is taken, fails alone. On MySQL/MariaDB (TEST_DATABASE_URL)
every write is its own transaction."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, stop_after_delay, wait_fixed

from common.db import make_engine, reading
from common.group_commit import GroupCommit
from common.prepared import Prepared, Raw
from common.status import SagaStatus
from orchestrator.migrate import upgrade
from orchestrator.model import DuplicateIdempotencyKey, Event, Lease, LeaseLost, Transition
from orchestrator.store import SagaStore, sagas
from scripts.stack import database_urls, drop_databases
from tests.support.stacks import TEST_DATABASE_URL

metadata = MetaData()
notes = Table("notes", metadata, Column("id", Integer, primary_key=True), Column("note", String(32)))


@pytest.fixture
def group(tmp_path: Path) -> Iterator[GroupCommit]:
    """A GroupCommit on the database under test, which holds the table `notes`."""
    urls = database_urls(TEST_DATABASE_URL, tmp_path, uuid.uuid4().hex[:8], ("grouped",))
    engine = make_engine(urls["grouped"])
    metadata.create_all(engine)
    try:
        yield GroupCommit(engine)
    finally:
        engine.dispose()
        drop_databases(TEST_DATABASE_URL, urls)


def noted(group: GroupCommit) -> list[str]:
    with reading(group.engine) as connection:
        return sorted(connection.execute(select(notes.c.note)).scalars())


def wait_until(condition: Callable[[], bool], seconds: float = 30) -> None:
    for attempt in Retrying(stop=stop_after_delay(seconds), wait=wait_fixed(0.01), reraise=True):
        with attempt:
            assert condition(), "the condition never came"


@contextmanager
def committing(group: GroupCommit) -> Iterator[None]:
    """A write whose transaction stays open until the block ends (then commits, writing nothing)."""
    inside, release = threading.Event(), threading.Event()

    def held(_connection: Raw) -> None:
        inside.set()
        release.wait(30)

    holder = threading.Thread(target=group.run, args=(held,))
    holder.start()
    assert inside.wait(30)
    try:
        yield
    finally:
        release.set()
        holder.join(30)


def while_one_commits(group: GroupCommit, calls: list[Callable[[], Any]], ready: Callable[[], bool],
                      meanwhile: Callable[[], None] = lambda: None) -> list[Any]:
    """Each call on a thread of its own while another write holds its transaction open, until
    `ready()` (then `meanwhile()`, still held); what each caller got back (or raised) once that
    write committed."""
    answers: list[Any] = [None] * len(calls)

    def call(i: int) -> None:
        try:
            answers[i] = calls[i]()
        except Exception as error:  # noqa: BLE001 - the answer under test
            answers[i] = error

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(calls))]
    with committing(group):
        for thread in threads:
            thread.start()
        wait_until(ready)
        meanwhile()
    for thread in threads:
        thread.join(30)
    return answers


def nothing_noted(group: GroupCommit) -> Callable[[], None]:
    def check() -> None:
        assert noted(group) == [], "none is committed while the write before holds the database"
    return check


def note(group: GroupCommit, text: str, seen: list[Raw]) -> Callable[[], Any]:
    """A call that writes one note (and keeps the transaction it ran in)."""
    statement = Prepared(group.engine, insert(notes), ("note",))

    def work(connection: Raw) -> str:
        seen.append(connection)
        connection.execute(statement, {"note": text})
        return f"{text} written"

    return lambda: group.run(work)


def broken(group: GroupCommit) -> Callable[[], Any]:
    def work(connection: Raw) -> None:
        connection.cursor.execute("INSERT INTO no_such_table VALUES (1)")

    return lambda: group.run(work)


def test_writes_share_a_commit_only_where_sqlite_lets_one_writer_in(group: GroupCommit) -> None:
    seen: list[Raw] = []
    calls = [note(group, f"n{i}", seen) for i in range(5)]
    if group.grouped:
        answers = while_one_commits(group, calls, lambda: group.queued == 5, nothing_noted(group))
        assert len({id(transaction) for transaction in seen}) == 1, "the five queued: one transaction"
    else:  # MySQL/MariaDB: each its own transaction, none waiting for the one held open
        answers = while_one_commits(group, calls, lambda: len(seen) == 5)
        assert len({id(transaction) for transaction in seen}) == 5
    assert answers == [f"n{i} written" for i in range(5)], "each caller gets its own work's answer"
    assert noted(group) == [f"n{i}" for i in range(5)]


def test_a_database_error_fails_its_transaction_and_writes_nothing_of_it(group: GroupCommit) -> None:
    """On SQLite the failing write's whole group, which the others queued into; on MySQL/MariaDB
    only itself."""
    seen: list[Raw] = []
    calls = [note(group, "a", seen), broken(group), note(group, "b", seen)]
    if group.grouped:
        answers = while_one_commits(group, calls, lambda: group.queued == 3, nothing_noted(group))
        assert all(isinstance(answer, DBAPIError) for answer in answers), answers
        assert noted(group) == [], "the group's other writes went with its rollback"
    else:
        answers = while_one_commits(group, calls, lambda: len(seen) == 2)
        assert answers[0] == "a written" and isinstance(answers[1], DBAPIError)
        assert noted(group) == ["a", "b"]
    assert note(group, "after", seen)() == "after written", "the next write commits"
    assert "after" in noted(group)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SagaStore]:
    """A saga log on SQLite, where its writes are grouped."""
    database = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
    upgrade(database)
    yield SagaStore(database, 30)
    database.dispose()


def log(store: SagaStore, username: str, key: str | None = None) -> Callable[[], Any]:
    return lambda: store.create(uuid.uuid4().hex, ("signup", 1), {"username": username}, {}, "me",
                                idempotency_key=key)


def test_a_write_fenced_out_in_a_group_writes_nothing_and_the_others_commit(store: SagaStore) -> None:
    kept, lost = log(store, "kept")(), log(store, "lost")()
    with store.engine.begin() as connection:  # another orchestrator took `lost` meanwhile
        connection.execute(sagas.update().where(sagas.c.id == lost.id)
                           .values(lease_owner="other", lease_epoch=2))

    def record(saga_id: str) -> Callable[[], None]:
        return lambda: store.record_attempt(saga_id, Lease("me", 1), Event("a", "invoke", 1, 200, "ok", 1),
                                            Transition(SagaStatus.RUNNING, 1))

    def not_yet() -> None:
        assert store.events(kept.id) == [], "not committed while the write before holds the log"

    answers = while_one_commits(store._log, [record(lost.id), record(kept.id)],
                                lambda: store._log.queued == 2, not_yet)
    assert isinstance(answers[0], LeaseLost) and answers[1] is None, answers
    lost_now, kept_now = store.get(lost.id), store.get(kept.id)
    assert lost_now is not None and kept_now is not None
    assert (store.events(lost.id), lost_now.current_step) == ([], 0), "the fenced-out write left nothing"
    assert (len(store.events(kept.id)), kept_now.current_step) == (1, 1)


def test_a_taken_idempotency_key_in_a_group_fails_that_saga_alone(store: SagaStore) -> None:
    """Two starts with one key and a third without, committed together: whichever of the two came
    first and the third are logged; the other is told the key is taken, as it would be alone."""
    def not_yet() -> None:
        assert store.by_idempotency_key("k") is None, "not committed while the write before holds the log"

    answers = while_one_commits(store._log, [log(store, "first", "k"), log(store, "second", "k"),
                                             log(store, "other")],
                                lambda: store._log.queued == 3, not_yet)
    refused = [i for i, answer in enumerate(answers[:2]) if isinstance(answer, DuplicateIdempotencyKey)]
    assert len(refused) == 1, answers
    holder = answers[1 - refused[0]]
    assert store.by_idempotency_key("k") == holder and store.get(holder.id) is not None
    assert store.get(answers[2].id) is not None, "the saga without a key is logged too"
