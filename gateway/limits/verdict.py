"""The answer of one admission check, shared by both engines.

The Lua script and :class:`~gateway.limits.memory.MemoryAdmission` both return
a :class:`Verdict`; :func:`conclude` turns it into a :class:`Ticket` or raises
the matching error, so the two engines cannot differ in what a client sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from billing.money import micros_to_usd_text
from gateway.limits.headers import format_duration, ratelimit_headers
from gateway.limits.specs import Plan, RateStatus, Ticket
from tollway.errors import QuotaExceeded, RateLimited, TokenRateLimited

# Outcome codes, by severity: the most severe failure is the one reported.
OK = 0
CONCURRENCY = 1
RATE = 2
TOO_LARGE = 3
BUDGET = 4

# Checks within a scope; a failure's index is ``8 * scope + check``.
CHECK_RPM = 1
CHECK_TPM = 2
CHECK_CONCURRENCY = 3
CHECK_DAY = 4
CHECK_MONTH = 5

#: Retry-After suggested when a concurrency limit is full (slots free when
#: requests finish, which no counter predicts). The Lua script uses the same.
CONCURRENCY_RETRY_MS = 1000


@dataclass(frozen=True, slots=True)
class Verdict:
    """``code`` (``OK`` or the most severe failure), ``index`` (``8 * scope + check``
    of the first check that failed with that code), ``retry_ms`` (the longest
    wait any failed check asks for) and per scope ``(requests remaining,
    requests reset ms, tokens remaining, tokens reset ms)``, -1 where none."""

    code: int
    index: int
    retry_ms: int
    states: tuple[tuple[int, int, int, int], ...]

    @classmethod
    def from_script(cls, raw: list[int]) -> Verdict:
        """Parse the admission script's flat reply."""
        states = tuple(
            (int(raw[i]), int(raw[i + 1]), int(raw[i + 2]), int(raw[i + 3]))
            for i in range(3, len(raw), 4)
        )
        return cls(int(raw[0]), int(raw[1]), int(raw[2]), states)


def _tightest(plan: Plan, verdict: Verdict) -> tuple[RateStatus | None, RateStatus | None]:
    """The request and token trios with the least remaining, where such limits apply."""
    requests: RateStatus | None = None
    tokens: RateStatus | None = None
    for scope, (r_left, r_reset, t_left, t_reset) in zip(
        plan.layout.scopes, verdict.states, strict=True
    ):
        rpm, tpm = scope.limits.rpm, scope.limits.tpm
        if rpm is not None and (
            requests is None or (r_left, -r_reset) < (requests.remaining, -requests.reset_ms)
        ):
            requests = RateStatus(rpm, r_left, r_reset)
        if tpm is not None and (
            tokens is None or (t_left, -t_reset) < (tokens.remaining, -tokens.reset_ms)
        ):
            tokens = RateStatus(tpm, t_left, t_reset)
    return requests, tokens


def _usd(micros: int | None) -> str:
    return "none" if micros is None else micros_to_usd_text(micros)


def conclude(plan: Plan, verdict: Verdict, *, request_id: str, member: str, engine: str) -> Ticket:
    """The ticket of an admitted request, or the 429 that refuses it."""
    requests, tokens = _tightest(plan, verdict)
    if verdict.code == OK:
        return Ticket(request_id, plan, member, engine, requests, tokens)
    headers = ratelimit_headers(requests, tokens)
    retry_ms = verdict.retry_ms
    if verdict.code != TOO_LARGE:
        headers["retry-after-ms"] = str(retry_ms)
    position, check = divmod(verdict.index, 8)
    scope = plan.layout.scopes[position]
    if verdict.code == BUDGET:
        if check == CHECK_DAY:
            period, limit = "daily", scope.budget.daily_micro_usd
        else:
            period, limit = "monthly", scope.budget.monthly_micro_usd
        raise QuotaExceeded(
            f"You exceeded your current quota: the {scope.name}'s {period} budget of "
            f"{_usd(limit)} USD cannot cover this request (it reserves up to "
            f"{_usd(plan.reserve)} USD). Please check your plan and billing details.",
            retry_after=retry_ms / 1000,
            headers=headers,
        )
    if verdict.code == CONCURRENCY:
        raise RateLimited(
            f"Rate limit reached for concurrent requests on this {scope.name}: "
            f"Limit {scope.limits.max_concurrent}. Please try again once a request has finished.",
            retry_after=retry_ms / 1000,
            headers=headers,
        )
    state = verdict.states[position]
    error: type[RateLimited] = RateLimited
    if check == CHECK_RPM:
        kind, unit, limit_value, remaining, cost = "requests", "RPM", scope.limits.rpm, state[0], 1
    else:
        error = TokenRateLimited
        kind, unit, limit_value, remaining, cost = (
            "tokens",
            "TPM",
            scope.limits.tpm,
            state[2],
            plan.tokens,
        )
    assert limit_value is not None
    if verdict.code == TOO_LARGE:
        raise error(
            f"Request too large for {kind} per min ({unit}) on this {scope.name}: "
            f"Limit {limit_value}, Requested {cost}. "
            "The input or output tokens must be reduced in order to run successfully.",
            headers=headers,
        )
    raise error(
        f"Rate limit reached for {kind} per min ({unit}) on this {scope.name}: "
        f"Limit {limit_value}, Used {limit_value - remaining}, Requested {cost}. "
        f"Please try again in {format_duration(retry_ms)}.",
        retry_after=retry_ms / 1000,
        headers=headers,
    )
