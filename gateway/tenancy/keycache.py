"""Authentication against the database, through an in-process cache.

The request path almost never touches SQL: a key's principal is cached by
digest (unknown keys too, so a flood of bad keys cannot hammer the database).
Every change to tenants or keys bumps a version row in SQL, in the same
transaction as the change; a background task polls it every
``poll_interval_s`` (500 ms) and drops the cache when it moved, so a revocation
reaches every replica within a second — and a change can never be missed, as
it could be if the version lived in a second store.

A lookup that was under way when the cache was dropped must not put back what
it read before the change: every drop bumps an epoch, and a lookup caches its
result only if the epoch it started in is still current (it still answers its
own request with what it read).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from gateway.auth import DigestMemo, Principal, StaticKeys, incorrect_key
from gateway.tenancy.schemas import ApiKey, Tenant
from gateway.tenancy.store import TenantStore
from tollway.errors import AuthenticationFailed, PermissionDenied, TollwayError

log = logging.getLogger("tollway.auth")

VersionReader = Callable[[], Awaitable[int]]


def _intersect(a: list[str] | None, b: list[str] | None) -> frozenset[str] | None:
    if a is None and b is None:
        return None
    if a is None:
        return frozenset(b or ())
    if b is None:
        return frozenset(a)
    return frozenset(a) & frozenset(b)


def principal_of(key: ApiKey, tenant: Tenant) -> Principal:
    """The principal of a stored key and its tenant."""
    return Principal(
        tenant_id=tenant.id,
        key_id=key.id,
        key_prefix=key.prefix,
        key_name=key.name,
        tenant_limits=tenant.limits,
        key_limits=key.limits,
        tenant_budgets=tenant.budgets,
        key_budgets=key.budgets,
        allowed_models=_intersect(tenant.allowed_models, key.scopes.models),
        allowed_agent_types=_intersect(tenant.allowed_agent_types, key.scopes.agent_types),
        default_agent_type=key.default_agent_type,
        compression=key.compression,
        expires_at=key.expires_at.timestamp() if key.expires_at else None,
        stripe_customer_id=tenant.stripe_customer_id,
    )


class KeyAuthenticator:
    """Static keys first, then stored keys through a version-invalidated cache."""

    def __init__(
        self,
        store: TenantStore,
        static: StaticKeys,
        version: VersionReader,
        *,
        poll_interval_s: float = 0.5,
        max_entries: int = 100_000,
    ) -> None:
        self.store = store
        self.static = static
        self._read_version = version
        self.poll_interval_s = poll_interval_s
        self.max_entries = max_entries
        self._cache: dict[str, Principal | TollwayError] = {}
        #: Bumped at every drop of the cache; a lookup started in an older epoch
        #: does not populate it.
        self._epoch = 0
        self._version: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._used: set[str] = set()
        self._digests = DigestMemo(max_entries)

    async def authenticate(self, authorization: str | None) -> Principal:
        digest = self._digests.digest(authorization)
        static = self.static.get(digest)
        if static is not None:
            return static
        entry = self._cache.get(digest)
        if entry is None:
            entry = await self._load(digest)
        if isinstance(entry, TollwayError):
            raise entry
        entry.check_not_expired()
        self._used.add(entry.key_id)
        return entry

    async def _load(self, digest: str) -> Principal | TollwayError:
        epoch = self._epoch
        found = await self.store.lookup(digest)
        entry: Principal | TollwayError
        if found is None:
            entry = incorrect_key()
        else:
            key, tenant = found
            if key.revoked_at is not None:
                entry = AuthenticationFailed(
                    "This API key has been revoked.", code="revoked_api_key"
                )
            elif tenant.status != "active":
                entry = PermissionDenied(
                    "This API key's tenant is suspended.", code="tenant_suspended"
                )
            else:
                entry = principal_of(key, tenant)
        if epoch != self._epoch:  # the cache was dropped meanwhile: what we read may be stale
            return entry
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[digest] = entry
        return entry

    def invalidate(self) -> None:
        """Drop every cached principal (after a change made in this process)."""
        self._epoch += 1
        self._cache.clear()

    async def refresh(self) -> None:
        """Poll the version once; drop the cache if it moved."""
        version = await self._read_version()
        if self._version is not None and version != self._version:
            self.invalidate()
        self._version = version

    async def _poll(self) -> None:
        last_touch = time.monotonic()
        while True:
            await asyncio.sleep(self.poll_interval_s)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 - keep serving from cache
                log.warning("cannot poll the tenancy version: %s", exc)
            if self._used and time.monotonic() - last_touch > 30:
                used, self._used = self._used, set()
                last_touch = time.monotonic()
                with contextlib.suppress(TollwayError):
                    await self.store.touch(used)

    async def start(self) -> None:
        """Read the version and start polling it."""
        with contextlib.suppress(TollwayError):
            await self.refresh()
        self._task = asyncio.create_task(self._poll(), name="tenancy-version-poll")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._used:
            with contextlib.suppress(TollwayError):
                await self.store.touch(self._used)
            self._used = set()
