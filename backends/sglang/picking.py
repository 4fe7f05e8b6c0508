"""Worker selection policies, chosen per pool by name.

A policy orders a pool's healthy workers by preference for one request; the
pool tries them in that order (the first with KV room takes the request, the
next ones are failover). Policies are deterministic functions of the request's
affinity key and the workers' load, so every gateway replica orders the same
request the same way without sharing any per-request state.

``cache_aware`` keeps an affinity key (a session id, or a hash of the
conversation's leading messages) on the worker that holds its KV-cache prefix:
rendezvous (highest-random-weight) hashing picks the preferred worker, and
bounded loads move a request past workers whose load is over
``overflow_factor`` × the mean (plus a small absolute slack), so a hot session
cannot melt one worker. When a worker dies only its keys move, and they come
back when it returns. The rendezvous winner is the key's *home* (``home``):
KV admission may let a request wait briefly for it rather than move.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from collections.abc import Sequence
from typing import Protocol

from backends.sglang.worker import Worker

#: Requests a worker may run over the bounded-load threshold before overflow.
#: (Measured on agent sessions: a tight bound moved sessions off their cache
#: at low load and bought no latency; docs/benchmarks.md, routing.)
ABSOLUTE_SLACK = 4


class Picker(Protocol):
    """Orders healthy workers by preference for one request."""

    def order(self, workers: Sequence[Worker], affinity: str | None) -> list[Worker]:
        """``workers`` (healthy, non-empty) in the order to try them."""
        ...

    def home(self, workers: Sequence[Worker], affinity: str | None) -> Worker | None:
        """The worker the key's prefix most likely lives on (None: no affinity)."""
        ...


class _NoAffinity:
    """Policies that keep no key on a worker have no home worker."""

    def home(self, workers: Sequence[Worker], affinity: str | None) -> Worker | None:
        return None


class RoundRobin(_NoAffinity):
    """Each request starts at the next worker."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def order(self, workers: Sequence[Worker], affinity: str | None) -> list[Worker]:
        start = next(self._turn) % len(workers)
        return [*workers[start:], *workers[:start]]


class LeastLoad(_NoAffinity):
    """The least-loaded worker first (ties broken round-robin)."""

    def __init__(self) -> None:
        self._rr = RoundRobin()

    def order(self, workers: Sequence[Worker], affinity: str | None) -> list[Worker]:
        return sorted(self._rr.order(workers, affinity), key=lambda w: w.load)


class PowerOfTwo(_NoAffinity):
    """The less loaded of two random workers first, then the rest by load."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def order(self, workers: Sequence[Worker], affinity: str | None) -> list[Worker]:
        if len(workers) <= 2:
            return sorted(workers, key=lambda w: w.load)
        a, b = self._random.sample(list(workers), 2)
        first = a if a.load <= b.load else b
        rest = sorted((w for w in workers if w is not first), key=lambda w: w.load)
        return [first, *rest]


def rendezvous_score(key: str, worker_url: str) -> int:
    """Stable 64-bit weight of ``worker_url`` for ``key`` (same in every process)."""
    digest = hashlib.blake2b(
        key.encode("utf-8") + b"\x00" + worker_url.encode("utf-8"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big")


class CacheAware:
    """Affinity by rendezvous hashing with bounded loads; least-load without a key."""

    def __init__(self, overflow_factor: float = 2.0) -> None:
        self.overflow_factor = overflow_factor
        self._fallback = LeastLoad()

    def order(self, workers: Sequence[Worker], affinity: str | None) -> list[Worker]:
        if affinity is None:
            return self._fallback.order(workers, affinity)
        ranked = sorted(workers, key=lambda w: rendezvous_score(affinity, w.url), reverse=True)
        total = sum(w.load for w in workers)
        bound = max(
            math.ceil((total + 1) / len(workers) * self.overflow_factor),
            (total + 1) / len(workers) + ABSOLUTE_SLACK,
        )
        within = [w for w in ranked if w.load + 1 <= bound]
        over = [w for w in ranked if w.load + 1 > bound]
        return within + over

    def home(self, workers: Sequence[Worker], affinity: str | None) -> Worker | None:
        """The rendezvous winner for ``affinity``: where its turns go unless overloaded."""
        if affinity is None or not workers:
            return None
        return max(workers, key=lambda w: rendezvous_score(affinity, w.url))


def make_picker(name: str, overflow_factor: float = 2.0) -> Picker:
    """The policy registered under ``name``."""
    if name == "round_robin":
        return RoundRobin()
    if name == "least_load":
        return LeastLoad()
    if name == "power_of_two":
        return PowerOfTwo()
    if name == "cache_aware":
        return CacheAware(overflow_factor)
    raise ValueError(f"unknown worker selection policy {name!r}")
