"""Admission: rate limits, concurrency limits and budgets that hold across replicas.

Per tenant and per API key: requests and tokens per minute (GCRA buckets),
requests in flight, and daily and monthly budgets in micro-USD. With Redis, one
Lua script call admits a request against all of them atomically and one more
settles it; without Redis the same rules hold in-process. Budget spend lost with
Redis (or with the process) is restored from the usage ledger (``resync``). Also
here: OpenAI's ``x-ratelimit-*`` headers and per-upstream request-rate protection.

Typical use in the request pipeline::

    ticket = await admission.admit(AdmissionRequest(...))   # may raise 429 / 503
    response.headers.update(ticket_headers(ticket))
    ...                                                      # forward, meter
    await admission.settle(ticket, actual_tokens, actual_cost_micro_usd)
"""

from gateway.limits.admission import Admission, build_admission
from gateway.limits.clock import Clock, ManualClock, wall_clock_ms
from gateway.limits.config import LimitsConfig
from gateway.limits.floors import SpendFloor
from gateway.limits.headers import format_duration, ratelimit_headers, ticket_headers
from gateway.limits.memory import MemoryAdmission
from gateway.limits.redis_admission import RedisAdmission, RedisBoundary
from gateway.limits.resilient import ResilientAdmission
from gateway.limits.resync import BudgetResync
from gateway.limits.specs import (
    AdmissionRequest,
    BudgetSpec,
    LimitSpec,
    RateStatus,
    Ticket,
)

__all__ = [
    "Admission",
    "AdmissionRequest",
    "BudgetResync",
    "BudgetSpec",
    "Clock",
    "LimitSpec",
    "LimitsConfig",
    "ManualClock",
    "MemoryAdmission",
    "RateStatus",
    "RedisAdmission",
    "RedisBoundary",
    "ResilientAdmission",
    "SpendFloor",
    "Ticket",
    "build_admission",
    "format_duration",
    "ratelimit_headers",
    "ticket_headers",
    "wall_clock_ms",
]
