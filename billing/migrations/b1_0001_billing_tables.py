"""Billing tables: usage ledger, price books, Stripe export batches.

Revision ID: b1_0001
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b1_0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = ("billing",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the billing tables (identical to ``billing.tables``)."""
    op.create_table(
        "usage_ledger",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("agent_type", sa.String(128)),
        sa.Column("session_id", sa.String(200)),
        sa.Column("pool", sa.String(128)),
        sa.Column("worker", sa.String(300)),
        sa.Column("catalog_model", sa.String(200)),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("reasoning_tokens", sa.BigInteger),
        sa.Column("tool_calls", sa.Integer, nullable=False),
        sa.Column("tokens_before_compression", sa.BigInteger),
        sa.Column("tokens_after_compression", sa.BigInteger),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("usage_source", sa.String(32), nullable=False),
        sa.Column("gpu_seconds", sa.Float, nullable=False),
        sa.Column("internal_cost_micros", sa.BigInteger, nullable=False),
        sa.Column("price_book_version", sa.Integer),
        sa.Column("rate_id", sa.String(300)),
        sa.Column("cost_micros", sa.BigInteger, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("ingested_at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_usage_ledger_created", "usage_ledger", ["created_at_us"])
    op.create_index(
        "ix_usage_ledger_tenant_created", "usage_ledger", ["tenant_id", "created_at_us"]
    )
    op.create_table(
        "price_books",
        sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("document", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_table(
        "billing_export_batches",
        sa.Column("identifier", sa.String(100), primary_key=True),
        sa.Column("customer_id", sa.String(128), nullable=False),
        sa.Column("meter", sa.String(100), nullable=False),
        sa.Column("event_name", sa.String(100), nullable=False),
        sa.Column("bucket_start_us", sa.BigInteger, nullable=False),
        sa.Column("bucket_end_us", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.Column("sent_at_us", sa.BigInteger),
        sa.Column("last_error", sa.Text),
    )
    op.create_index(
        "ix_export_batches_bucket",
        "billing_export_batches",
        ["customer_id", "meter", "bucket_start_us"],
    )
    op.create_index("ix_export_batches_status", "billing_export_batches", ["status"])


def downgrade() -> None:
    """Drop the billing tables."""
    op.drop_table("billing_export_batches")
    op.drop_table("price_books")
    op.drop_index("ix_usage_ledger_tenant_created", table_name="usage_ledger")
    op.drop_index("ix_usage_ledger_created", table_name="usage_ledger")
    op.drop_table("usage_ledger")
