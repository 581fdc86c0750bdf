"""Every saga keeps the W3C traceparent of its trace's root span, so that all work on it, a
drive after a restart included, joins one trace.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sagas") as batch:
        batch.add_column(sa.Column("trace_parent", sa.String(55), nullable=True))
