"""Admission shared by every replica: one Lua script call per admission, one per settlement.

The calls go through the replica's :class:`tollway.resp.RespClient` (one
multiplexed connection, hiredis packing and parsing; the settlements of concurrent
requests leave in the same write as other commands).

Every limit and budget of a request is checked and applied by one ``EVALSHA``
(:data:`gateway.limits.scripts.ADMIT`), atomically: Redis runs one script at a
time, so N replicas see one sequence of admissions, exactly as one process
would. A request refused by one limit consumes nothing from the others, since
the script checks everything before it writes anything.

Redis failures leave this module only as :class:`tollway.errors.ServiceUnavailable`,
translated by :class:`RedisBoundary`; :mod:`gateway.limits.resilient` decides
whether that fails open or closed.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from types import TracebackType
from typing import cast

from gateway.limits import scripts
from gateway.limits.clock import Clock, wall_clock_ms
from gateway.limits.config import LimitsConfig
from gateway.limits.floors import SpendFloor, plan_floors
from gateway.limits.plan import Planner
from gateway.limits.specs import WINDOW_MS, AdmissionRequest, Ticket
from gateway.limits.verdict import Verdict, conclude
from tollway.errors import ServiceUnavailable
from tollway.resp import RespClient, RespError
from tollway.resp_script import Script

_ADMIT = Script(scripts.ADMIT)
_SETTLE = Script(scripts.SETTLE)
_RAISE_FLOORS = Script(scripts.RAISE_FLOORS)


class RedisBoundary:
    """Translates every Redis failure into :class:`ServiceUnavailable` (503),
    ``raise ... from`` the original; stateless, so one instance serves every call.

    Timeouts come from the client (:class:`tollway.resp.RespTimeout`, an
    :class:`OSError`); error replies are :class:`tollway.resp.RespError`.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, RespError | OSError | TimeoutError):
            raise ServiceUnavailable(
                "The rate-limit store is unavailable.", code="rate_limit_store_unavailable"
            ) from exc


_BOUNDARY = RedisBoundary()


class RedisAdmission:
    """Rate limits, concurrency and budgets held in Redis, exact across replicas.

    ``clock`` (ms since the epoch) is sent with every call as the script's
    ``now``; without one, ``config.clock`` picks Redis's own clock (``TIME``)
    or this replica's. Budget periods (UTC day and month) always follow this
    replica's clock. Calls time out after the client's ``timeout_s``.
    """

    def __init__(
        self,
        redis: RespClient,
        config: LimitsConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._config = config or LimitsConfig()
        self._clock = clock or wall_clock_ms
        self._send_now = clock is not None or self._config.clock == "local"
        self._planner = Planner(self._config.key_prefix)
        self._redis = redis
        self._fixed = f"{WINDOW_MS},{self._config.max_request_duration_ms}"
        self._replica = secrets.token_hex(4)
        self._sequence = itertools.count()

    async def admit(self, request: AdmissionRequest) -> Ticket:
        """Admit ``request`` or raise RateLimited / QuotaExceeded (ServiceUnavailable on outage).

        One ``EVALSHA``; no Redis call at all when no limit and no budget applies.
        """
        member = f"{request.request_id}#{self._replica}{next(self._sequence)}"
        now = self._clock()
        plan = self._planner.plan(request, now)
        if plan.is_empty:
            return Ticket(request.request_id, plan, member, "none")
        numbers = (
            f"{self._fixed},{plan.tokens},{plan.reserve},"
            f"{plan.day_end_ms - now},{plan.month_end_ms - now}"
        )
        args = (
            now if self._send_now else "",
            member,
            plan.day,
            plan.month,
            numbers,
            plan.layout.spec,
        )
        with _BOUNDARY:
            raw = await _ADMIT(self._redis, plan.layout.keys, args, urgent=True)
        verdict = Verdict.from_script(raw)
        return conclude(plan, verdict, request_id=request.request_id, member=member, engine="redis")

    async def settle(self, ticket: Ticket, actual_tokens: int, actual_cost_micro_usd: int) -> None:
        """Release the slot, charge ``actual - estimated`` tokens (refund when negative)
        and move the reservation to spend: one ``EVALSHA``, none when there is nothing to do."""
        if ticket.settled:
            return
        ticket.settled = True
        plan = ticket.plan
        layout = plan.layout
        delta = actual_tokens - plan.tokens
        needs_state = any(
            s.limits.max_concurrent is not None or (s.limits.tpm is not None and delta != 0)
            for s in layout.scopes
        )
        if not (needs_state or layout.has_budget):
            return
        now = self._clock()
        numbers = (
            f"{self._fixed},{delta},{plan.reserve},{max(0, actual_cost_micro_usd)},"
            f"{max(0, plan.day_end_ms - now)},{max(0, plan.month_end_ms - now)}"
        )
        args = (
            now if self._send_now else "",
            ticket.member,
            plan.day,
            plan.month,
            numbers,
            layout.spec,
        )
        with _BOUNDARY:
            await _SETTLE(
                self._redis, layout.keys, args, defer_s=self._config.settle_batch_ms / 1000
            )

    async def raise_spend_floors(self, floors: Sequence[SpendFloor], now_ms: int) -> int:
        """Raise the spent counters of the UTC day and month holding ``now_ms`` to at
        least ``floors`` (each key's, and per tenant the sum of its keys'); never lower
        one, nor touch a reservation. One script call per tenant, through redis-py (not
        the request path's client). The count of counters raised; ServiceUnavailable
        when Redis fails (the tenants done before stay done: raising is idempotent)."""
        raised = 0
        for plan in plan_floors(self._config.key_prefix, floors, now_ms):
            ttl = max(1, plan.expires_at_ms - self._clock())
            keys = tuple(target.key for target in plan.targets)
            args: tuple[str | int, ...] = (
                plan.day,
                plan.month,
                ttl,
                *(n for t in plan.targets for n in (t.day_micro_usd, t.month_micro_usd)),
            )
            with _BOUNDARY:
                reply = await _RAISE_FLOORS(self._redis, keys, args)
            raised += cast(int, reply)
        return raised
