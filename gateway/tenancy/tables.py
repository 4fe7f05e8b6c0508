"""SQL tables of tenants and API keys (SQLAlchemy Core; migrations in gateway/migrations)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Table,
)

metadata = MetaData()

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("stripe_customer_id", String(100), nullable=True),
    Column("limits", JSON, nullable=False),
    Column("budgets", JSON, nullable=False),
    Column("allowed_models", JSON, nullable=True),
    Column("allowed_agent_types", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(40), ForeignKey("tenants.id"), nullable=False),
    Column("prefix", String(20), nullable=False),
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("limits", JSON, nullable=False),
    Column("budgets", JSON, nullable=False),
    Column("default_agent_type", String(128), nullable=True),
    Column("compression", String(128), nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Index("ix_api_keys_tenant_id", "tenant_id"),
)

# One row, bumped in the same transaction as every change to tenants or keys;
# replicas without Redis poll it to invalidate their key caches.
tenancy_version = Table(
    "tenancy_version",
    metadata,
    Column("id", String(10), primary_key=True),
    Column("version", BigInteger, nullable=False),
)
