"""The saga log as it was before migrations: sagas and their attempts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

from common.db import Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sagas",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("input", sa.Text, nullable=False),
        sa.Column("faults", sa.Text, nullable=False),
        sa.Column("current_step", sa.Integer, nullable=False),
        sa.Column("failed_step", sa.String(8), nullable=True),
        sa.Column("reason", sa.String(16), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("compensation_error", sa.Text, nullable=True),
        sa.Column("compensation_rounds", sa.Integer, nullable=False),
        sa.Column("idempotency_key", sa.String(128), nullable=True, unique=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", Timestamp, nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("updated_at", Timestamp, nullable=False),
        mysql_engine="InnoDB", mysql_charset="utf8mb4",
    )
    op.create_index("ix_sagas_created_at", "sagas", ["created_at"])
    op.create_index("ix_sagas_status_created_at", "sagas", ["status", "created_at"])
    op.create_index("ix_sagas_status_lease", "sagas", ["status", "lease_expires_at"])
    op.create_index("ix_sagas_status_updated_at", "sagas", ["status", "updated_at"])
    op.create_table(
        "saga_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("saga_id", sa.String(36), nullable=False),
        sa.Column("step", sa.String(8), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("http_status", sa.Integer, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("orchestrator", sa.String(64), nullable=False),
        sa.Column("at", Timestamp, nullable=False),
        mysql_engine="InnoDB", mysql_charset="utf8mb4",
    )
    op.create_index("ix_saga_events_saga_id", "saga_events", ["saga_id", "id"])
