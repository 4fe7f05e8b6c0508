"""The storage interface of idempotency records, and what a claim can find.

A key holds nothing, a *running* marker (fingerprint, owner token; expires
after its lease unless renewed), or a *done* record (fingerprint, encoded
response; expires after the TTL). Every operation that changes a key is
atomic and, except :meth:`IdempotencyStore.claim`, applies only while the key
still holds the caller's own running marker, so a replica whose lease expired
can never overwrite the work of the replica that claimed the key after it.

Implementations translate their own failures into
:class:`tollway.errors.ServiceUnavailable`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Claimed:
    """The key was free; the caller now holds it as running."""


@dataclass(frozen=True, slots=True)
class Running:
    """Another request holds the key and has not finished."""

    fingerprint: str
    #: Seconds until its lease expires unless renewed.
    remaining_s: float


@dataclass(frozen=True, slots=True)
class Done:
    """A request with this key finished; ``record`` is its encoded response."""

    fingerprint: str
    record: bytes


ClaimResult = Claimed | Running | Done


class IdempotencyStore(Protocol):
    """Where claims and records live: Redis across replicas, or this process's memory.

    ``key`` is a full storage key; ``fingerprint`` and ``token`` are hex strings.
    """

    async def claim(self, key: str, fingerprint: str, token: str, lease_s: float) -> ClaimResult:
        """Mark ``key`` running for ``lease_s`` if it is free; else say what it holds."""
        ...

    async def renew(self, key: str, fingerprint: str, token: str, lease_s: float) -> bool:
        """Extend the caller's running marker to ``lease_s`` from now; False if lost."""
        ...

    async def complete(
        self, key: str, fingerprint: str, token: str, record: bytes, ttl_s: float
    ) -> bool:
        """Replace the caller's running marker by ``record`` for ``ttl_s``; False if lost."""
        ...

    async def release(self, key: str, fingerprint: str, token: str) -> bool:
        """Delete the caller's running marker so a repeat can run; False if lost."""
        ...

    async def wait_change(self, key: str, timeout_s: float) -> None:
        """Return when ``key`` may have changed, at the latest after ``timeout_s``."""
        ...
