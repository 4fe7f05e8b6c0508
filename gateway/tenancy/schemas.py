"""Admin API bodies and views of tenants and keys (pydantic; in the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

TenantStatus = Literal["active", "suspended"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Limits(_Body):
    """Rate limits; a missing or null field means no limit."""

    rpm: int | None = Field(default=None, ge=1, le=10_000_000, description="Requests per minute.")
    tpm: int | None = Field(default=None, ge=1, le=10_000_000_000, description="Tokens per minute.")
    max_concurrent: int | None = Field(
        default=None, ge=1, le=1_000_000, description="Requests in flight at once."
    )
    stored_responses_retention_s: int | None = Field(
        default=None,
        ge=60,
        le=10 * 366 * 86400,
        description="Responses API: how long a response (or conversation) created with "
        "this key (a key's) or by this tenant is kept; null: the configuration's "
        "`responses.retention_s`.",
    )
    stored_responses_max_bytes: int | None = Field(
        default=None,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Responses API: the largest stored record; null: the configuration's "
        "`responses.max_stored_bytes`.",
    )


class Budgets(_Body):
    """Spending caps in USD (decimal); a missing or null field means no cap."""

    daily_usd: Decimal | None = Field(default=None, ge=0, le=10_000_000, decimal_places=6)
    monthly_usd: Decimal | None = Field(default=None, ge=0, le=100_000_000, decimal_places=6)


class Scopes(_Body):
    """What a key may use; null means whatever its tenant may use."""

    models: list[str] | None = Field(default=None, max_length=1000)
    agent_types: list[str] | None = Field(default=None, max_length=1000)


class TenantCreate(_Body):
    """``POST /admin/v1/tenants``."""

    name: str = Field(min_length=1, max_length=200)
    limits: Limits = Limits()
    budgets: Budgets = Budgets()
    stripe_customer_id: str | None = Field(default=None, max_length=100)
    allowed_models: list[str] | None = Field(default=None, max_length=1000)
    allowed_agent_types: list[str] | None = Field(default=None, max_length=1000)


class TenantUpdate(_Body):
    """``PATCH /admin/v1/tenants/{id}``: only the fields given change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    status: TenantStatus | None = None
    limits: Limits | None = None
    budgets: Budgets | None = None
    stripe_customer_id: str | None = Field(default=None, max_length=100)
    allowed_models: list[str] | None = Field(default=None, max_length=1000)
    allowed_agent_types: list[str] | None = Field(default=None, max_length=1000)


class Tenant(BaseModel):
    """A tenant as the admin API shows it."""

    object: Literal["tenant"] = "tenant"
    id: str
    name: str
    status: TenantStatus
    stripe_customer_id: str | None
    limits: Limits
    budgets: Budgets
    allowed_models: list[str] | None
    allowed_agent_types: list[str] | None
    created_at: datetime
    updated_at: datetime


_COMPRESSION = Field(
    default=None,
    pattern=_NAME,
    description="A policy under `compression:` this key uses instead of its agent type's; "
    "`none` turns compression off for the key.",
)


class KeyCreate(_Body):
    """``POST /admin/v1/tenants/{id}/keys``."""

    name: str = Field(default="default", min_length=1, max_length=200)
    limits: Limits = Limits()
    budgets: Budgets = Budgets()
    scopes: Scopes = Scopes()
    default_agent_type: str | None = Field(default=None, pattern=_NAME)
    compression: str | None = _COMPRESSION
    expires_at: datetime | None = None


class KeyUpdate(_Body):
    """``PATCH /admin/v1/keys/{id}``: only the fields given change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    limits: Limits | None = None
    budgets: Budgets | None = None
    scopes: Scopes | None = None
    default_agent_type: str | None = Field(default=None, pattern=_NAME)
    compression: str | None = _COMPRESSION
    expires_at: datetime | None = None


class ApiKey(BaseModel):
    """An API key as the admin API shows it: never its secret."""

    object: Literal["api_key"] = "api_key"
    id: str
    tenant_id: str
    prefix: str = Field(description="The key's first characters, to recognise it.")
    name: str
    scopes: Scopes
    limits: Limits
    budgets: Budgets
    default_agent_type: str | None
    compression: str | None = None
    expires_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(ApiKey):
    """A new key: the only response that carries the secret."""

    key: str = Field(description="The secret. Shown once; store it now.")


T = TypeVar("T")


class ListOf(BaseModel, Generic[T]):
    """An OpenAI-style list."""

    object: Literal["list"] = "list"
    data: list[T]
