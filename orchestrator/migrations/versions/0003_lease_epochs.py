"""Fence every write by a lease epoch as well as the owner, and give owners room for an
instance id (the configured name, the host and the process).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sagas") as batch:
        batch.add_column(sa.Column("lease_epoch", sa.Integer, nullable=False, server_default="0"))
        batch.alter_column("lease_owner", type_=sa.String(128), existing_type=sa.String(64),
                           existing_nullable=True)
    with op.batch_alter_table("saga_events") as batch:
        batch.alter_column("orchestrator", type_=sa.String(128), existing_type=sa.String(64),
                           existing_nullable=False)
