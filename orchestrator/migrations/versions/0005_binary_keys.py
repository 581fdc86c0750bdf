"""Saga ids and Idempotency-Keys compared byte for byte on MySQL too (its default collation
ignores case: `Key-1` and `KEY-1` were one key there, two on SQLite).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from common.db import Key

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sagas") as batch:
        batch.alter_column("id", type_=Key(36), existing_type=sa.String(36), existing_nullable=False)
        batch.alter_column("idempotency_key", type_=Key(128), existing_type=sa.String(128),
                           existing_nullable=True)
    with op.batch_alter_table("saga_events") as batch:
        batch.alter_column("saga_id", type_=Key(36), existing_type=sa.String(36), existing_nullable=False)
