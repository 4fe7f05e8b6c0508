"""Two ways the CLI reaches tenancy: the database directly, or a gateway's admin API."""

from __future__ import annotations

from typing import Any, Protocol

import httpx
from pydantic import BaseModel

from gateway.database import create_engine, migrate
from gateway.tenancy.schemas import (
    ApiKey,
    ApiKeyCreated,
    KeyCreate,
    Tenant,
    TenantCreate,
    TenantUpdate,
)
from gateway.tenancy.store import TenantStore
from tollway.errors import (
    AuthenticationFailed,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    ServiceUnavailable,
    TollwayError,
)


class TenancyClient(Protocol):
    """The tenancy operations the CLI needs."""

    async def create_tenant(self, body: TenantCreate) -> Tenant: ...
    async def list_tenants(self) -> list[Tenant]: ...
    async def get_tenant(self, tenant_id: str) -> Tenant: ...
    async def update_tenant(self, tenant_id: str, body: TenantUpdate) -> Tenant: ...
    async def create_key(self, tenant_id: str, body: KeyCreate) -> ApiKeyCreated: ...
    async def list_keys(self, tenant_id: str) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: str) -> ApiKey: ...
    async def rotate_key(self, key_id: str) -> ApiKeyCreated: ...
    async def close(self) -> None: ...


class DatabaseClient(TenantStore):
    """Straight to the database (migrating it first)."""

    @classmethod
    async def open(cls, url: str) -> DatabaseClient:
        engine = create_engine(url)
        await migrate(engine)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()


_BY_STATUS: dict[int, type[TollwayError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: PermissionDenied,
    404: NotFound,
}


class AdminApiClient:
    """Through a running gateway's ``/admin/v1`` API."""

    def __init__(self, base_url: str, admin_token: str, transport: Any = None) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/admin/v1",
            headers={"authorization": f"Bearer {admin_token}"},
            timeout=10,
            transport=transport,
        )

    async def _call(self, method: str, path: str, body: BaseModel | None = None) -> Any:
        try:
            resp = await self._http.request(
                method,
                path,
                json=body.model_dump(mode="json", exclude_unset=True) if body else None,
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(f"cannot reach the admin API: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                message, param = str(err["message"]), err.get("param")
            except (ValueError, KeyError, TypeError):
                message, param = resp.text[:300], None
            raise _BY_STATUS.get(resp.status_code, ServiceUnavailable)(message, param=param)
        return resp.json()

    async def create_tenant(self, body: TenantCreate) -> Tenant:
        return Tenant.model_validate(await self._call("POST", "/tenants", body))

    async def list_tenants(self) -> list[Tenant]:
        return [Tenant.model_validate(t) for t in (await self._call("GET", "/tenants"))["data"]]

    async def get_tenant(self, tenant_id: str) -> Tenant:
        return Tenant.model_validate(await self._call("GET", f"/tenants/{tenant_id}"))

    async def update_tenant(self, tenant_id: str, body: TenantUpdate) -> Tenant:
        return Tenant.model_validate(await self._call("PATCH", f"/tenants/{tenant_id}", body))

    async def create_key(self, tenant_id: str, body: KeyCreate) -> ApiKeyCreated:
        data = await self._call("POST", f"/tenants/{tenant_id}/keys", body)
        return ApiKeyCreated.model_validate(data)

    async def list_keys(self, tenant_id: str) -> list[ApiKey]:
        data = await self._call("GET", f"/tenants/{tenant_id}/keys")
        return [ApiKey.model_validate(k) for k in data["data"]]

    async def revoke_key(self, key_id: str) -> ApiKey:
        return ApiKey.model_validate(await self._call("DELETE", f"/keys/{key_id}"))

    async def rotate_key(self, key_id: str) -> ApiKeyCreated:
        return ApiKeyCreated.model_validate(await self._call("POST", f"/keys/{key_id}/rotate"))

    async def close(self) -> None:
        await self._http.aclose()
