"""The observer: follows every event of the choreographed saga and keeps each saga's story.

It takes no part in the saga (it publishes nothing, and no service waits for it); it
exists because in this model the saga's state is nowhere in one place. Its status for a
saga is derived from the events it has seen (`Flow.derive`, the flow of the definition the
saga started under), in whatever order they came, so a late or repeated event never confuses it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, insert, select, update

from choreography.flow import Flow, Flows
from common.db import (
    again_if_deadlocked,
    insert_ignore,
    iso,
    raw_reading,
    raw_writing,
    reading,
    utcnow,
    writing,
)
from common.metrics import (
    COMPENSATIONS,
    COMPENSATIONS_FAILED,
    EVENTS_RECEIVED,
    SAGA_DURATION,
    SAGAS_FINISHED,
    SAGAS_STARTED,
)
from common.prepared import Prepared, PreparedIn, Raw
from common.status import Isolation, SagaStatus
from common.tracing import trace_id
from common.validation import WHOLE_NUMBER
from messaging.events import Envelope, Refused, parse_moment
from messaging.rabbitmq import DeadLetter
from observer.tables import choreo_dead_letters, choreo_events, choreo_sagas

MODEL = "choreography"


@dataclass
class Recorded:
    """What one transaction of `Observer.receive_all` did: told (metrics, waiting readers) only
    once it has committed, so that a transaction run again is not told twice."""

    outcomes: dict[str, bool | Refused] = field(default_factory=dict)  # event id -> new, seen, refused
    received: list[tuple[Envelope, bool]] = field(default_factory=list)  # each event, and whether new
    counted: list[tuple[Envelope, SagaStatus, SagaStatus, datetime]] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)  # sagas this batch finished


class Observer:
    """Records every event once and keeps each saga's status current; readers can wait for a change."""

    def __init__(self, engine: Engine, flows: Flows,
                 orchestrated: Callable[[Raw, str], bool] = lambda _c, _saga_id: False) -> None:
        self.engine = engine
        self.flows = flows
        self.requested = frozenset(flow.requested for flow in flows.known.values())
        self.undone = frozenset(t for flow in flows.known.values() for t in flow.undone)
        self.undo_failed = frozenset(t for flow in flows.known.values() for t in flow.undo_failed)
        self.orchestrated = orchestrated  # does the saga log (in this database) run this saga id?
        # Recording events is the observer's hot path: its statements run on the DB-API connection.
        sagas, events = choreo_sagas, choreo_events
        self._new_saga = Prepared(engine, insert_ignore(sagas),
                                  ("saga_id", "status", "created_at", "updated_at"))
        self._new_event = Prepared(engine, insert_ignore(events), ("event_id", "saga_id", "type", "source",
                                                                    "occurred_at", "received_at", "payload"))
        # A batch's statements each take every saga (or event) of the batch at once, in an IN
        # list: a round trip each on MySQL, whatever the batch holds; only the updates, and a saga
        # new to the observer's insert, go one a saga.
        self._lock_sagas = PreparedIn(engine, lambda keys: select(sagas.c.saga_id, sagas.c.status,
                                                                  sagas.c.created_at)
                                      .where(sagas.c.saga_id.in_(keys)).order_by(sagas.c.saga_id)
                                      .with_for_update())
        self._forget_saga = Prepared(engine, delete(sagas).where(sagas.c.saga_id == bindparam("key")))
        self._recorded = PreparedIn(engine, lambda ids: select(events.c.event_id, events.c.saga_id)
                                    .where(events.c.event_id.in_(ids)))
        self._events_of = PreparedIn(engine, lambda keys: select(events.c.saga_id, events.c.event_id,
                                                                 events.c.type, events.c.payload)
                                     .where(events.c.saga_id.in_(keys)).order_by(events.c.id))
        self._updates: dict[frozenset[str], Prepared] = {}  # by the columns an update sets
        # What readers ask, each time a saga moves: its status, and then the whole story.
        self._status = Prepared(engine, select(sagas.c.status).where(sagas.c.saga_id == bindparam("key")))
        self._saga = Prepared(engine, select(sagas).where(sagas.c.saga_id == bindparam("key")))
        story = select(events.c.event_id, events.c.type, events.c.source, events.c.occurred_at,
                       events.c.received_at, events.c.payload)
        self._story = Prepared(engine, story.where(events.c.saga_id == bindparam("key"))
                               .order_by(events.c.occurred_at, events.c.id))
        # Readers waiting for a saga to finish: saga id -> the Event its finishing sets.
        self._waiting: dict[str, threading.Event] = {}
        self._waiting_guard = threading.Lock()

    def receive_all(self, envelopes: list[Envelope]) -> list[bool | Refused]:
        """Record events (a relay's batch) in one transaction, each once, and bring each saga's
        status up to date, once per saga; for each event: True if new, False if seen before, or
        why it was refused (a choreography event about a saga the orchestrator runs).

        A transaction MySQL rolls back to break a deadlock is run again at once (see `_record`):
        the relay would otherwise send the batch again only after its back-off."""
        now = utcnow()
        by_saga: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            by_saga.setdefault(envelope.saga_id, []).append(envelope)
        for attempt in again_if_deadlocked():
            with attempt:
                recorded = self._record(by_saga, now)
        for envelope, taken in recorded.received:
            EVENTS_RECEIVED.labels("observer", envelope.type, "new" if taken else "duplicate").inc()
        counted = recorded.counted
        for index, (envelope, before_status, status, created) in enumerate(counted):
            last_of_saga = index + 1 == len(counted) or counted[index + 1][0].saga_id != envelope.saga_id
            self._count(envelope, before_status, status if last_of_saga else before_status, created, now)
        for key in recorded.finished:  # wake the readers waiting for its end
            with self._waiting_guard:
                waiting = self._waiting.get(key)
            if waiting is not None:
                waiting.set()
        return [recorded.outcomes[envelope.event_id] for envelope in envelopes]

    def _record(self, by_saga: dict[str, list[Envelope]], now: datetime) -> Recorded:
        """`receive_all`'s transaction: what it did, to be counted and told once it committed."""
        recorded = Recorded()
        with raw_writing(self.engine) as connection:
            locked = self._lock(connection, by_saga, now, recorded)
            if not locked:
                return recorded
            # What each saga's events were before this batch (under its lock, nobody adds any);
            # the batch's new ones are added to them as they are inserted.
            seen: dict[str, list[tuple[str, Any]]] = {key: [] for key in locked}
            known: set[str] = set()  # the ids of their events
            for key, event_id, kind, payload in connection.all_in(self._events_of, list(locked)):
                seen[key].append((kind, json.loads(payload)))
                known.add(event_id)
            arriving = [envelope for key in locked for envelope in by_saga[key]]
            new = self._new_events(connection, arriving, known, now, recorded)
            for key in sorted(new):
                seen[key] += [(envelope.type, envelope.payload) for envelope in new[key]]
                before, created = locked[key]
                status = self._update_saga(connection, key, seen[key], new[key], before, now)
                if status.finished and not SagaStatus(before).finished:
                    recorded.finished.append(key)
                recorded.counted += [(e, SagaStatus(before), status, created) for e in new[key]]
        return recorded

    def _lock(self, connection: Raw, by_saga: dict[str, list[Envelope]], now: datetime,
              recorded: Recorded) -> dict[str, tuple[str, datetime]]:
        """Lock the batch's sagas' rows (one batch at a time per saga), inserting those new to
        the observer; each saga's (status, created_at), in key order, but a refused one's.

        The rows there are locked first, all in one statement, in key order, so that two batches
        never hold one each and want the other's; only a saga that statement did not find is
        inserted, then locked. (An insert that finds the row there takes a shared lock on it,
        and two batches both upgrading theirs would deadlock.) Two batches that both find a new
        saga missing can still meet a third that way: MySQL then rolls one back, and
        `receive_all` runs it again."""
        keys = sorted(by_saga)
        locked = {key: (status, created)
                  for key, status, created in connection.all_in(self._lock_sagas, keys)}
        for key in keys:
            if key in locked:
                continue
            first = connection.execute(self._new_saga, {
                "saga_id": key, "status": SagaStatus.RUNNING.value, "created_at": now, "updated_at": now})
            if first and self.orchestrated(connection, key):  # not ours: undo the insert
                connection.execute(self._forget_saga, {"key": key})
                refusal = Refused(f"saga {key} is orchestrated: a choreography event may not touch it",
                                  "wrong_model")
                recorded.outcomes.update(dict.fromkeys((e.event_id for e in by_saga[key]), refusal))
                continue
            if first:  # inserted, and so locked, by this transaction: as written
                locked[key] = (SagaStatus.RUNNING.value, now)
                continue
            [(_, status, created)] = connection.all_in(self._lock_sagas, [key])  # another's, a moment before
            locked[key] = (status, created)
        return dict(sorted(locked.items()))

    def _new_events(self, connection: Raw, arriving: list[Envelope], known: set[str], now: datetime,
                    recorded: Recorded) -> dict[str, list[Envelope]]:
        """Record the events not recorded before (`known`: the ids the batch's sagas have), in
        one insert; those, by saga. An id another saga has (recorded before,
        or by another batch at this moment) is found by the insert, which skips it."""
        new: dict[str, list[Envelope]] = {}
        for envelope in arriving:
            if envelope.event_id not in known:
                known.add(envelope.event_id)  # a repeat within the batch is a duplicate
                new.setdefault(envelope.saga_id, []).append(envelope)
        fresh = [e for events in new.values() for e in events]
        if fresh:
            inserted = connection.execute_many(self._new_event, [
                {"event_id": e.event_id, "saga_id": e.saga_id, "type": e.type, "source": e.source,
                 "occurred_at": e.occurred_at or iso(now), "received_at": now,
                 "payload": json.dumps(e.payload)} for e in fresh])
            if inserted != len(fresh):
                # Under the sagas' locks only another saga can hold one of these ids (an id
                # reused across sagas, recorded before or at this moment): whose it is decides.
                owner = dict(connection.all_in(self._recorded, [e.event_id for e in fresh]))
                new = {key: kept for key, events in new.items()
                       if (kept := [e for e in events if owner.get(e.event_id) == key])}
        taken = {e.event_id for events in new.values() for e in events}
        for envelope in arriving:
            is_new = envelope.event_id in taken
            taken.discard(envelope.event_id)  # the same event twice: the second is a duplicate
            recorded.received.append((envelope, is_new))
            recorded.outcomes[envelope.event_id] = recorded.outcomes.get(envelope.event_id) or is_new
        return new

    def _update_saga(self, connection: Raw, key: str, seen: list[tuple[str, Any]], new: list[Envelope],
                     before: str, now: datetime) -> SagaStatus:
        """Bring the saga's row up to date with what its events now say; its status."""
        definition = next((p["definition"] for _, p in seen if p.get("definition")), None)
        status, failed_step, reason, error = self.flow(definition).derive(seen)
        values: dict[str, Any] = {"status": status.value, "failed_step": failed_step,
                                  "reason": reason, "error": error, "updated_at": now}
        if status.finished and not SagaStatus(before).finished:  # when it finished, once
            values["finished_at"] = now
        requested = next((e for e in new if e.type in self.requested), None)
        if requested is not None:
            values["input"] = json.dumps(requested.payload.get("input", {}))
            values["faults"] = json.dumps(requested.payload.get("fail", {}))
            values["definition"] = requested.payload.get("definition")
            values["isolation"] = requested.payload.get("isolation") or Isolation.NONE.value
            values["trace_id"] = trace_id(requested.traceparent)
            values["deadline"] = _moment(requested.payload.get("deadline"))
        connection.execute(self._update(frozenset(values)), {"key": key, **values})
        return status

    def _update(self, columns: frozenset[str]) -> Prepared:
        prepared = self._updates.get(columns)
        if prepared is None:
            statement = update(choreo_sagas).where(choreo_sagas.c.saga_id == bindparam("key"))
            prepared = self._updates[columns] = Prepared(self.engine, statement, sorted(columns))
        return prepared

    def flow(self, definition: object) -> Flow:
        """The flow of a saga's definition; the default's for one unknown here (a saga recorded
        before its definition was taken out of the declaration)."""
        try:
            return self.flows.get(definition)
        except KeyError:
            return self.flows.default

    def _count(self, envelope: Envelope, before: SagaStatus, status: SagaStatus, created: datetime,
               now: datetime) -> None:
        """The choreographed saga's metrics, as the events tell its story."""
        if envelope.type in self.requested:
            SAGAS_STARTED.labels(MODEL).inc()
        elif envelope.type in self.undone:
            COMPENSATIONS.labels(MODEL, envelope.source).inc()
        elif envelope.type in self.undo_failed:
            COMPENSATIONS_FAILED.labels(MODEL, envelope.source).inc()
        if status.finished and not before.finished:
            SAGAS_FINISHED.labels(MODEL, status.value).inc()
            SAGA_DURATION.labels(MODEL, status.value).observe((now - created).total_seconds())

    def expect(self, saga_id: str) -> None:
        """Know of a saga before its first event arrives (a sign-up the dashboard just passed on):
        RUNNING, its input unknown until the sign-up's event brings it."""
        now = utcnow()
        with raw_writing(self.engine) as connection:
            connection.execute(self._new_saga, {"saga_id": saga_id, "status": SagaStatus.RUNNING.value,
                                                "created_at": now, "updated_at": now})

    def record_dead_letter(self, letter: DeadLetter) -> None:
        """Keep a message the broker's dead-letter queue held (the queue is drained as it is read)."""
        with writing(self.engine) as connection:
            connection.execute(insert(choreo_dead_letters).values(
                queue=letter.queue, reason=letter.reason, body=letter.body, at=utcnow(),
                detail=letter.detail, published_by=letter.published_by))

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        query = select(choreo_dead_letters).order_by(choreo_dead_letters.c.id.desc()).limit(limit)
        with reading(self.engine) as connection:
            return [{"where": "broker", "id": r.id, **_event_of(r.body), "queue": r.queue, "reason": r.reason,
                     "error": r.detail, "published_by": r.published_by, "body": r.body, "at": iso(r.at),
                     "redriven_at": iso(r.redriven_at)}
                    for r in connection.execute(query)]

    def dead_letter(self, letter_id: int) -> dict[str, Any] | None:
        """One of the broker's dead letters, with the event it holds (if it holds one)."""
        query = select(choreo_dead_letters).where(choreo_dead_letters.c.id == letter_id)
        with reading(self.engine) as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        return {"id": row.id, **_event_of(row.body), "redriven_at": iso(row.redriven_at)}

    def mark_redriven(self, letter_id: int) -> bool:
        """Note that the letter's owner was asked to publish it again; False if it had been already."""
        with writing(self.engine) as connection:
            return connection.execute(
                update(choreo_dead_letters).where(choreo_dead_letters.c.id == letter_id,
                                                  choreo_dead_letters.c.redriven_at.is_(None))
                .values(redriven_at=utcnow())).rowcount == 1

    def status(self, saga_id: str) -> SagaStatus | None:
        """The saga's status as the observer holds it now; None if it has seen none of its events."""
        with raw_reading(self.engine) as connection:
            row = connection.first(self._status, {"key": saga_id})
        return None if row is None else SagaStatus(row[0])

    def get(self, saga_id: str) -> dict[str, Any] | None:
        """A saga with its events in the order they happened."""
        with raw_reading(self.engine) as connection:
            row = connection.first(self._saga, {"key": saga_id})
            if row is None:
                return None
            events = connection.all(self._story, {"key": saga_id})
        saga = SimpleNamespace(**dict(zip(choreo_sagas.c.keys(), row, strict=True)))
        return {**saga_json(saga), "events": [
            {**json.loads(payload), "type": kind, "service": source, "event_id": event_id,
             "at": occurred_at, "received_at": iso(received_at)}
            for event_id, kind, source, occurred_at, received_at, payload in events]}

    def wait(self, saga_id: str, seconds: float,
             unknown_after: float | None = None) -> dict[str, Any] | None:
        """The saga once it has finished, or as it stands after `seconds` (woken by the event
        that finishes it, and every half second in case another process took that event); None
        if no event of it has come within `unknown_after` seconds."""
        with self._waiting_guard:
            woken = self._waiting.setdefault(saga_id, threading.Event())
        try:
            started = time.monotonic()
            until = started + seconds
            while True:
                woken.clear()
                status = self.status(saga_id)
                now = time.monotonic()
                if status is None and unknown_after is not None and now - started >= unknown_after:
                    return None
                if status is not None and status.finished or now >= until:
                    return self.get(saga_id)
                pause = (0.5 if status is not None or unknown_after is None
                         else unknown_after - (now - started))
                if woken.wait(min(until - now, pause)):  # by the batch that finished it: read it once
                    saga = self.get(saga_id)
                    if saga is not None and SagaStatus(saga["status"]).finished:
                        return saga
        finally:
            with self._waiting_guard:
                self._waiting.pop(saga_id, None)

    def recent(self, limit: int, status: SagaStatus | None = None) -> list[dict[str, Any]]:
        """The newest sagas first (created up to now: a range of the index, never all of it)."""
        query = (select(choreo_sagas).where(choreo_sagas.c.created_at <= utcnow())
                 .order_by(choreo_sagas.c.created_at.desc()).limit(limit))
        if status is not None:
            query = query.where(choreo_sagas.c.status == status.value)
        with reading(self.engine) as connection:
            return [saga_json(row) for row in connection.execute(query)]

    def finished_since(self, since: datetime) -> list[tuple[str, datetime, datetime]]:
        """(status, created_at, finished_at) of every saga that finished since `since`."""
        t = choreo_sagas
        finished = [status.value for status in SagaStatus if status.finished]
        query = (select(t.c.status, t.c.created_at, t.c.finished_at)
                 .where(t.c.status.in_(finished), t.c.finished_at >= since))
        with reading(self.engine) as connection:
            return [(status, created, finished) for status, created, finished in connection.execute(query)]

    def in_flight(self) -> int:
        """Sagas the observer holds as RUNNING or COMPENSATING."""
        unfinished = [SagaStatus.RUNNING.value, SagaStatus.COMPENSATING.value]
        query = select(func.count()).select_from(choreo_sagas).where(choreo_sagas.c.status.in_(unfinished))
        with reading(self.engine) as connection:
            return int(connection.execute(query).scalar_one())


def _event_of(body: str) -> dict[str, Any]:
    """The event id, type and saga id a dead letter's body holds, where it holds an event."""
    try:
        event = json.loads(body)
    except ValueError:
        return {"event_id": None, "type": None, "saga_id": None}
    if not isinstance(event, dict):
        event = {}
    return {key: event.get(key) if isinstance(event.get(key), str) else None
            for key in ("event_id", "type", "saga_id")}


def _moment(text: object) -> datetime | None:
    """An ISO 8601 moment (the envelope was checked); None for none or one that does not parse."""
    try:
        return parse_moment(text) if isinstance(text, str) else None
    except ValueError:
        return None


def saga_json(row: Any) -> dict[str, Any]:
    name, _, version = (row.definition or "").partition("@")
    definition = {"name": name, "version": int(version)} if WHOLE_NUMBER.fullmatch(version) else None
    return {"saga_id": row.saga_id, "model": "choreography", "status": row.status,
            "definition": definition,
            "isolation": row.isolation,
            "failed_step": row.failed_step, "reason": row.reason, "error": row.error,
            "input": json.loads(row.input) if row.input else None,
            "fail": json.loads(row.faults) if row.faults else {}, "deadline": iso(row.deadline),
            "trace_id": row.trace_id,
            "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
            "finished_at": iso(row.finished_at)}
