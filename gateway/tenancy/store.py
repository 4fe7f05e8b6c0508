"""Tenants and API keys in SQL: the admin operations and the key lookup.

Every mutation bumps ``tenancy_version`` in the same transaction, so replicas
that poll it (or the Redis copy of it) drop their cached principals at once.
Secrets are stored only as SHA-256 digests; the plaintext is returned once, by
:meth:`TenantStore.create_key` and :meth:`TenantStore.rotate_key`.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.auth import generate_key, hash_key
from gateway.database import translate_db_errors
from gateway.tenancy.schemas import (
    ApiKey,
    ApiKeyCreated,
    Budgets,
    KeyCreate,
    KeyUpdate,
    Limits,
    Scopes,
    Tenant,
    TenantCreate,
    TenantUpdate,
)
from gateway.tenancy.tables import api_keys, tenancy_version, tenants
from tollway.errors import NotFound

PREFIX_LENGTH = 10


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _json(model: Limits | Budgets | Scopes) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _tenant(row: Mapping[Any, Any]) -> Tenant:
    return Tenant(
        id=row["id"],
        name=row["name"],
        status=row["status"],
        stripe_customer_id=row["stripe_customer_id"],
        limits=Limits.model_validate(row["limits"]),
        budgets=Budgets.model_validate(row["budgets"]),
        allowed_models=row["allowed_models"],
        allowed_agent_types=row["allowed_agent_types"],
        created_at=_utc(row["created_at"]) or _now(),
        updated_at=_utc(row["updated_at"]) or _now(),
    )


def _key(row: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        id=row["id"],
        tenant_id=row["tenant_id"],
        prefix=row["prefix"],
        name=row["name"],
        scopes=Scopes.model_validate(row["scopes"]),
        limits=Limits.model_validate(row["limits"]),
        budgets=Budgets.model_validate(row["budgets"]),
        default_agent_type=row["default_agent_type"],
        compression=row["compression"],
        expires_at=_utc(row["expires_at"]),
        revoked_at=_utc(row["revoked_at"]),
        created_at=_utc(row["created_at"]) or _now(),
        last_used_at=_utc(row["last_used_at"]),
    )


class TenantStore:
    """Admin operations on tenants and keys, and key lookup by digest."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @staticmethod
    async def _bump(conn: AsyncConnection) -> None:
        await conn.execute(
            update(tenancy_version)
            .where(tenancy_version.c.id == "tenancy")
            .values(version=tenancy_version.c.version + 1)
        )

    async def version(self) -> int:
        """The tenancy version (bumped by every change)."""
        with translate_db_errors("reading the tenancy version"):
            async with self.engine.connect() as conn:
                value = await conn.scalar(select(tenancy_version.c.version))
        return int(value or 0)

    # -- tenants -----------------------------------------------------------

    async def create_tenant(self, body: TenantCreate) -> Tenant:
        now = _now()
        row = {
            "id": "ten_" + secrets.token_hex(12),
            "name": body.name,
            "status": "active",
            "stripe_customer_id": body.stripe_customer_id,
            "limits": _json(body.limits),
            "budgets": _json(body.budgets),
            "allowed_models": body.allowed_models,
            "allowed_agent_types": body.allowed_agent_types,
            "created_at": now,
            "updated_at": now,
        }
        with translate_db_errors("creating a tenant"):
            async with self.engine.begin() as conn:
                await conn.execute(tenants.insert().values(**row))
                await self._bump(conn)
        return _tenant(row)

    async def list_tenants(self) -> list[Tenant]:
        with translate_db_errors("listing tenants"):
            async with self.engine.connect() as conn:
                rows = (await conn.execute(select(tenants).order_by(tenants.c.created_at))).all()
        return [_tenant(r._mapping) for r in rows]

    async def get_tenant(self, tenant_id: str) -> Tenant:
        with translate_db_errors("reading a tenant"):
            async with self.engine.connect() as conn:
                row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
        if row is None:
            raise NotFound(f"No tenant with id '{tenant_id}'.", param="tenant_id")
        return _tenant(row._mapping)

    async def update_tenant(self, tenant_id: str, body: TenantUpdate) -> Tenant:
        changes: dict[str, Any] = {}
        for field in body.model_fields_set:
            value = getattr(body, field)
            if field in ("limits", "budgets"):
                if value is None:
                    value = Limits() if field == "limits" else Budgets()
                value = _json(value)
            changes[field] = value
        if "name" in changes and changes["name"] is None:
            del changes["name"]
        if "status" in changes and changes["status"] is None:
            del changes["status"]
        with translate_db_errors("updating a tenant"):
            async with self.engine.begin() as conn:
                if changes:
                    changes["updated_at"] = _now()
                    result = await conn.execute(
                        update(tenants).where(tenants.c.id == tenant_id).values(**changes)
                    )
                    if result.rowcount == 0:
                        raise NotFound(f"No tenant with id '{tenant_id}'.", param="tenant_id")
                    await self._bump(conn)
        return await self.get_tenant(tenant_id)

    # -- keys --------------------------------------------------------------

    async def create_key(self, tenant_id: str, body: KeyCreate) -> ApiKeyCreated:
        await self.get_tenant(tenant_id)
        secret = generate_key()
        now = _now()
        row = {
            "id": "key_" + secrets.token_hex(12),
            "tenant_id": tenant_id,
            "prefix": secret[:PREFIX_LENGTH],
            "secret_hash": hash_key(secret),
            "name": body.name,
            "scopes": _json(body.scopes),
            "limits": _json(body.limits),
            "budgets": _json(body.budgets),
            "default_agent_type": body.default_agent_type,
            "compression": body.compression,
            "expires_at": body.expires_at,
            "revoked_at": None,
            "created_at": now,
            "last_used_at": None,
        }
        with translate_db_errors("creating a key"):
            async with self.engine.begin() as conn:
                await conn.execute(api_keys.insert().values(**row))
                await self._bump(conn)
        return ApiKeyCreated(key=secret, **_key(row).model_dump())

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        await self.get_tenant(tenant_id)
        with translate_db_errors("listing keys"):
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(api_keys)
                        .where(api_keys.c.tenant_id == tenant_id)
                        .order_by(api_keys.c.created_at)
                    )
                ).all()
        return [_key(r._mapping) for r in rows]

    async def get_key(self, key_id: str) -> ApiKey:
        with translate_db_errors("reading a key"):
            async with self.engine.connect() as conn:
                row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
        return _key(row._mapping)

    async def update_key(self, key_id: str, body: KeyUpdate) -> ApiKey:
        changes: dict[str, Any] = {}
        defaults: dict[str, Limits | Budgets | Scopes] = {
            "limits": Limits(),
            "budgets": Budgets(),
            "scopes": Scopes(),
        }
        for field in body.model_fields_set:
            value = getattr(body, field)
            if field in defaults:
                value = _json(value if value is not None else defaults[field])
            if field == "name" and value is None:
                continue
            changes[field] = value
        with translate_db_errors("updating a key"):
            async with self.engine.begin() as conn:
                if changes:
                    result = await conn.execute(
                        update(api_keys).where(api_keys.c.id == key_id).values(**changes)
                    )
                    if result.rowcount == 0:
                        raise NotFound(f"No API key with id '{key_id}'.", param="key_id")
                    await self._bump(conn)
        return await self.get_key(key_id)

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke a key (idempotent: revoking twice keeps the first time)."""
        with translate_db_errors("revoking a key"):
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                    .values(revoked_at=_now())
                )
                if result.rowcount:
                    await self._bump(conn)
        return await self.get_key(key_id)

    async def rotate_key(self, key_id: str) -> ApiKeyCreated:
        """Revoke a key and issue a new one with the same settings."""
        old = await self.get_key(key_id)
        created = await self.create_key(
            old.tenant_id,
            KeyCreate(
                name=old.name,
                limits=old.limits,
                budgets=old.budgets,
                scopes=old.scopes,
                default_agent_type=old.default_agent_type,
                compression=old.compression,
                expires_at=old.expires_at,
            ),
        )
        await self.revoke_key(key_id)
        return created

    async def lookup(self, digest: str) -> tuple[ApiKey, Tenant] | None:
        """The key with this secret digest and its tenant, or None."""
        with translate_db_errors("looking up a key"):
            async with self.engine.connect() as conn:
                row = (
                    await conn.execute(select(api_keys).where(api_keys.c.secret_hash == digest))
                ).first()
                if row is None:
                    return None
                trow = (
                    await conn.execute(select(tenants).where(tenants.c.id == row.tenant_id))
                ).first()
        if trow is None:  # pragma: no cover - the foreign key prevents it
            return None
        return _key(row._mapping), _tenant(trow._mapping)

    async def touch(self, key_ids: Iterable[str], when: datetime | None = None) -> None:
        """Record that keys were used (batched, off the request path)."""
        ids = list(key_ids)
        if not ids:
            return
        with translate_db_errors("recording key use"):
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(api_keys)
                    .where(api_keys.c.id.in_(ids))
                    .values(last_used_at=when or _now())
                )
