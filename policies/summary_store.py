"""Where rolling summaries are kept between turns: the ``SummaryStore`` interface.

A summary is stored under a key derived from a digest of exactly the messages
it summarizes, so a later turn that starts with the same messages finds it
and sends the same prompt prefix again. Keys look like
``summary:{<scope>}:<policy>:<sha256>``; the ``{...}`` part is a Redis Cluster
hash tag, so all of a session's summaries live in one slot.

Policies stay pure: the store is injected. Here are the interface and
:class:`InMemorySummaryStore` (one replica, tests, the embedded default); the one
shared by every replica, in Redis, is :class:`gateway.redis_summaries.RedisSummaryStore`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class SummaryStore(Protocol):
    """Async key-value storage for summaries, with a time to live."""

    async def get(self, key: str) -> str | None:
        """The summary stored under ``key``, or None (missing or expired)."""
        ...

    async def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        """Store ``value`` under ``key`` for ``ttl_seconds``."""
        ...


class InMemorySummaryStore:
    """A bounded in-process store (least recently used entries go first)."""

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._max_entries = max_entries
        self._clock = clock

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires <= self._clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: str, *, ttl_seconds: int) -> None:
        self._entries[key] = (self._clock() + ttl_seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
