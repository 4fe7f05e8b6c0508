"""The SQL table of stored responses (SQLAlchemy Core; its migration in gateway/migrations)."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text

metadata = MetaData()

#: One row per stored response: ``record`` is its JSON (the response, its input items,
#: the items of its chain, its session). Keyed by tenant first: no read crosses tenants.
stored_responses = Table(
    "stored_responses",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(96), primary_key=True),
    Column("record", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("ix_stored_responses_expires_at", "expires_at"),
)
