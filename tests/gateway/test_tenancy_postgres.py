"""The tenancy store and its migrations on a real PostgreSQL."""

from __future__ import annotations

from gateway.auth import hash_key
from gateway.database import create_engine, migrate
from gateway.tenancy.schemas import KeyCreate, Limits, TenantCreate, TenantUpdate
from gateway.tenancy.store import TenantStore


async def test_store_on_postgres(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    engine = create_engine(url, connect_args={"server_settings": {"search_path": schema}})
    try:
        await migrate(engine)
        await migrate(engine)  # idempotent
        store = TenantStore(engine)
        v0 = await store.version()
        tenant = await store.create_tenant(TenantCreate(name="pg", limits=Limits(rpm=5)))
        key = await store.create_key(tenant.id, KeyCreate(name="k"))
        assert await store.version() == v0 + 2
        found = await store.lookup(hash_key(key.key))
        assert found is not None and found[0].id == key.id and found[1].limits.rpm == 5
        updated = await store.update_tenant(tenant.id, TenantUpdate(limits=Limits(tpm=100)))
        assert updated.limits.rpm is None and updated.limits.tpm == 100
        revoked = await store.revoke_key(key.id)
        again = await store.revoke_key(key.id)
        assert revoked.revoked_at is not None and again.revoked_at == revoked.revoked_at
        await store.touch([key.id])
        assert (await store.get_key(key.id)).last_used_at is not None
    finally:
        await engine.dispose()
