"""Retrying an upstream call: exponential backoff with full jitter, within a deadline.

Only failures that another attempt (usually on another worker) may fix are
retried, and only while nothing has reached the client; the caller guarantees
the second part by wrapping only the phase before the first byte. Which
failures qualify is decided by the error's class, never by its text:

* retryable: :class:`~tollway.errors.UpstreamError` subclasses whose
  ``retryable`` flag is set: connect errors and "no reachable worker"
  (``UpstreamUnavailable``, and the upstream's 503), timeouts before the first
  byte (``UpstreamTimeout``, the upstream's 504 and 408), a broken connection
  or the upstream's 502 (``UpstreamError``, ``UpstreamStreamBroken``), an
  answer that is not HTTP or whose head is over the limits
  (``UpstreamBadResponse``), the upstream's 401/403/404/405 (the worker is set
  up differently from the gateway), and its 429 (``UpstreamRateLimited``);
* never retried: the 4xx the request caused (``UpstreamRejected``), the
  upstream's 500, 501, 505 and other 5xx (``UpstreamServerError``: the request
  may be what breaks it), a body over the size limit
  (``UpstreamResponseTooLarge``), every error the gateway raises itself (400s,
  auth, its own rate limits and budgets, draining), and anything that is not a
  :class:`~tollway.errors.TollwayError`.

Typical use (the attempt number lets the caller pick a different worker)::

    tried: set[str] = set()
    response = await retry_call(
        lambda n: send_once(request, avoid=tried),   # adds the worker it used to ``tried``
        policy,
        deadline=time.monotonic() + timeouts.total_s,
        on_retry=lambda n, exc, delay: retries.labels(pool_name, exc.code or "").inc(),
    )
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from itertools import islice
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tollway.backoff import Backoff, retry
from tollway.errors import TollwayError, UpstreamError

T = TypeVar("T")

#: Called before each retry with the number of the attempt that failed, its error and
#: the delay about to be slept.
RetryHook = Callable[[int, TollwayError, float], None]


class RetryPolicy(BaseModel):
    """How often and how patiently a failed upstream call is tried again.

    The delay before attempt ``n + 1`` is drawn from ``[0, cap]`` (``jitter:
    full``) or is ``cap`` itself (``jitter: none``), where ``cap = min(max_delay_s,
    base_delay_s * 2 ** (n - 1))``. Full jitter spreads the retries of many
    clients that failed together, so a recovering worker is not hit in lockstep.

    Example (a pool's ``retry:`` section)::

        pools:
          h100-small:
            retry:
              max_attempts: 3       # the first try included; 1 turns retries off
              base_delay_s: 0.1
              max_delay_s: 2.0
              jitter: full
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts in all, the first one included."
    )
    base_delay_s: float = Field(
        default=0.1, ge=0, le=60, description="Backoff cap before the second attempt."
    )
    max_delay_s: float = Field(
        default=2.0, ge=0, le=300, description="Largest backoff cap, whatever the attempt."
    )
    jitter: Literal["full", "none"] = Field(
        default="full", description="full: uniform in [0, cap]; none: exactly the cap."
    )

    @model_validator(mode="after")
    def _check_delays(self) -> RetryPolicy:
        if self.max_delay_s < self.base_delay_s:
            raise ValueError("max_delay_s must be at least base_delay_s")
        return self

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The ``max_attempts - 1`` delays before the second, third, ... attempt.

        ``rand`` returns a float in ``[0, 1)``; inject one for deterministic tests.
        """
        return islice(self.backoff().delays(rand), self.max_attempts - 1)

    def backoff(self) -> Backoff:
        """This policy's delay schedule (:class:`tollway.backoff.Backoff`)."""
        return Backoff(self.base_delay_s, self.max_delay_s, self.jitter)


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed where ``exc`` failed.

    True only for upstream failures whose class is flagged ``retryable``; the
    gateway's own refusals (validation, auth, its rate limits, draining) and the
    upstream's own 4xx are final.
    """
    return isinstance(exc, UpstreamError) and exc.retryable


async def retry_call(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    *,
    deadline: float | None = None,
    on_retry: RetryHook | None = None,
    retryable: Callable[[BaseException], bool] = is_retryable,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Await ``attempt(1)``, then ``attempt(2)``, ... until one returns; return its value.

    A :class:`~tollway.errors.TollwayError` that ``retryable`` accepts leads to a
    backoff sleep and the next attempt; anything else propagates at once, as does
    the last attempt's error. ``deadline`` is a ``clock()`` instant: a retry whose
    backoff would end at or after it is not made (the last error is raised
    instead), so this function never sleeps past the deadline. Cancellation is
    never caught.
    """

    def worth_another(exc: Exception) -> bool:
        return isinstance(exc, TollwayError) and retryable(exc)

    def hook(number: int, exc: Exception, delay: float) -> None:
        if on_retry is not None and isinstance(exc, TollwayError):
            on_retry(number, exc, delay)

    return await retry(
        attempt,
        policy.backoff(),
        retryable=worth_another,
        attempts=policy.max_attempts,
        deadline=deadline,
        on_retry=hook,
        sleep=sleep,
        clock=clock,
        rand=rand,
    )
