"""The key cache against a real PostgreSQL store: a revocation is never undone by a lookup
that was under way when the cache was dropped.

The interleaving is forced with events: the lookup reads the key (still valid),
then waits; the key is revoked and the cache dropped; then the lookup finishes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import StaticKeys
from gateway.database import create_engine, migrate
from gateway.tenancy.keycache import KeyAuthenticator
from gateway.tenancy.schemas import ApiKey, KeyCreate, Tenant, TenantCreate
from gateway.tenancy.store import TenantStore
from tollway.errors import AuthenticationFailed


class PausingStore(TenantStore):
    """A real store whose next lookup, once ``pause`` is set, stops after reading."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.pause = False
        self.read = asyncio.Event()
        self.resume = asyncio.Event()

    async def lookup(self, digest: str) -> tuple[ApiKey, Tenant] | None:
        found = await super().lookup(digest)
        if self.pause:
            self.pause = False
            self.read.set()
            await self.resume.wait()
        return found


@pytest.fixture
async def store(postgres_schema: tuple[str, str]) -> AsyncIterator[PausingStore]:
    url, schema = postgres_schema
    engine = create_engine(url, connect_args={"server_settings": {"search_path": schema}})
    await migrate(engine)
    try:
        yield PausingStore(engine)
    finally:
        await engine.dispose()


Drop = Callable[[KeyAuthenticator], Awaitable[None]]


async def _by_invalidate(auth: KeyAuthenticator) -> None:
    auth.invalidate()  # a change made through this replica's admin API


async def _by_version_poll(auth: KeyAuthenticator) -> None:
    await auth.refresh()  # a change made on another replica: the version moved


@pytest.mark.parametrize("drop", [_by_invalidate, _by_version_poll])
async def test_a_lookup_from_before_a_revocation_is_not_cached(
    store: PausingStore, drop: Drop
) -> None:
    tenant = await store.create_tenant(TenantCreate(name="race"))
    key = await store.create_key(tenant.id, KeyCreate(name="k"))
    auth = KeyAuthenticator(store, StaticKeys([]), store.version)
    await auth.refresh()  # the version as it is now
    header = f"Bearer {key.key}"

    store.pause = True
    loading = asyncio.create_task(auth.authenticate(header))
    await store.read.wait()  # the lookup read the key while it was valid
    await store.revoke_key(key.id)
    await drop(auth)
    store.resume.set()
    principal = await loading  # the request already under way is answered as read
    assert principal.key_id == key.id

    with pytest.raises(AuthenticationFailed) as info:
        await auth.authenticate(header)
    assert info.value.code == "revoked_api_key"


async def test_a_lookup_without_a_drop_is_cached(store: PausingStore) -> None:
    tenant = await store.create_tenant(TenantCreate(name="cached"))
    key = await store.create_key(tenant.id, KeyCreate(name="k"))
    auth = KeyAuthenticator(store, StaticKeys([]), store.version)
    await auth.refresh()
    await auth.authenticate(f"Bearer {key.key}")
    await store.revoke_key(key.id)  # not seen until the cache is dropped
    assert (await auth.authenticate(f"Bearer {key.key}")).key_id == key.id
    await auth.refresh()
    with pytest.raises(AuthenticationFailed):
        await auth.authenticate(f"Bearer {key.key}")
