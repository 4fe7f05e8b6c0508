"""From an :class:`AdmissionRequest` to the :class:`Plan` both engines execute.

Key layout: two hashes per scope, and every key of one admission shares the
tenant's ``{t:<tenant>}`` hash tag, so one script may touch them all in Redis
Cluster::

    <prefix>{t:<tenant>}:s:t          tenant state: rate buckets and in-flight requests
    <prefix>{t:<tenant>}:s:k:<key>    API key state
    <prefix>{t:<tenant>}:b:t          tenant budget: per-period counters, in-flight reservations
    <prefix>{t:<tenant>}:b:k:<key>    API key budget

State hash fields: ``rl``/``rt`` (requests bucket level and time), ``tl``/``tt``
(tokens bucket), ``cn`` (requests in flight), ``c:<member>`` (start ms of one).
Budget hash fields: ``d<YYYYMMDD>:s`` / ``:r`` (spent / reserved that UTC day),
``m<YYYYMM>:s`` / ``:r`` (that UTC month), ``f:<member>`` (one reservation:
``start:amount:day:month``). The key id comes last, so ids cannot collide.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.limits.specs import (
    EMPTY_PLAN,
    AdmissionRequest,
    BudgetSpec,
    Layout,
    LimitSpec,
    Plan,
    Scope,
)

DAY_MS = 86_400_000

#: Layouts kept per planner before the cache starts over (bounded memory).
_LAYOUT_CACHE_SIZE = 10_000


def period_ids(now_ms: int) -> tuple[str, int, str, int]:
    """``(day id, day end ms, month id, month end ms)`` of the UTC period holding ``now_ms``."""
    moment = datetime.fromtimestamp(now_ms // 1000, tz=UTC)
    day_start = (now_ms // DAY_MS) * DAY_MS
    if moment.month == 12:
        month_end = datetime(moment.year + 1, 1, 1, tzinfo=UTC)
    else:
        month_end = datetime(moment.year, moment.month + 1, 1, tzinfo=UTC)
    return (
        f"d{moment.year:04d}{moment.month:02d}{moment.day:02d}",
        day_start + DAY_MS,
        f"m{moment.year:04d}{moment.month:02d}",
        int(month_end.timestamp()) * 1000,
    )


def tenant_stem(prefix: str, tenant_id: str) -> str:
    """The start of every key of ``tenant_id``: the prefix and the tenant's hash tag."""
    return f"{prefix}{{t:{tenant_id}}}:"


def _number(value: int | None) -> str:
    return "-1" if value is None else str(value)


def build_layout(
    prefix: str,
    tenant_id: str,
    key_id: str,
    limits: tuple[LimitSpec, LimitSpec],
    budgets: tuple[BudgetSpec, BudgetSpec],
) -> Layout:
    """The scopes that have a limit or a budget, tenant first, with their keys and spec."""
    stem = tenant_stem(prefix, tenant_id)
    scopes = []
    for name, suffix, spec, budget in (
        ("tenant", "t", limits[0], budgets[0]),
        ("key", f"k:{key_id}", limits[1], budgets[1]),
    ):
        if spec.is_unlimited and budget.is_unlimited:
            continue
        scopes.append(Scope(name, f"{stem}s:{suffix}", f"{stem}b:{suffix}", spec, budget))
    if not scopes:
        return EMPTY_PLAN.layout
    keys = tuple(k for scope in scopes for k in (scope.state_key, scope.budget_key))
    spec_text = ",".join(
        _number(v)
        for s in scopes
        for v in (
            s.limits.rpm,
            s.limits.tpm,
            s.limits.max_concurrent,
            s.budget.daily_micro_usd,
            s.budget.monthly_micro_usd,
        )
    )
    return Layout(
        tuple(scopes),
        keys,
        spec_text,
        has_budget=any(not s.budget.is_unlimited for s in scopes),
        has_tokens=any(s.limits.tpm is not None for s in scopes),
    )


class Planner:
    """Builds plans, caching what repeats: layouts per (tenant, key, limits) and the
    current budget period."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._layouts: dict[tuple[object, ...], Layout] = {}
        self._period_day = -1
        self._periods = ("", 0, "", 0)

    def plan(self, request: AdmissionRequest, now_ms: int) -> Plan:
        """The plan of ``request`` at ``now_ms``."""
        if request.is_unlimited:
            return EMPTY_PLAN
        cache_key = (
            request.tenant_id,
            request.key_id,
            request.tenant_limits,
            request.key_limits,
            request.tenant_budget,
            request.key_budget,
        )
        layout = self._layouts.get(cache_key)
        if layout is None:
            if len(self._layouts) >= _LAYOUT_CACHE_SIZE:
                self._layouts.clear()
            layout = self._layouts[cache_key] = build_layout(
                self._prefix,
                request.tenant_id,
                request.key_id,
                (request.tenant_limits, request.key_limits),
                (request.tenant_budget, request.key_budget),
            )
        if not layout.has_budget:
            return Plan(layout, request.estimated_tokens)
        day_index = now_ms // DAY_MS
        if day_index != self._period_day:
            self._periods = period_ids(now_ms)
            self._period_day = day_index
        day, day_end, month, month_end = self._periods
        return Plan(
            layout,
            request.estimated_tokens,
            request.reserve_micro_usd,
            day,
            month,
            day_end,
            month_end,
        )


def build_plan(request: AdmissionRequest, prefix: str, now_ms: int) -> Plan:
    """The plan of ``request`` at ``now_ms`` (uncached)."""
    return Planner(prefix).plan(request, now_ms)
