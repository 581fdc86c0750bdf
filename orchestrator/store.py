"""The saga log: the `sagas` and `saga_events` tables, written before each action.

The tables here are what `orchestrator/migrations/` builds, step by step; a test checks
that the migrations and these tables agree.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    case,
    func,
    insert,
    or_,
    select,
    update,
)

from common.db import MYSQL_TABLE, Key, Timestamp, reading, utcnow, writing
from common.group_commit import GroupCommit
from common.prepared import Prepared, Raw
from common.status import UNFINISHED, Isolation, SagaStatus
from orchestrator.model import DuplicateIdempotencyKey, Event, Lease, LeaseLost, Saga, Transition

metadata = MetaData()

sagas = Table(
    "sagas",
    metadata,
    Column("id", Key(36), primary_key=True),
    Column("status", String(24), nullable=False),
    Column("input", Text, nullable=False),  # JSON: username, address, payment
    Column("faults", Text, nullable=False),  # JSON: {"b": "after_commit"}
    Column("current_step", Integer, nullable=False),  # next step to invoke, or to compensate
    # The definition the saga runs under, for its whole life (sagas/signup.py); sagas
    # logged before definitions had versions ran signup@1.
    Column("definition_name", String(64), nullable=False, server_default="signup"),
    Column("definition_version", Integer, nullable=False, server_default="1"),
    Column("isolation", String(16), nullable=False, server_default="none"),  # none, semantic_lock
    Column("failed_step", String(8), nullable=True),
    Column("reason", String(16), nullable=True),  # "error" or "timeout"
    Column("error", Text, nullable=True),  # why the failed step failed
    Column("compensation_error", Text, nullable=True),  # why the compensation could not finish
    Column("compensation_rounds", Integer, nullable=False, default=0),  # recovery re-tries
    Column("idempotency_key", Key(128), nullable=True, unique=True),
    Column("request_hash", String(64), nullable=True),  # of the body sent with that key
    # Who drives the saga (an orchestrator instance) and until when; the epoch goes up at
    # every change of hands, and every write by a driver is fenced by owner and epoch.
    Column("lease_owner", String(128), nullable=True),
    Column("lease_epoch", Integer, nullable=False, server_default="0"),
    Column("lease_expires_at", Timestamp, nullable=True),
    Column("trace_parent", String(55), nullable=True),  # W3C traceparent of the saga's root span
    Column("created_at", Timestamp, nullable=False, default=utcnow),
    Column("updated_at", Timestamp, nullable=False, default=utcnow, onupdate=utcnow),
    Index("ix_sagas_created_at", "created_at"),
    Index("ix_sagas_status_created_at", "status", "created_at"),
    Index("ix_sagas_status_lease", "status", "lease_expires_at"),
    Index("ix_sagas_status_updated_at", "status", "updated_at"),
    **MYSQL_TABLE,
)

saga_events = Table(
    "saga_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("saga_id", Key(36), nullable=False),
    Column("step", String(8), nullable=False),
    Column("action", String(16), nullable=False),  # "invoke", "compensate", "cancel" or "confirm"
    Column("attempt", Integer, nullable=False),
    Column("http_status", Integer, nullable=True),  # NULL when no answer came
    Column("outcome", String(16), nullable=False),  # ok, error, timeout, unreachable, rejected, locked
    Column("latency_ms", Integer, nullable=False),
    Column("error", Text, nullable=True),
    Column("orchestrator", String(128), nullable=False),  # the instance that made the attempt
    Column("at", Timestamp, nullable=False, default=utcnow),
    Index("ix_saga_events_saga_id", "saga_id", "id"),
    **MYSQL_TABLE,
)


# Built once: the hot path only binds values (the SET columns follow the parameters given).
_INSERT_SAGA = insert(sagas)
_INSERT_EVENT = insert(saga_events)
_RENEW = update(sagas).where(sagas.c.id == bindparam("fenced_id"),
                             sagas.c.lease_owner == bindparam("fenced_owner"),
                             sagas.c.lease_epoch == bindparam("fenced_epoch"))


def _saga(row: Any) -> Saga:
    return Saga(id=row.id, status=SagaStatus(row.status), input=json.loads(row.input),
                faults=json.loads(row.faults), current_step=row.current_step,
                definition_name=row.definition_name, definition_version=row.definition_version,
                isolation=Isolation(row.isolation), failed_step=row.failed_step, reason=row.reason,
                error=row.error,
                compensation_error=row.compensation_error,
                compensation_rounds=row.compensation_rounds,
                idempotency_key=row.idempotency_key, request_hash=row.request_hash,
                lease_owner=row.lease_owner, lease_epoch=row.lease_epoch,
                lease_expires_at=row.lease_expires_at, trace_parent=row.trace_parent,
                created_at=row.created_at, updated_at=row.updated_at)


SAGA_COLUMNS = ("id", "status", "input", "faults", "current_step", "compensation_rounds", "definition_name",
                "definition_version", "isolation", "idempotency_key", "request_hash", "lease_owner",
                "lease_epoch", "lease_expires_at", "trace_parent", "created_at", "updated_at")
EVENT_COLUMNS = ("saga_id", "step", "action", "attempt", "http_status", "outcome", "latency_ms", "error",
                 "orchestrator", "at")


class SagaStore:
    """Reads and writes the saga log; every write by a driver is fenced by its lease.

    The writes of a saga's drive (its creation, and each attempt with the state it decided)
    run on the DB-API connection (`raw_writing`), on SQLite several sagas' in one commit
    (`GroupCommit`): the log is written at every transition, and that is most of what the
    orchestrator's database costs."""

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self.engine = engine
        self.lease = timedelta(seconds=lease_seconds)
        self._insert_saga = Prepared(engine, _INSERT_SAGA, SAGA_COLUMNS)
        self._insert_event = Prepared(engine, _INSERT_EVENT, EVENT_COLUMNS)
        self._log = GroupCommit(engine)  # on SQLite, the writes of sagas under way share commits
        self._taken = engine.dialect.loaded_dbapi.IntegrityError  # the driver's: a key held already
        self._renewals: dict[frozenset[str], Prepared] = {}  # by the columns a renewal sets
        self._holds = Prepared(engine, select(sagas.c.id).where(sagas.c.id == bindparam("key")))

    def _renew(self, columns: frozenset[str]) -> Prepared:
        prepared = self._renewals.get(columns)
        if prepared is None:
            prepared = self._renewals[columns] = Prepared(self.engine, _RENEW, sorted(columns))
        return prepared

    def create(self, saga_id: str, definition: tuple[str, int], saga_input: dict[str, str],
               faults: dict[str, str], owner: str, idempotency_key: str | None = None,
               request_hash: str | None = None, trace_parent: str | None = None,
               isolation: Isolation = Isolation.NONE) -> Saga:
        """Log a new saga under `definition` (name, version), RUNNING at its first step and
        leased to `owner`.

        Raises DuplicateIdempotencyKey if a saga holds `idempotency_key` already.
        """
        now = utcnow()
        name, version = definition
        saga = Saga(id=saga_id, status=SagaStatus.RUNNING, input=saga_input, faults=faults,
                    current_step=0, definition_name=name, definition_version=version,
                    isolation=isolation, idempotency_key=idempotency_key, request_hash=request_hash,
                    lease_owner=owner, lease_epoch=1, lease_expires_at=now + self.lease,
                    trace_parent=trace_parent, created_at=now, updated_at=now)
        def log_it(connection: Raw) -> bool:
            """False if a saga holds the idempotency key (the statement failed, not the transaction)."""
            try:
                connection.execute(self._insert_saga, {
                    "id": saga.id, "status": saga.status.value, "input": json.dumps(saga_input),
                    "faults": json.dumps(faults), "current_step": 0, "compensation_rounds": 0,
                    "definition_name": name, "definition_version": version,
                    "isolation": isolation.value, "idempotency_key": idempotency_key,
                    "request_hash": request_hash,
                    "lease_owner": owner, "lease_epoch": 1, "lease_expires_at": saga.lease_expires_at,
                    "trace_parent": trace_parent,
                    "created_at": now, "updated_at": now})
            except self._taken:
                if idempotency_key is None:
                    raise
                return False
            return True

        if not self._log.run(log_it):
            raise DuplicateIdempotencyKey(idempotency_key or "")
        return saga

    def holds(self, connection: Raw, saga_id: str) -> bool:
        """Is there a saga of this id in the log? (In a caller's transaction on this database.)"""
        return connection.first(self._holds, {"key": saga_id}) is not None

    def by_idempotency_key(self, key: str) -> Saga | None:
        with reading(self.engine) as connection:
            row = connection.execute(select(sagas).where(sagas.c.idempotency_key == key)).first()
        return None if row is None else _saga(row)

    @staticmethod
    def _state(then: Transition) -> dict[str, Any]:
        """The columns of a saga state; a final one gives up the lease in the same write."""
        values: dict[str, Any] = {"status": then.status.value, "current_step": then.current_step,
                                  **then.details}
        if then.status.finished:
            values.update(lease_owner=None, lease_expires_at=None)
        return values

    def record_attempt(self, saga_id: str, lease: Lease, event: Event,
                       then: Transition | None = None) -> None:
        """Append one attempt to the saga's timeline and renew the lease, in one transaction;
        with `then`, the attempt that decided a step, also the saga's next state.

        Raises LeaseLost, writing nothing, unless `lease` (owner and epoch) still holds."""
        now = utcnow()
        values = {"lease_expires_at": now + self.lease, "updated_at": now,
                  **({} if then is None else self._state(then))}
        renew = self._renew(frozenset(values))

        def log_it(connection: Raw) -> bool:
            """False, writing nothing, if the lease no longer holds (the fence comes first)."""
            if connection.execute(renew, {"fenced_id": saga_id, "fenced_owner": lease.owner,
                                          "fenced_epoch": lease.epoch, **values}) != 1:
                return False
            connection.execute(self._insert_event, {
                "saga_id": saga_id, "step": event.step, "action": event.action,
                "attempt": event.attempt, "http_status": event.http_status,
                "outcome": event.outcome, "latency_ms": event.latency_ms, "error": event.error,
                "orchestrator": lease.owner, "at": now})
            return True

        if not self._log.run(log_it):
            raise LeaseLost(f"saga {saga_id} is no longer leased to {lease.owner} (epoch {lease.epoch})")

    def claim(self, saga_id: str, owner: str) -> bool:
        """Take the lease on an unfinished saga whose lease has run out, in a new epoch; atomic."""
        now = utcnow()
        with writing(self.engine) as connection:
            return connection.execute(
                update(sagas).where(sagas.c.id == saga_id, self._unleased(now))
                .values(lease_owner=owner, lease_epoch=sagas.c.lease_epoch + 1,
                        lease_expires_at=now + self.lease)
            ).rowcount == 1

    def claimable(self, limit: int = 50) -> list[str]:
        """Ids of unfinished sagas that nobody holds a live lease on, oldest lease first."""
        query = (select(sagas.c.id).where(self._unleased(utcnow()))
                 .order_by(sagas.c.lease_expires_at).limit(limit))
        with reading(self.engine) as connection:
            return list(connection.execute(query).scalars())

    @staticmethod
    def _unleased(now: datetime) -> Any:
        return and_(sagas.c.status.in_([s.value for s in UNFINISHED]),
                    or_(sagas.c.lease_expires_at.is_(None), sagas.c.lease_expires_at < now))

    def reopen_failed_compensation(self, saga_id: str, owner: str,
                                   quiet_since: datetime | None = None,
                                   max_rounds: int | None = None,
                                   clear_faults: bool = False) -> bool:
        """COMPENSATION_FAILED -> COMPENSATING, leased to `owner`, for one more round; atomic.

        The recovery loop passes `quiet_since` and `max_rounds` (it retries a saga only once it
        has rested, and only so often); POST /sagas/<id>/retry passes neither, and clears the
        injected faults: the demo's stand-in for repairing the failing service.
        """
        now = utcnow()
        conditions = [sagas.c.id == saga_id, *self._failed_compensation(quiet_since, max_rounds)]
        values: dict[str, Any] = {
            "status": SagaStatus.COMPENSATING.value, "compensation_error": None,
            "lease_owner": owner, "lease_epoch": sagas.c.lease_epoch + 1,
            "lease_expires_at": now + self.lease, "updated_at": now,
            "compensation_rounds": sagas.c.compensation_rounds + 1}
        if clear_faults:
            values["faults"] = "{}"
        with writing(self.engine) as connection:
            return connection.execute(update(sagas).where(*conditions).values(values)).rowcount == 1

    def failed_compensations(self, quiet_since: datetime, max_rounds: int,
                             limit: int = 50) -> list[str]:
        """COMPENSATION_FAILED sagas due for another automatic round."""
        query = (select(sagas.c.id).where(*self._failed_compensation(quiet_since, max_rounds))
                 .order_by(sagas.c.updated_at).limit(limit))
        with reading(self.engine) as connection:
            return list(connection.execute(query).scalars())

    @staticmethod
    def _failed_compensation(quiet_since: datetime | None, max_rounds: int | None) -> list[Any]:
        """COMPENSATION_FAILED, and (when given) rested since `quiet_since`, under `max_rounds`."""
        conditions: list[Any] = [sagas.c.status == SagaStatus.COMPENSATION_FAILED.value]
        if quiet_since is not None:
            conditions.append(sagas.c.updated_at < quiet_since)
        if max_rounds is not None:
            conditions.append(sagas.c.compensation_rounds < max_rounds)
        return conditions

    def lease_owners(self, prefix: str) -> list[str]:
        """The instances whose name starts with `prefix` that hold unfinished sagas."""
        query = (select(sagas.c.lease_owner).distinct()
                 .where(sagas.c.status.in_([s.value for s in UNFINISHED]),
                        sagas.c.lease_owner.startswith(prefix, autoescape=True)))
        with reading(self.engine) as connection:
            return [owner for owner in connection.execute(query).scalars() if owner]

    def expire_leases_of(self, owners: list[str]) -> int:
        """End the leases `owners` hold now (they are known dead), so recovery claims their
        sagas at once instead of when the leases run out."""
        if not owners:
            return 0
        with writing(self.engine) as connection:
            return connection.execute(
                update(sagas).where(sagas.c.lease_owner.in_(owners),
                                    sagas.c.status.in_([s.value for s in UNFINISHED]))
                .values(lease_expires_at=None)).rowcount

    def get(self, saga_id: str) -> Saga | None:
        with reading(self.engine) as connection:
            row = connection.execute(select(sagas).where(sagas.c.id == saga_id)).first()
        return None if row is None else _saga(row)

    def recent(self, limit: int, status: SagaStatus | None = None,
               before: datetime | None = None) -> list[Saga]:
        """The newest sagas created before `before` (now, if not given), optionally of one status.

        Bounded by time, so the database reads a range of the creation index from its newest
        end, never the whole index (the index test holds every query to that)."""
        query = (select(sagas).where(sagas.c.created_at <= (before or utcnow()))
                 .order_by(sagas.c.created_at.desc()).limit(limit))
        if status is not None:
            query = query.where(sagas.c.status == status.value)
        with reading(self.engine) as connection:
            return [_saga(row) for row in connection.execute(query)]

    def finished_since(self, since: datetime) -> list[tuple[str, datetime, datetime]]:
        """(status, created_at, finished at) of every saga that finished since `since` (a saga's
        last write is the one that finished it)."""
        query = (select(sagas.c.status, sagas.c.created_at, sagas.c.updated_at)
                 .where(sagas.c.status.in_([s.value for s in SagaStatus if s.finished]),
                        sagas.c.updated_at >= since))
        with reading(self.engine) as connection:
            return [(status, created, finished) for status, created, finished in connection.execute(query)]

    def in_flight(self) -> int:
        """How many sagas are RUNNING or COMPENSATING (an index range per status)."""
        unfinished = [status.value for status in UNFINISHED]
        query = select(func.count()).select_from(sagas).where(sagas.c.status.in_(unfinished))
        with reading(self.engine) as connection:
            return int(connection.execute(query).scalar_one())

    def page(self, after: str, limit: int) -> list[Saga]:
        """The next `limit` sagas by id after `after` (ids sort by when they were made)."""
        query = select(sagas).where(sagas.c.id > after).order_by(sagas.c.id).limit(limit)
        with reading(self.engine) as connection:
            return [_saga(row) for row in connection.execute(query)]

    def events(self, saga_id: str) -> list[Event]:
        """The saga's attempts, in order."""
        query = (select(saga_events).where(saga_events.c.saga_id == saga_id)
                 .order_by(saga_events.c.id))
        with reading(self.engine) as connection:
            return [Event(row.step, row.action, row.attempt, row.http_status, row.outcome,
                          row.latency_ms, row.error, row.orchestrator, row.at)
                    for row in connection.execute(query)]

    def attempts_so_far(self, saga_id: str, step: str, action: str) -> tuple[int, int]:
        """How many attempts the log holds for one step's action (to resume the count), and how
        many of them a semantic lock held back (which do not count against its retries)."""
        held_back = func.coalesce(func.sum(case((saga_events.c.outcome == "locked", 1), else_=0)), 0)
        query = select(func.count(), held_back).select_from(saga_events).where(
            saga_events.c.saga_id == saga_id, saga_events.c.step == step,
            saga_events.c.action == action)
        with reading(self.engine) as connection:
            made, held = connection.execute(query).one()
        return int(made), int(held)
