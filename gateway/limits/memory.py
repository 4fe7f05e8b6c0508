"""In-process admission: the same algorithm as the Lua scripts, for one replica.

Used when no Redis is configured (the embedded default) and as the local
fallback while Redis is unreachable under ``fail_open``. The code follows
:mod:`gateway.limits.scripts` step for step over :class:`HashStore`, a small
model of the Redis hashes (fields, key expiry on the injected clock, empty
hashes deleted), so a Redis engine and a memory engine fed the same sequence
give the same answers (a property test holds them to it). Nothing in an
admission awaits, so admissions on one event loop are atomic.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from gateway.limits.clock import Clock, wall_clock_ms
from gateway.limits.config import LimitsConfig
from gateway.limits.floors import SpendFloor, plan_floors
from gateway.limits.plan import DAY_MS, Planner
from gateway.limits.specs import WINDOW_MS, AdmissionRequest, Plan, Scope, Ticket
from gateway.limits.verdict import (
    BUDGET,
    CHECK_CONCURRENCY,
    CHECK_DAY,
    CHECK_MONTH,
    CHECK_RPM,
    CHECK_TPM,
    CONCURRENCY,
    CONCURRENCY_RETRY_MS,
    OK,
    RATE,
    TOO_LARGE,
    Verdict,
    conclude,
)

_SWEEP_EVERY_MS = 60_000
Value = int | str


@dataclass(slots=True)
class _Seen:
    """What the check phase read of one scope, for the apply phase and the reply."""

    requests: tuple[int, int] = (0, 0)
    tokens: tuple[int, int] = (0, 0)
    in_flight: int = 0
    budget: list[Value | None] = field(default_factory=list)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _int(value: Value | None, default: int = 0) -> int:
    return default if value is None else int(value)


class HashStore:
    """Redis hashes in a dict: fields, expiry by the given clock, empty hashes removed."""

    def __init__(self) -> None:
        self._data: dict[str, dict[str, Value]] = {}
        self._expires: dict[str, int] = {}

    def get(self, key: str, now: int) -> dict[str, Value] | None:
        """The live hash at ``key``, if any."""
        expires = self._expires.get(key)
        if expires is not None and expires <= now:
            self._data.pop(key, None)
            del self._expires[key]
            return None
        return self._data.get(key)

    def hmget(self, key: str, now: int, *fields: str) -> list[Value | None]:
        found = self.get(key, now) or {}
        return [found.get(f) for f in fields]

    def hset(self, key: str, now: int, values: dict[str, Value]) -> int:
        """Set fields; the count of fields that did not exist (as HSET answers)."""
        found = self.get(key, now)
        if found is None:
            found = self._data[key] = {}
        created = sum(1 for f in values if f not in found)
        found.update(values)
        return created

    def hdel(self, key: str, now: int, *fields: str) -> int:
        found = self.get(key, now)
        if found is None:
            return 0
        removed = sum(1 for f in fields if found.pop(f, None) is not None)
        if not found:
            del self._data[key]
            self._expires.pop(key, None)
        return removed

    def hincrby(self, key: str, now: int, field: str, amount: int) -> None:
        found = self.get(key, now)
        if found is None:
            found = self._data[key] = {}
        found[field] = _int(found.get(field)) + amount

    def pexpire(self, key: str, now: int, ttl_ms: int) -> None:
        if self.get(key, now) is not None:
            self._expires[key] = now + ttl_ms

    def pttl(self, key: str, now: int) -> int:
        """Milliseconds ``key`` has left: -2 when there is no such hash, -1 when it never
        expires (as PTTL answers)."""
        if self.get(key, now) is None:
            return -2
        expires = self._expires.get(key)
        return -1 if expires is None else expires - now

    def sweep(self, now: int) -> None:
        """Drop every expired hash."""
        for key in [k for k, t in self._expires.items() if t <= now]:
            self._data.pop(key, None)
            del self._expires[key]


class MemoryAdmission:
    """Rate limits, concurrency and budgets held in this process."""

    def __init__(self, config: LimitsConfig | None = None, *, clock: Clock | None = None) -> None:
        self._config = config or LimitsConfig()
        self._clock = clock or wall_clock_ms
        self._planner = Planner(self._config.key_prefix)
        self._max_age = self._config.max_request_duration_ms
        self._store = HashStore()
        self._replica = secrets.token_hex(4)
        self._sequence = itertools.count()
        self._swept_at = 0

    async def admit(self, request: AdmissionRequest) -> Ticket:
        """Admit ``request`` or raise RateLimited / QuotaExceeded."""
        return self.admit_now(request)

    async def settle(self, ticket: Ticket, actual_tokens: int, actual_cost_micro_usd: int) -> None:
        """Release the ticket's slot, correct its tokens and turn its reservation into spend."""
        self.settle_now(ticket, actual_tokens, actual_cost_micro_usd)

    async def raise_spend_floors(self, floors: Sequence[SpendFloor], now_ms: int) -> int:
        """Raise the spent counters of the UTC day and month holding ``now_ms`` to at
        least ``floors``, as :data:`gateway.limits.scripts.RAISE_FLOORS` does; the count
        of counters raised."""
        now, store, raised = self._clock(), self._store, 0
        for plan in plan_floors(self._config.key_prefix, floors, now_ms):
            ttl = max(1, plan.expires_at_ms - now)
            day, month = f"{plan.day}:s", f"{plan.month}:s"
            for target in plan.targets:
                spent_day, spent_month = store.hmget(target.key, now, day, month)
                values: dict[str, Value] = {}
                if target.day_micro_usd > _int(spent_day):
                    values[day] = target.day_micro_usd
                if target.month_micro_usd > _int(spent_month):
                    values[month] = target.month_micro_usd
                if values:
                    store.hset(target.key, now, values)
                    raised += len(values)
                    if store.pttl(target.key, now) < ttl:
                        store.pexpire(target.key, now, ttl)
        return raised

    # -- the rate bucket, as in the scripts ----------------------------------------------

    def _bucket(
        self, level: Value | None, ts: Value | None, limit: int, now: int
    ) -> tuple[int, int]:
        cap = limit * WINDOW_MS
        if level is None:
            return cap, now
        lv, t = min(int(level), cap), _int(ts)
        if now > t:
            need = cap - lv
            if need > 0:
                lv = cap if now - t >= _cdiv(need, limit) else lv + (now - t) * limit
            t = now
        return lv, t

    # -- admission (scripts.ADMIT) -------------------------------------------------------

    def admit_now(self, request: AdmissionRequest) -> Ticket:
        """:meth:`admit` without the coroutine (the work never waits)."""
        now = self._clock()
        plan = self._planner.plan(request, now)
        member = f"{request.request_id}#{self._replica}{next(self._sequence)}"
        if plan.is_empty:
            return Ticket(request.request_id, plan, member, "none")
        if now - self._swept_at >= _SWEEP_EVERY_MS:
            self._store.sweep(now)
            self._swept_at = now
        code, index, retry = OK, 0, 0

        def fail(c: int, i: int, r: int) -> None:
            nonlocal code, index, retry
            if c > code:
                code, index = c, i
            retry = max(retry, r)

        def take(level: int, cost: int, limit: int, i: int) -> None:
            if cost > limit:
                fail(TOO_LARGE, i, 0)
            elif cost * WINDOW_MS > level:
                fail(RATE, i, _cdiv(cost * WINDOW_MS - level, limit))

        store, tokens, reserve = self._store, plan.tokens, plan.reserve
        saved: list[_Seen] = []
        for s, scope in enumerate(plan.layout.scopes):
            base, lim, bud = 8 * s, scope.limits, scope.budget
            x = _Seen()
            if not lim.is_unlimited:
                rl, rt, tl, tt, cn = store.hmget(scope.state_key, now, "rl", "rt", "tl", "tt", "cn")
                if lim.rpm is not None:
                    x.requests = self._bucket(rl, rt, lim.rpm, now)
                    take(x.requests[0], 1, lim.rpm, base + CHECK_RPM)
                if lim.tpm is not None:
                    x.tokens = self._bucket(tl, tt, lim.tpm, now)
                    take(x.tokens[0], tokens, lim.tpm, base + CHECK_TPM)
                if lim.max_concurrent is not None:
                    count = _int(cn)
                    if count >= lim.max_concurrent:
                        count -= self._reap_slots(scope.state_key, now)
                        if count >= lim.max_concurrent:
                            fail(CONCURRENCY, base + CHECK_CONCURRENCY, CONCURRENCY_RETRY_MS)
                    x.in_flight = count
            if not bud.is_unlimited:
                fields = (f"{plan.day}:s", f"{plan.day}:r", f"{plan.month}:s", f"{plan.month}:r")
                h = store.hmget(scope.budget_key, now, *fields)
                day_short, month_short = self._short(h, scope, reserve)
                if (day_short or month_short) and self._reap_budget(scope.budget_key, now) > 0:
                    h = store.hmget(scope.budget_key, now, *fields)
                    day_short, month_short = self._short(h, scope, reserve)
                if day_short:
                    fail(BUDGET, base + CHECK_DAY, plan.day_end_ms - now)
                if month_short:
                    fail(BUDGET, base + CHECK_MONTH, plan.month_end_ms - now)
                x.budget = h
            saved.append(x)
        if code == OK:
            for scope, x in zip(plan.layout.scopes, saved, strict=True):
                self._apply(plan, scope, x, member, now)
        states = []
        for scope, x in zip(plan.layout.scopes, saved, strict=True):
            state = [-1, -1, -1, -1]
            for slot, limit, (level, _) in (
                (0, scope.limits.rpm, x.requests),
                (2, scope.limits.tpm, x.tokens),
            ):
                if limit is not None:
                    state[slot] = max(0, level // WINDOW_MS)
                    state[slot + 1] = _cdiv(limit * WINDOW_MS - level, limit)
            states.append((state[0], state[1], state[2], state[3]))
        verdict = Verdict(code, index, retry, tuple(states))
        return conclude(
            plan, verdict, request_id=request.request_id, member=member, engine="memory"
        )

    def _apply(self, plan: Plan, scope: Scope, x: _Seen, member: str, now: int) -> None:
        store, lim, bud = self._store, scope.limits, scope.budget
        fields: dict[str, Value] = {}
        ttl = 0
        if lim.rpm is not None:
            level, ts = x.requests
            x.requests = (level - WINDOW_MS, ts)
            fields["rl"], fields["rt"] = level - WINDOW_MS, ts
            ttl = max(ttl, _cdiv(lim.rpm * WINDOW_MS - level + WINDOW_MS, lim.rpm) + WINDOW_MS)
        if lim.tpm is not None:
            level, ts = x.tokens
            level -= plan.tokens * WINDOW_MS
            x.tokens = (level, ts)
            fields["tl"], fields["tt"] = level, ts
            ttl = max(ttl, _cdiv(lim.tpm * WINDOW_MS - level, lim.tpm) + WINDOW_MS)
        if lim.max_concurrent is not None:
            fields["cn"] = x.in_flight + 1
            fields[f"c:{member}"] = now
            ttl = max(ttl, self._max_age + WINDOW_MS)
        if fields:
            store.hset(scope.state_key, now, fields)
            store.pexpire(scope.state_key, now, ttl)
        if not bud.is_unlimited and plan.reserve > 0:
            h = x.budget
            day = plan.day if bud.daily_micro_usd is not None else ""
            month = plan.month if bud.monthly_micro_usd is not None else ""
            values: dict[str, Value] = {f"f:{member}": f"{now}:{plan.reserve}:{day}:{month}"}
            if day:
                values[f"{day}:r"] = _int(h[1]) + plan.reserve
            if month:
                values[f"{month}:r"] = _int(h[3]) + plan.reserve
            if store.hset(scope.budget_key, now, values) > 1:
                end = plan.month_end_ms if month else plan.day_end_ms
                store.pexpire(scope.budget_key, now, end - now + DAY_MS)

    @staticmethod
    def _short(h: list[Value | None], scope: Scope, reserve: int) -> tuple[bool, bool]:
        day_used, month_used = _int(h[0]) + _int(h[1]), _int(h[2]) + _int(h[3])
        daily, monthly = scope.budget.daily_micro_usd, scope.budget.monthly_micro_usd
        return (
            daily is not None and (day_used >= daily or day_used + reserve > daily),
            monthly is not None and (month_used >= monthly or month_used + reserve > monthly),
        )

    def _reap_slots(self, key: str, now: int) -> int:
        found = self._store.get(key, now) or {}
        gone = [f for f, v in found.items() if f.startswith("c:") and int(v) <= now - self._max_age]
        if gone:
            self._store.hdel(key, now, *gone)
            self._store.hincrby(key, now, "cn", -len(gone))
        return len(gone)

    def _reap_budget(self, key: str, now: int) -> int:
        found = self._store.get(key, now) or {}
        gone: list[str] = []
        freed: dict[str, int] = {}
        for name, value in found.items():
            if not name.startswith("f:"):
                continue
            start, amount, day, month = str(value).split(":")
            if int(start) <= now - self._max_age:
                gone.append(name)
                for period in (day, month):
                    if period:
                        freed[period] = freed.get(period, 0) + int(amount)
        if gone:
            self._store.hdel(key, now, *gone)
            for period, total in freed.items():
                self._store.hincrby(key, now, f"{period}:r", -total)
        return len(gone)

    # -- settlement (scripts.SETTLE) -----------------------------------------------------

    def settle_now(self, ticket: Ticket, actual_tokens: int, actual_cost_micro_usd: int) -> None:
        """:meth:`settle` without the coroutine."""
        if ticket.settled:
            return
        ticket.settled = True
        plan = ticket.plan
        if plan.is_empty:
            return
        now, store = self._clock(), self._store
        delta = actual_tokens - plan.tokens
        actual = max(0, actual_cost_micro_usd)
        for scope in plan.layout.scopes:
            lim, bud, key = scope.limits, scope.budget, scope.state_key
            if lim.max_concurrent is not None or (lim.tpm is not None and delta != 0):
                rl, rt, tl, tt, cn = store.hmget(key, now, "rl", "rt", "tl", "tt", "cn")
                fields: dict[str, Value] = {}
                if lim.max_concurrent is not None and store.hdel(key, now, f"c:{ticket.member}"):
                    fields["cn"] = _int(cn, 1) - 1
                ttl = -1
                if lim.tpm is not None and delta != 0:
                    level, ts = self._bucket(tl, tt, lim.tpm, now)
                    level = min(level - delta * WINDOW_MS, lim.tpm * WINDOW_MS)
                    fields["tl"], fields["tt"] = level, ts
                    ttl = _cdiv(lim.tpm * WINDOW_MS - level, lim.tpm) + WINDOW_MS
                    if lim.rpm is not None:
                        r_level = self._bucket(rl, rt, lim.rpm, now)[0]
                        ttl = max(ttl, _cdiv(lim.rpm * WINDOW_MS - r_level, lim.rpm) + WINDOW_MS)
                    if lim.max_concurrent is not None:
                        ttl = max(ttl, self._max_age + WINDOW_MS)
                if fields:
                    store.hset(key, now, fields)
                if ttl >= 0:
                    store.pexpire(key, now, ttl)
            if bud.is_unlimited:
                continue
            removed = 0
            if plan.reserve > 0:
                removed = store.hdel(scope.budget_key, now, f"f:{ticket.member}")
            if removed or actual > 0:
                day, month = plan.day, plan.month
                h = store.hmget(
                    scope.budget_key, now, f"{day}:s", f"{day}:r", f"{month}:s", f"{month}:r"
                )
                values: dict[str, Value] = {}
                if bud.daily_micro_usd is not None:
                    values[f"{day}:s"] = _int(h[0]) + actual
                    if removed:
                        values[f"{day}:r"] = _int(h[1]) - plan.reserve
                if bud.monthly_micro_usd is not None:
                    values[f"{month}:s"] = _int(h[2]) + actual
                    if removed:
                        values[f"{month}:r"] = _int(h[3]) - plan.reserve
                if store.hset(scope.budget_key, now, values) > 0:
                    end = (
                        plan.month_end_ms if bud.monthly_micro_usd is not None else plan.day_end_ms
                    )
                    store.pexpire(scope.budget_key, now, max(0, end - now) + DAY_MS)
