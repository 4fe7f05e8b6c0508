"""SQL tables of billing: the usage ledger, stored price books, Stripe export batches.

Times are integer microseconds since the Unix epoch (UTC) and money is integer
micro-USD, so both dialects (SQLite, PostgreSQL) store and aggregate them exactly
and identically. The Alembic migration in ``billing/migrations`` creates the same
tables; :func:`create_all` is for tests and the embedded default.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

metadata = MetaData()

#: The predicate of the ledger's partial index of provisional rows.
PROVISIONAL_ONLY = "status = 'provisional'"

usage_ledger = Table(
    "usage_ledger",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("tenant_id", String(128), nullable=False),
    Column("key_id", String(128), nullable=False),
    Column("model", String(200), nullable=False),
    Column("agent_type", String(128)),
    Column("session_id", String(200)),
    Column("pool", String(128)),
    Column("worker", String(300)),
    Column("catalog_model", String(200)),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger),
    Column("tool_calls", Integer, nullable=False),
    Column("tokens_before_compression", BigInteger),
    Column("tokens_after_compression", BigInteger),
    Column("ttft_ms", Float),
    Column("latency_ms", Float, nullable=False),
    Column("status", String(32), nullable=False),
    Column("usage_source", String(32), nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("internal_cost_micros", BigInteger, nullable=False),
    Column("price_book_version", Integer),
    Column("rate_id", String(300)),
    Column("cost_micros", BigInteger, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("ingested_at_us", BigInteger, nullable=False),
    # Added by migration b1_0002 (hence last): the request a gateway-made call served.
    Column("parent_request_id", String(128)),
    Index("ix_usage_ledger_created", "created_at_us"),
    Index("ix_usage_ledger_tenant_created", "tenant_id", "created_at_us"),
    # Only the few rows of streams still in flight (or cut): what settlement scans.
    Index(
        "ix_usage_ledger_provisional",
        "created_at_us",
        postgresql_where=text(PROVISIONAL_ONLY),
        sqlite_where=text(PROVISIONAL_ONLY),
    ),
)

price_books = Table(
    "price_books",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("document", Text, nullable=False),  # canonical JSON of the validated document
    Column("source", Text, nullable=False),  # the YAML text as applied
    Column("sha256", String(64), nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("note", Text),
)

export_batches = Table(
    "billing_export_batches",
    metadata,
    Column("identifier", String(100), primary_key=True),  # the Stripe meter event identifier
    Column("customer_id", String(128), nullable=False),
    Column("meter", String(100), nullable=False),
    Column("event_name", String(100), nullable=False),
    Column("bucket_start_us", BigInteger, nullable=False),
    Column("bucket_end_us", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("value", BigInteger, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("sent_at_us", BigInteger),
    Column("last_error", Text),
    Index("ix_export_batches_bucket", "customer_id", "meter", "bucket_start_us"),
    Index("ix_export_batches_status", "status"),
)


async def create_all(engine: AsyncEngine) -> None:
    """Create the billing tables that do not exist yet (tests and the embedded default)."""
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def insert_ignoring_conflicts(table: Table, dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for SQLite or PostgreSQL."""
    if dialect == "postgresql":
        return pg_insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite_insert(table).on_conflict_do_nothing()
    raise ValueError(f"unsupported database dialect {dialect!r}")
