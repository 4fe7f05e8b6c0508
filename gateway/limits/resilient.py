"""What admission does while Redis is unreachable: fail open or fail closed.

``fail_open``: admit with this replica's own in-process limits (a
:class:`MemoryAdmission`), log a warning when the outage starts, and count
every Redis error and every fallback admission (``on_redis_error`` lets the
gateway feed a Prometheus counter). ``fail_closed``: answer 503. Either way,
after an error Redis is left alone for ``outage_retry_s`` so that an outage
costs no request more than one timeout.

Settlement is best effort in both policies: it runs after the response, and a
slot or reservation it could not release is dropped by the script after
``max_request_duration_s`` anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from gateway.limits.config import LimitsConfig
from gateway.limits.floors import SpendFloor
from gateway.limits.memory import MemoryAdmission
from gateway.limits.redis_admission import RedisAdmission
from gateway.limits.specs import AdmissionRequest, Ticket
from tollway.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

#: Called with the operation (``"admit"`` or ``"settle"``) and the error, once per Redis error.
ErrorHook = Callable[[str, ServiceUnavailable], None]


class ResilientAdmission:
    """A :class:`RedisAdmission` with the configured outage policy around it.

    ``redis_errors`` counts failed Redis calls, ``fallback_admissions`` the
    requests admitted by the local fallback, ``dropped_settlements`` the
    settlements that could not reach Redis.
    """

    def __init__(
        self,
        primary: RedisAdmission,
        config: LimitsConfig | None = None,
        *,
        fallback: MemoryAdmission | None = None,
        on_redis_error: ErrorHook | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config or LimitsConfig()
        self._primary = primary
        self._fallback = fallback or MemoryAdmission(self._config)
        self._on_error = on_redis_error
        self._monotonic = monotonic
        self._down_until = 0.0
        self.redis_errors = 0
        self.fallback_admissions = 0
        self.dropped_settlements = 0

    @property
    def redis_down(self) -> bool:
        """True while Redis is being left alone after an error."""
        return self._monotonic() < self._down_until

    async def admit(self, request: AdmissionRequest) -> Ticket:
        """Admit through Redis; on an outage fall back locally or raise 503, per policy."""
        if request.is_unlimited:
            return await self._primary.admit(request)
        if not self.redis_down:
            try:
                return await self._primary.admit(request)
            except ServiceUnavailable as exc:
                self._record("admit", exc)
                return await self._degraded(request, exc)
        return await self._degraded(request, None)

    async def settle(self, ticket: Ticket, actual_tokens: int, actual_cost_micro_usd: int) -> None:
        """Settle with the engine that admitted the ticket; never raises for an outage."""
        if ticket.engine == "memory":
            await self._fallback.settle(ticket, actual_tokens, actual_cost_micro_usd)
            return
        if ticket.engine == "redis" and self.redis_down:
            ticket.settled = True
            self.dropped_settlements += 1
            return
        try:
            await self._primary.settle(ticket, actual_tokens, actual_cost_micro_usd)
        except ServiceUnavailable as exc:
            self._record("settle", exc)
            self.dropped_settlements += 1

    async def raise_spend_floors(self, floors: Sequence[SpendFloor], now_ms: int) -> int:
        """Raise the spend floors in the local fallback, then in Redis (whose count is
        returned); ServiceUnavailable when Redis fails, whatever the outage policy."""
        await self._fallback.raise_spend_floors(floors, now_ms)
        return await self._primary.raise_spend_floors(floors, now_ms)

    async def _degraded(
        self, request: AdmissionRequest, cause: ServiceUnavailable | None
    ) -> Ticket:
        if self._config.on_redis_outage == "fail_closed":
            raise ServiceUnavailable(
                "Rate limits cannot be checked right now; please retry shortly.",
                code="rate_limit_store_unavailable",
            ) from cause
        self.fallback_admissions += 1
        return await self._fallback.admit(request)

    def _record(self, operation: str, exc: ServiceUnavailable) -> None:
        self.redis_errors += 1
        if not self.redis_down:
            logger.warning(
                "Redis is unreachable for limits (%s: %r); %s for %.1fs",
                operation,
                exc.__cause__ or exc,
                "admitting with local limits only"
                if self._config.on_redis_outage == "fail_open"
                else "refusing requests with 503",
                self._config.outage_retry_s,
            )
        self._down_until = self._monotonic() + self._config.outage_retry_s
        if self._on_error is not None:
            self._on_error(operation, exc)
