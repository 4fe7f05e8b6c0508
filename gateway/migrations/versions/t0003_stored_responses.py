"""Stored responses of the Responses API (``store: true``), per tenant, with an expiry.

Revision ID: t0003_stored_responses
Revises: t0002_key_compression
"""

import sqlalchemy as sa
from alembic import op

revision = "t0003_stored_responses"
down_revision = "t0002_key_compression"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stored_responses",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(96), primary_key=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_stored_responses_expires_at", "stored_responses", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_stored_responses_expires_at", "stored_responses")
    op.drop_table("stored_responses")
