"""Every saga records the definition (name and version) it runs under.

Sagas logged before this ran the sign-up's first version, which the defaults say.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sagas") as batch:
        batch.add_column(sa.Column("definition_name", sa.String(64), nullable=False,
                                   server_default="signup"))
        batch.add_column(sa.Column("definition_version", sa.Integer, nullable=False,
                                   server_default="1"))
