"""Spend floors: budget counters raised to the spend the usage ledger already holds.

The spent counters of the budgets (``d<YYYYMMDD>:s`` and ``m<YYYYMM>:s`` in each
budget hash, see :mod:`gateway.limits.plan`) live only in Redis, or in process
memory without it. When they are lost, :mod:`gateway.limits.resync` reads each
key's spend in the current UTC day and month from the ledger and has the engine
raise the counters to at least that, with :func:`plan_floors` deciding what goes
where: each key's own spend into its hash, the sum of a tenant's keys into the
tenant's hash.

A counter is only ever raised, never lowered, and reservations are left alone: a
request settles its cost in the engine before its usage record can reach the
ledger, so the engine's counter is normally the larger one, and after a loss the
larger of the two restores what the ledger holds without counting a request twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from billing.spend import KeySpend
from gateway.limits.plan import DAY_MS, period_ids, tenant_stem

#: A key's spend in the ledger for a day and its month is the floor of its counters.
SpendFloor = KeySpend


@dataclass(frozen=True, slots=True)
class FloorTarget:
    """One budget hash and the least its day and month spent counters may hold."""

    key: str
    day_micro_usd: int
    month_micro_usd: int


@dataclass(frozen=True, slots=True)
class FloorPlan:
    """The floors of one tenant: its own budget hash first, then one per key.

    All share the tenant's hash tag, so one Redis script may write them all (Redis
    Cluster). ``day`` and ``month`` are the period ids of the field names
    (:func:`gateway.limits.plan.period_ids`); a hash written gets an expiry no
    earlier than ``expires_at_ms`` (a day after the month ends, never earlier than
    the admission script's).
    """

    day: str
    month: str
    expires_at_ms: int
    targets: tuple[FloorTarget, ...]


def plan_floors(prefix: str, floors: Iterable[SpendFloor], now_ms: int) -> list[FloorPlan]:
    """One plan per tenant of ``floors`` for the UTC day and month holding ``now_ms``.

    Floors of the same key add up (negative amounts count as 0); a tenant's floor
    is the sum of its keys'.
    """
    day, _, month, month_end_ms = period_ids(now_ms)
    by_tenant: dict[str, dict[str, tuple[int, int]]] = {}
    for floor in floors:
        keys = by_tenant.setdefault(floor.tenant_id, {})
        spent_day, spent_month = keys.get(floor.key_id, (0, 0))
        keys[floor.key_id] = (
            spent_day + max(0, floor.day_micros),
            spent_month + max(0, floor.month_micros),
        )
    plans = []
    for tenant_id, keys in by_tenant.items():
        stem = tenant_stem(prefix, tenant_id)
        tenant = FloorTarget(
            f"{stem}b:t", sum(d for d, _ in keys.values()), sum(m for _, m in keys.values())
        )
        own = (FloorTarget(f"{stem}b:k:{key_id}", d, m) for key_id, (d, m) in keys.items())
        plans.append(FloorPlan(day, month, month_end_ms + DAY_MS, (tenant, *own)))
    return plans
