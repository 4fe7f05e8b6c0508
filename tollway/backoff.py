"""Exponential backoff with a cap, jitter and a deadline: the one helper every retry loop uses.

A :class:`Backoff` says how long to wait before retry ``n`` (``n = 0`` is the
first retry): the *cap* ``min(max_s, initial_s * 2 ** n)``, jittered one of
three ways:

* ``none``: exactly the cap (polling, where spreading clients out buys nothing);
* ``full``: uniform in ``[0, cap)`` (AWS's "full jitter": many clients that
  failed together do not come back in lockstep);
* ``equal``: uniform in ``[cap / 2, cap)`` (never much shorter than the cap, so
  a struggling service still gets its breathing room).

:func:`retry` runs an async attempt until it succeeds, backing off between
attempts, within an optional attempt count and deadline. Both take the clock,
the sleep and the random source as arguments, so tests drive them with a fake
clock and never sleep for real.

Who uses it: :mod:`backends.retry` (upstream calls), :mod:`billing.writer`
(the ledger writer's rounds), :mod:`billing.stripe_export` (meter event
delivery) and :mod:`gateway.idempotency.coordinator` (waiting on a key in
progress). Loops that have their own stopping rule (a stop event, a per-batch
attempt count) ask :meth:`Backoff.delay` for the delay and sleep themselves.

Example::

    backoff = Backoff(initial_s=0.1, max_s=2.0, jitter="full")
    value = await retry(
        lambda n: fetch(n),
        backoff,
        attempts=3,
        retryable=lambda exc: isinstance(exc, TimeoutError),
        deadline=time.monotonic() + 10,
    )
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T")

Jitter = Literal["none", "full", "equal"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """A delay schedule: doubling from ``initial_s``, capped at ``max_s``, then jittered."""

    initial_s: float
    max_s: float
    jitter: Jitter = "none"

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < 0:
            raise ValueError("backoff delays cannot be negative")

    def cap(self, retry: int) -> float:
        """The un-jittered delay before retry ``retry`` (0 is the first retry)."""
        return min(self.max_s, self.initial_s * 2.0**retry)

    def delay(self, retry: int, rand: Callable[[], float] = random.random) -> float:
        """The delay before retry ``retry``; ``rand`` returns a float in ``[0, 1)``."""
        cap = self.cap(retry)
        if self.jitter == "full":
            return cap * rand()
        if self.jitter == "equal":
            return cap / 2 + rand() * cap / 2
        return cap

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The delays before the first, second, ... retry, without end."""
        retry = 0
        while True:
            yield self.delay(retry, rand)
            retry += 1


async def retry(
    attempt: Callable[[int], Awaitable[T]],
    backoff: Backoff,
    *,
    retryable: Callable[[Exception], bool],
    attempts: int | None = None,
    deadline: float | None = None,
    on_retry: Callable[[int, Exception, float], None] | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await ``attempt(1)``, ``attempt(2)``, ... until one returns; return its value.

    An exception that ``retryable`` accepts leads to a backoff sleep and the next
    attempt, unless ``attempts`` (the first one included; None: no limit) are
    spent or the backoff would end at or after ``deadline`` (a ``clock()``
    instant): then, as for any exception ``retryable`` refuses, it propagates.
    So this never sleeps past the deadline. ``on_retry(number, exc, delay)`` is
    called before each sleep. Cancellation and other ``BaseException`` are never
    caught.
    """
    number = 1
    while True:
        try:
            return await attempt(number)
        except Exception as exc:
            if not retryable(exc):
                raise
            if attempts is not None and number >= attempts:
                raise
            delay = backoff.delay(number - 1, rand)
            if deadline is not None and clock() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(number, exc, delay)
            if delay > 0:
                await sleep(delay)
            number += 1
