"""API keys may override their agent type's compression policy.

Revision ID: t0002_key_compression
Revises: t0001_tenancy
"""

import sqlalchemy as sa
from alembic import op

revision = "t0002_key_compression"
down_revision = "t0001_tenancy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("compression", sa.String(128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("compression")
