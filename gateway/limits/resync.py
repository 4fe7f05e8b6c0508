"""Budget counters restored from the usage ledger after Redis, or the process, lost them.

The spent counters of the budgets live only in Redis (or, without Redis, in this
process). If Redis loses its data (a restart without persistence, a flush, a
failover to an empty replica) or the single embedded process restarts, every
budget would start again from zero for the current day and month. The usage
ledger in SQL is the durable truth, so :class:`BudgetResync` watches for the loss
and raises the counters back to the ledger's spend
(:meth:`gateway.limits.Admission.raise_spend_floors`).

Detection is a sentinel: with Redis, the key ``<key_prefix>budget-synced`` (no
expiry) is set after each restore, so its absence means Redis lost its data (or
this is the deployment's first start); without Redis, a flag of this process.
Every ``limits.budget_resync_check_s`` seconds one ``EXISTS``; when the sentinel is
missing: one ledger query, one script call per tenant, then ``SET`` the sentinel.
Failures are logged and retried on the next round; nothing here is on the request
path.

Not restored: spend settled after the loss whose usage records had not reached the
ledger yet when the round ran, and requests admitted between the loss and the round.
Not detected: a Redis Cluster losing one shard that does not hold the sentinel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.spend import SpendWindows, spend_by_key
from gateway.limits.admission import Admission
from gateway.limits.clock import Clock, wall_clock_ms
from gateway.limits.config import LimitsConfig
from gateway.limits.plan import DAY_MS, period_ids
from gateway.limits.redis_admission import RedisBoundary
from tollway.errors import TollwayError
from tollway.resp import RespClient

log = logging.getLogger(__name__)

#: The sentinel's key, after ``limits.key_prefix``.
SENTINEL_KEY = "budget-synced"

#: Called with the outcome of each round that did something: ``"synced"`` or ``"failed"``.
RoundHook = Callable[[str], None]


def spend_windows(now_ms: int) -> SpendWindows:
    """The ledger's windows of the UTC day and month holding ``now_ms``, with the same
    ends as the budget periods of admission (:func:`gateway.limits.plan.period_ids`)."""
    _, day_end_ms, _, month_end_ms = period_ids(now_ms)
    moment = datetime.fromtimestamp(now_ms // 1000, tz=UTC)
    month_start_ms = int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp()) * 1000
    return SpendWindows(
        day_start_us=(day_end_ms - DAY_MS) * 1000,
        day_end_us=day_end_ms * 1000,
        month_start_us=month_start_ms * 1000,
        month_end_us=month_end_ms * 1000,
    )


class Sentinel(Protocol):
    """Whether the budget counters are known to be whole."""

    async def present(self) -> bool:
        """True when the counters were restored since they were last lost."""
        ...

    async def mark(self, now_ms: int) -> None:
        """Record that the counters were just restored."""
        ...


class RedisSentinel:
    """``<prefix>budget-synced`` in Redis, without expiry: gone when Redis lost its data.

    Redis failures leave as :class:`tollway.errors.ServiceUnavailable`.
    """

    def __init__(self, redis: RespClient, prefix: str) -> None:
        self._redis = redis
        self.key = f"{prefix}{SENTINEL_KEY}"

    async def present(self) -> bool:
        with RedisBoundary():
            return bool(await self._redis.execute("EXISTS", self.key))

    async def mark(self, now_ms: int) -> None:
        with RedisBoundary():
            await self._redis.execute("SET", self.key, now_ms)


class ProcessSentinel:
    """Without Redis the counters live in this process: restored once per process."""

    def __init__(self) -> None:
        self._marked = False

    async def present(self) -> bool:
        return self._marked

    async def mark(self, now_ms: int) -> None:
        self._marked = True


class BudgetResync:
    """Restores the budget counters from the ledger whenever the sentinel is missing.

    :meth:`start` runs a first round before the gateway serves, then one every
    ``interval_s`` in the background until :meth:`stop`; ``interval_s`` 0 does
    nothing at all. ``on_round`` (a metric) hears each round that restored the
    counters or failed.
    """

    def __init__(
        self,
        admission: Admission,
        ledger: AsyncEngine,
        sentinel: Sentinel,
        *,
        interval_s: float,
        clock: Clock = wall_clock_ms,
        on_round: RoundHook | None = None,
    ) -> None:
        self._admission = admission
        self._ledger = ledger
        self._sentinel = sentinel
        self._interval_s = interval_s
        self._clock = clock
        self._on_round = on_round
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def build(
        cls,
        config: LimitsConfig,
        admission: Admission,
        ledger: AsyncEngine,
        redis: RespClient | None,
        *,
        on_round: RoundHook | None = None,
    ) -> BudgetResync:
        """The resync of this deployment: Redis's sentinel with Redis, else this process's."""
        sentinel: Sentinel = (
            ProcessSentinel() if redis is None else RedisSentinel(redis, config.key_prefix)
        )
        return cls(
            admission,
            ledger,
            sentinel,
            interval_s=config.budget_resync_check_s,
            on_round=on_round,
        )

    async def run_once(self) -> bool:
        """One round: True when the sentinel was missing and the counters were restored.

        Raises :class:`tollway.errors.ServiceUnavailable` when Redis or the database fails.
        """
        if await self._sentinel.present():
            return False
        now = self._clock()
        spend = await spend_by_key(self._ledger, spend_windows(now))
        raised = await self._admission.raise_spend_floors(spend, now)
        await self._sentinel.mark(now)
        log.info(
            "budget counters restored from the ledger: %d keys with spend this month, "
            "%d counters raised",
            len(spend),
            raised,
        )
        return True

    async def start(self) -> None:
        """Run the first round now, then keep checking in the background."""
        if self._interval_s <= 0 or self._task is not None:
            return
        await self._round()
        self._task = asyncio.create_task(self._loop(), name="budget-resync")

    async def stop(self) -> None:
        """Stop checking (a round in progress is cancelled)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._round()

    async def _round(self) -> None:
        try:
            synced = await self.run_once()
        except TollwayError as exc:
            log.warning(
                "budget resync failed: %s (%r); retrying in %.1fs",
                exc.message,
                exc.__cause__,
                self._interval_s,
            )
            self._report("failed")
        except Exception:  # a background task: log it and try again, never die
            log.warning("budget resync failed; retrying in %.1fs", self._interval_s, exc_info=True)
            self._report("failed")
        else:
            if synced:
                self._report("synced")

    def _report(self, outcome: str) -> None:
        if self._on_round is not None:
            self._on_round(outcome)
