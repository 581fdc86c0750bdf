"""The observer's tables, in the orchestrator's database: each choreographed saga as the
observer holds it, every event it recorded, and the broker's dead letters it kept."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table, Text

from common.db import MYSQL_TABLE, Key, Timestamp

metadata = MetaData()

choreo_sagas = Table(
    "choreo_sagas", metadata,
    Column("saga_id", Key(64), primary_key=True),
    Column("status", String(24), nullable=False),
    Column("failed_step", String(8), nullable=True),
    Column("reason", String(16), nullable=True),
    Column("error", Text, nullable=True),
    Column("input", Text, nullable=True),  # JSON, from the sign-up (SignupRequested)
    Column("faults", Text, nullable=True),  # JSON, from the sign-up
    Column("definition", String(64), nullable=True),  # name@version, from the sign-up
    Column("isolation", String(16), nullable=True),  # none or semantic_lock, from the sign-up
    Column("deadline", Timestamp, nullable=True),
    Column("trace_id", String(32), nullable=True),  # of the saga's trace, from its sign-up
    Column("created_at", Timestamp, nullable=False),
    Column("updated_at", Timestamp, nullable=False),
    Column("finished_at", Timestamp, nullable=True),
    Index("ix_choreo_sagas_created_at", "created_at"),
    Index("ix_choreo_sagas_status_created_at", "status", "created_at"),
    Index("ix_choreo_sagas_status_finished_at", "status", "finished_at"),
    **MYSQL_TABLE,
)

choreo_events = Table(
    "choreo_events", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", Key(32), nullable=False, unique=True),
    Column("saga_id", Key(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("occurred_at", String(32), nullable=False),
    Column("received_at", Timestamp, nullable=False),
    Column("payload", Text, nullable=False),
    Index("ix_choreo_events_saga_id", "saga_id", "id"),
    **MYSQL_TABLE,
)

choreo_dead_letters = Table(
    "choreo_dead_letters", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("queue", String(128), nullable=False),
    Column("reason", String(64), nullable=False),  # why, in a word: malformed, wrong_publisher, ...
    Column("body", Text, nullable=False),
    Column("at", Timestamp, nullable=False),
    Column("detail", Text, nullable=True),  # why, in full
    Column("published_by", String(128), nullable=True),  # the broker account it came from
    Column("redriven_at", Timestamp, nullable=True),  # its owner was asked to publish it again
    **MYSQL_TABLE,
)
