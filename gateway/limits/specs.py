"""What an admission asks for and what it hands back.

:class:`LimitSpec` and :class:`BudgetSpec` describe the limits of one scope (a
tenant or an API key); ``None`` means unlimited. :class:`AdmissionRequest` is
one request at admission; :class:`Ticket` is what admission returns and what
settlement takes back. :class:`RateStatus` is one ``x-ratelimit-*`` trio.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Window of the per-minute limits (requests and tokens per minute), in ms.
WINDOW_MS = 60_000

#: Largest rate a limit may name: ``limit * WINDOW_MS`` must stay an exact
#: integer in a double (2**53) for the Lua script's arithmetic.
MAX_RATE = 100_000_000_000

#: Largest token estimate or cost one request may carry (same reason).
MAX_AMOUNT = 2**53 // WINDOW_MS


def _check_limit(name: str, value: int | None, *, minimum: int, maximum: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum}, not {value}")


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """Rate and concurrency limits of one scope; ``None`` means unlimited.

    ``rpm``: requests per minute; ``tpm``: tokens per minute (prompt estimate
    plus ``max_tokens`` at admission, corrected to real usage at settlement);
    ``max_concurrent``: requests in flight at once.
    """

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        _check_limit("rpm", self.rpm, minimum=1, maximum=MAX_RATE)
        _check_limit("tpm", self.tpm, minimum=1, maximum=MAX_RATE)
        _check_limit("max_concurrent", self.max_concurrent, minimum=1, maximum=MAX_RATE)

    @property
    def is_unlimited(self) -> bool:
        """True when no limit applies."""
        return self.rpm is None and self.tpm is None and self.max_concurrent is None


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """Spending limits of one scope per UTC day and per UTC month, in micro-USD.

    ``None`` means unlimited; ``0`` means nothing may be spent.
    """

    daily_micro_usd: int | None = None
    monthly_micro_usd: int | None = None

    def __post_init__(self) -> None:
        _check_limit("daily_micro_usd", self.daily_micro_usd, minimum=0, maximum=2**53)
        _check_limit("monthly_micro_usd", self.monthly_micro_usd, minimum=0, maximum=2**53)

    @property
    def is_unlimited(self) -> bool:
        """True when no budget applies."""
        return self.daily_micro_usd is None and self.monthly_micro_usd is None


UNLIMITED = LimitSpec()
NO_BUDGET = BudgetSpec()


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """One request at admission.

    ``estimated_tokens`` is the prompt estimate plus ``max_tokens``;
    ``reserve_micro_usd`` the most the request can cost. Both are corrected at
    settlement with the real values.
    """

    request_id: str
    tenant_id: str
    key_id: str
    tenant_limits: LimitSpec = UNLIMITED
    key_limits: LimitSpec = UNLIMITED
    tenant_budget: BudgetSpec = NO_BUDGET
    key_budget: BudgetSpec = NO_BUDGET
    estimated_tokens: int = 0
    reserve_micro_usd: int = 0

    def __post_init__(self) -> None:
        _check_limit("estimated_tokens", self.estimated_tokens, minimum=0, maximum=MAX_AMOUNT)
        _check_limit("reserve_micro_usd", self.reserve_micro_usd, minimum=0, maximum=MAX_AMOUNT)

    @property
    def is_unlimited(self) -> bool:
        """True when no limit and no budget applies: admission is a no-op."""
        return (
            self.tenant_limits.is_unlimited
            and self.key_limits.is_unlimited
            and self.tenant_budget.is_unlimited
            and self.key_budget.is_unlimited
        )


@dataclass(frozen=True, slots=True)
class RateStatus:
    """One ``x-ratelimit-*`` trio: the limit, what is left, and ms until full again."""

    limit: int
    remaining: int
    reset_ms: int


@dataclass(frozen=True, slots=True)
class Scope:
    """One scope (the tenant or the API key) of a plan: its two Redis keys and its limits."""

    name: str  # "tenant" or "key"
    state_key: str  # rate buckets and in-flight requests
    budget_key: str  # budget counters and in-flight reservations
    limits: LimitSpec
    budget: BudgetSpec


@dataclass(frozen=True, slots=True)
class Layout:
    """The part of a plan that depends only on who asks and their limits (cacheable).

    ``spec`` is the scopes' limits as the script reads them: five numbers per
    scope (rpm, tpm, max_concurrent, daily, monthly; ``-1`` for none).
    """

    scopes: tuple[Scope, ...]
    keys: tuple[str, ...]
    spec: str
    has_budget: bool
    has_tokens: bool

    @property
    def is_empty(self) -> bool:
        """True when nothing applies."""
        return not self.scopes


@dataclass(frozen=True, slots=True)
class Plan:
    """Every limit and budget that applies to one request, and what it asks of them.

    ``day`` and ``month`` name the UTC budget periods (``"d20240331"``,
    ``"m202403"``; empty when no budget applies).
    """

    layout: Layout
    tokens: int = 0
    reserve: int = 0
    day: str = ""
    month: str = ""
    day_end_ms: int = 0
    month_end_ms: int = 0

    @property
    def is_empty(self) -> bool:
        """True when nothing applies."""
        return not self.layout.scopes


EMPTY_PLAN = Plan(Layout((), (), "", False, False))


@dataclass(slots=True)
class Ticket:
    """Proof of admission; hand it to ``settle`` exactly once when the request ends.

    ``requests`` and ``tokens`` are the tightest ``x-ratelimit-*`` trios after
    admission (``None`` where no such limit applies); ``member`` identifies
    this request's concurrency slot and budget reservations; ``engine`` names
    the engine that admitted it (``"none"``, ``"memory"``, ``"redis"``).
    """

    request_id: str
    plan: Plan
    member: str
    engine: str
    requests: RateStatus | None = None
    tokens: RateStatus | None = None
    settled: bool = field(default=False, compare=False)

    @property
    def estimated_tokens(self) -> int:
        """The token estimate charged at admission."""
        return self.plan.tokens
