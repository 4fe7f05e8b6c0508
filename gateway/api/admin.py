"""The admin API under ``/admin/v1``: tenants, keys, limits and budgets.

Authenticated with the admin token (``Authorization: Bearer <admin token>``,
compared in constant time). Tenant API keys never pass here. Routes only map
paths to :class:`gateway.tenancy.store.TenantStore` operations.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Header

from gateway.auth import bearer_token
from gateway.tenancy.schemas import (
    ApiKey,
    ApiKeyCreated,
    KeyCreate,
    KeyUpdate,
    ListOf,
    Tenant,
    TenantCreate,
    TenantUpdate,
)
from gateway.tenancy.store import TenantStore
from tollway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied


def admin_guard(token: str | None) -> Callable[[str | None], None]:
    """A dependency that admits only the admin token."""
    expected = token.encode() if token else None

    def check(authorization: Annotated[str | None, Header()] = None) -> None:
        if expected is None:
            raise PermissionDenied(
                "The admin API is disabled: no admin token is configured.",
                code="admin_disabled",
            )
        given = bearer_token(authorization).encode()
        if not hmac.compare_digest(given, expected):
            raise AuthenticationFailed("Invalid admin token.", code="invalid_admin_token")

    return check


def router(
    store: TenantStore,
    admin_token: str | None,
    on_change: Callable[[], None],
    compression_policies: frozenset[str] = frozenset(),
) -> APIRouter:
    """The ``/admin/v1`` routes; ``on_change`` runs after every mutation."""

    def check_policy(name: str | None) -> None:
        if name is not None and name != "none" and name not in compression_policies:
            raise InvalidRequest(
                f"compression policy '{name}' is not configured; known: "
                f"{', '.join(sorted(compression_policies)) or 'none'}",
                param="compression",
                code="invalid_value",
            )

    api = APIRouter(
        prefix="/admin/v1", tags=["admin"], dependencies=[Depends(admin_guard(admin_token))]
    )

    @api.post("/tenants", status_code=201, response_model=Tenant, summary="Create a tenant")
    async def create_tenant(body: TenantCreate) -> Tenant:
        tenant = await store.create_tenant(body)
        on_change()
        return tenant

    @api.get("/tenants", response_model=ListOf[Tenant], summary="List tenants")
    async def list_tenants() -> ListOf[Tenant]:
        return ListOf[Tenant](data=await store.list_tenants())

    @api.get("/tenants/{tenant_id}", response_model=Tenant, summary="Get a tenant")
    async def get_tenant(tenant_id: str) -> Tenant:
        return await store.get_tenant(tenant_id)

    @api.patch(
        "/tenants/{tenant_id}",
        response_model=Tenant,
        summary="Update a tenant (name, status, limits, budgets, allowed models and agent types)",
    )
    async def update_tenant(tenant_id: str, body: TenantUpdate) -> Tenant:
        tenant = await store.update_tenant(tenant_id, body)
        on_change()
        return tenant

    @api.post("/tenants/{tenant_id}/suspend", response_model=Tenant, summary="Suspend a tenant")
    async def suspend_tenant(tenant_id: str) -> Tenant:
        tenant = await store.update_tenant(tenant_id, TenantUpdate(status="suspended"))
        on_change()
        return tenant

    @api.post(
        "/tenants/{tenant_id}/keys",
        status_code=201,
        response_model=ApiKeyCreated,
        summary="Create an API key (the secret is shown once)",
    )
    async def create_key(tenant_id: str, body: KeyCreate | None = None) -> ApiKeyCreated:
        check_policy(body.compression if body else None)
        key = await store.create_key(tenant_id, body or KeyCreate())
        on_change()
        return key

    @api.get("/tenants/{tenant_id}/keys", response_model=ListOf[ApiKey], summary="List keys")
    async def list_keys(tenant_id: str) -> ListOf[ApiKey]:
        return ListOf[ApiKey](data=await store.list_keys(tenant_id))

    @api.get("/keys/{key_id}", response_model=ApiKey, summary="Get a key")
    async def get_key(key_id: str) -> ApiKey:
        return await store.get_key(key_id)

    @api.patch(
        "/keys/{key_id}", response_model=ApiKey, summary="Update a key's limits, budgets, scopes"
    )
    async def update_key(key_id: str, body: KeyUpdate) -> ApiKey:
        check_policy(body.compression)
        key = await store.update_key(key_id, body)
        on_change()
        return key

    @api.delete("/keys/{key_id}", response_model=ApiKey, summary="Revoke a key")
    async def revoke_key(key_id: str) -> ApiKey:
        key = await store.revoke_key(key_id)
        on_change()
        return key

    @api.post(
        "/keys/{key_id}/rotate",
        status_code=201,
        response_model=ApiKeyCreated,
        summary="Rotate a key: revoke it and issue a new secret with the same settings",
    )
    async def rotate_key(key_id: str) -> ApiKeyCreated:
        key = await store.rotate_key(key_id)
        on_change()
        return key

    return api
