"""The admission interface and how the gateway builds one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.limits.config import LimitsConfig
from gateway.limits.floors import SpendFloor
from gateway.limits.memory import MemoryAdmission
from gateway.limits.redis_admission import RedisAdmission
from gateway.limits.resilient import ErrorHook, ResilientAdmission
from gateway.limits.specs import AdmissionRequest, Ticket
from tollway.resp import RespClient


class Admission(Protocol):
    """Admits requests against rate limits and budgets, and settles them afterwards."""

    async def admit(self, request: AdmissionRequest) -> Ticket:
        """Reserve what ``request`` may use, or raise.

        Raises :class:`tollway.errors.RateLimited` (429 with Retry-After and the
        ``x-ratelimit-*`` headers), :class:`tollway.errors.QuotaExceeded` (429
        ``insufficient_quota``) or :class:`tollway.errors.ServiceUnavailable`
        (503, Redis down under ``fail_closed``).
        """
        ...

    async def settle(self, ticket: Ticket, actual_tokens: int, actual_cost_micro_usd: int) -> None:
        """Release the concurrency slot, correct the token estimate to ``actual_tokens``
        and turn the budget reservation into ``actual_cost_micro_usd`` of spend.
        Call once per ticket, after the response (a second call does nothing)."""
        ...

    async def raise_spend_floors(self, floors: Sequence[SpendFloor], now_ms: int) -> int:
        """Raise the budget counters of spend in the UTC day and month holding ``now_ms``
        to at least ``floors`` (each key's, and per tenant the sum of its keys'); never
        lower one, nor touch a reservation (see :mod:`gateway.limits.floors`). Returns
        how many counters were raised; raises ServiceUnavailable when Redis fails."""
        ...


def build_admission(
    config: LimitsConfig,
    redis: RespClient | None,
    *,
    on_redis_error: ErrorHook | None = None,
) -> Admission:
    """The engine for this deployment: in-process without Redis, else Redis with the
    configured outage policy. The caller owns (and closes) ``redis``, made by
    :func:`gateway.sharedstate.connect_redis` with ``config.redis_timeout_s``."""
    if redis is None:
        return MemoryAdmission(config)
    engine = RedisAdmission(redis, config)
    return ResilientAdmission(engine, config, on_redis_error=on_redis_error)
