"""Every query the saga log runs on the hot path and in recovery scans uses an index.

The store's own methods run against a log of a few thousand sagas while every statement
they send is captured; each one is then EXPLAINed, and a full scan of `sagas` or
`saga_events` fails the test. SQLite by default; MySQL/MariaDB with TEST_DATABASE_URL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event, insert, make_url, text

from common.db import make_engine, utcnow
from common.status import SagaStatus
from orchestrator.model import Event, Lease, Transition
from orchestrator.store import SagaStore, metadata, saga_events, sagas
from tests.support.stacks import TEST_DATABASE_URL


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    if TEST_DATABASE_URL is None:
        engine = make_engine(f"sqlite:///{tmp_path / 'log.db'}")
        database = None
    else:
        database = f"saga_idx_{uuid.uuid4().hex[:8]}"
        with create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(text(f"CREATE DATABASE `{database}`"))
        # The fill below is one statement of thousands of rows: more than the apps' 2 s read
        # timeout allows on a server the rest of the suite keeps busy.
        engine = make_engine(make_url(TEST_DATABASE_URL).set(database=database)
                             .render_as_string(hide_password=False), timeout=30)
    metadata.create_all(engine)
    now = utcnow()
    rows = [{"id": uuid.uuid4().hex, "status": status, "input": "{}", "faults": "{}",
             "current_step": 3, "compensation_rounds": 0, "created_at": now - timedelta(seconds=i),
             "updated_at": now - timedelta(seconds=i)}
            for i, status in enumerate(["COMPLETED"] * 3000 + ["COMPENSATED"] * 1000)]
    with engine.begin() as connection:
        connection.execute(insert(sagas), rows)
        connection.execute(insert(saga_events), [
            {"saga_id": row["id"], "step": "a", "action": "invoke", "attempt": 1, "http_status": 200,
             "outcome": "ok", "latency_ms": 1, "orchestrator": "x", "at": now} for row in rows])
        if TEST_DATABASE_URL:  # InnoDB keeps statistics by itself; make them current
            connection.execute(text("ANALYZE TABLE sagas, saga_events"))
        # (SQLite: the application never runs ANALYZE, so neither does this test.)
    yield engine
    engine.dispose()
    if database:
        with create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT").connect() as admin:
            admin.execute(text(f"DROP DATABASE `{database}`"))


def full_scans(engine: Engine, statement: str, parameters: Any) -> list[str]:
    """The tables `statement` reads whole, by the database's own plan."""
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
            # SCAN is every row of a table or of an index ("SCAN t USING INDEX i"): both read
            # what grows with the log. SEARCH is a lookup or a range.
            return [row[3] for row in cursor.fetchall() if row[3].startswith("SCAN ")]
        cursor.execute("EXPLAIN " + statement, parameters)
        columns = [c[0] for c in cursor.description]
        return [f"{plan['table']}: type {plan['type']}" for plan in
                (dict(zip(columns, row, strict=True)) for row in cursor.fetchall())
                if plan["type"] in ("ALL", "index")]  # a full table or full index scan


def test_the_log_queries_use_indexes(engine: Engine) -> None:
    store = SagaStore(engine, lease_seconds=30)
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
            captured.append((statement, parameters))

    saga = store.create(uuid.uuid4().hex, ("signup", 1), {"username": "u"}, {}, "me", "key-1", "hash")
    store.record_attempt(saga.id, Lease("me", 1), Event("a", "invoke", 1, 200, "ok", 1),
                         Transition(SagaStatus.RUNNING, 1))
    store.get(saga.id)
    store.events(saga.id)
    store.attempts_so_far(saga.id, "a", "invoke")
    store.by_idempotency_key("key-1")
    store.recent(50)
    store.recent(50, SagaStatus.COMPENSATED)
    store.claimable()
    store.claim(saga.id, "other")
    store.lease_owners("other@")
    store.expire_leases_of(["other"])
    store.failed_compensations(utcnow(), 10)
    store.reopen_failed_compensation(saga.id, "me", utcnow(), 10)
    event.remove(engine, "before_cursor_execute", capture)

    assert len(captured) >= 12, [s for s, _ in captured]
    scans = {statement: found for statement, parameters in captured
             if (found := full_scans(engine, statement, parameters))}
    assert scans == {}, json.dumps(scans, indent=1)
