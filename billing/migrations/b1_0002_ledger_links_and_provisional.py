"""Usage ledger: the request a gateway-made call served, and an index of provisional rows.

``parent_request_id`` links a rolling-summary call (agent type ``summarizer``) to the
request that caused it. The partial index covers only ``provisional`` rows (streams
in flight or cut by a crash), which the ledger writer settles.

Revision ID: b1_0002
Revises: b1_0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b1_0002"
down_revision: str | None = "b1_0001"
branch_labels: Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROVISIONAL_ONLY = "status = 'provisional'"


def upgrade() -> None:
    """Add ``parent_request_id`` and the partial index of provisional rows.

    Each only where missing: a database whose tables were created without a recorded
    version (and then adopted at ``b1_0001``) may have them already.
    """
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("usage_ledger")}
    indexes = {i["name"] for i in inspector.get_indexes("usage_ledger")}
    if "parent_request_id" not in columns:
        with op.batch_alter_table("usage_ledger") as batch:
            batch.add_column(sa.Column("parent_request_id", sa.String(128)))
    if "ix_usage_ledger_provisional" in indexes:
        return
    op.create_index(
        "ix_usage_ledger_provisional",
        "usage_ledger",
        ["created_at_us"],
        postgresql_where=sa.text(_PROVISIONAL_ONLY),
        sqlite_where=sa.text(_PROVISIONAL_ONLY),
    )


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_usage_ledger_provisional", table_name="usage_ledger")
    with op.batch_alter_table("usage_ledger") as batch:
        batch.drop_column("parent_request_id")
