"""What a simulation measured, per pool, and what it cost.

Definitions (all in simulated seconds):

* **TTFT**: from the moment an agent sends a turn (it may wait in the pool's
  admission queue) to its first output token.
* **ITL** (inter-token latency): the gap between consecutive output tokens of a
  turn; a prefill step that runs while a turn is decoding shows up as one long gap.
* **throughput** and **cost** are steady-state rates: the work of the sessions
  that arrived during the arrival window (``duration_s``) divided by that
  window, and ``gpu_hours = workers * tp * duration_s / 3600``. In steady state a
  window's arrivals bring exactly a window's worth of work, whether it finishes
  inside the window or in the drain after it.
* **span**: from 0 to the last completion (the window plus the drain tail);
  time averages (KV use, busy fraction) are over the span.
* **cache hit rate**: prompt tokens served from the radix cache / prompt tokens.
* **KV use**: SGLang's ``token_usage`` (slots held by running requests over
  the pool size), averaged over time and workers; ``peak`` is the highest seen.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.planner.schema import Targets


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def weighted_percentile(values: Sequence[float], weights: Sequence[int], q: float) -> float:
    """The ``q``-th percentile of ``values`` each repeated ``weights`` times (nearest rank)."""
    total = sum(weights)
    if total == 0:
        return math.nan
    rank = max(1, math.ceil(total * q / 100))
    seen = 0
    for value, weight in sorted(zip(values, weights, strict=True)):
        seen += weight
        if seen >= rank:
            return value
    return max(values)  # pragma: no cover - unreachable: seen reaches total


@dataclass(slots=True)
class PoolStats:
    """Running tallies of one pool during a simulation."""

    ttft: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    queue_wait: list[float] = field(default_factory=list)
    itl_values: list[float] = field(default_factory=list)
    itl_weights: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0
    turns_completed: int = 0
    turns_rejected: int = 0
    sessions_started: int = 0
    sessions_completed: int = 0
    sessions_failed: int = 0
    kv_usage_area: float = 0.0
    kv_usage_peak: float = 0.0
    busy_time: float = 0.0

    def add_itl(self, gap: float, count: int) -> None:
        """``count`` tokens arrived ``gap`` seconds after their previous token."""
        self.itl_values.append(gap)
        self.itl_weights.append(count)


@dataclass(frozen=True, slots=True)
class PoolResult:
    """One pool's figures for one simulation."""

    pool: str
    gpu: str
    model: str
    tp: int
    workers: int
    kv_pool_tokens: int
    ttft_p50_s: float
    ttft_p99_s: float
    itl_p50_s: float
    itl_p99_s: float
    e2e_p50_s: float
    queue_wait_p99_s: float
    output_tokens: int
    prompt_tokens: int
    output_tokens_per_s: float
    cache_hit_rate: float
    kv_use_mean: float
    kv_use_peak: float
    gpu_busy_fraction: float
    turns_completed: int
    turns_rejected: int
    sessions_started: int
    sessions_completed: int
    sessions_failed: int
    span_s: float
    billed_s: float
    gpu_hours: float
    price_per_gpu_hour: float
    cost_usd: float
    cost_per_million_tokens: float
    cost_per_million_output_tokens: float
    cost_per_session: float

    @property
    def gpus(self) -> int:
        """GPUs the pool holds."""
        return self.workers * self.tp

    @property
    def completed_fraction(self) -> float:
        """Sessions completed over sessions started (1.0 when none started)."""
        if self.sessions_started == 0:
            return 1.0
        return self.sessions_completed / self.sessions_started

    def meets(self, targets: Targets) -> bool:
        """Whether the pool meets the latency targets and completes enough sessions."""
        if self.turns_completed == 0:
            return self.sessions_started == 0
        return (
            self.ttft_p99_s <= targets.ttft_p99_s
            and (math.isnan(self.itl_p99_s) or self.itl_p99_s <= targets.itl_p99_s)
            and self.completed_fraction >= targets.min_completed_fraction
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN becomes ``None``)."""
        out = asdict(self)
        out["gpus"] = self.gpus
        out["completed_fraction"] = self.completed_fraction
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


@dataclass(frozen=True, slots=True)
class PlanResult:
    """A whole simulation: the seed, the load and every pool's result."""

    seed: int
    load_scale: float
    duration_s: float
    pools: dict[str, PoolResult]
    events: int

    @property
    def cost_usd(self) -> float:
        """Cost of all pools over their spans."""
        return sum(p.cost_usd for p in self.pools.values())

    @property
    def gpus(self) -> int:
        """GPUs in all pools."""
        return sum(p.gpus for p in self.pools.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "seed": self.seed,
            "load_scale": self.load_scale,
            "duration_s": self.duration_s,
            "events": self.events,
            "gpus": self.gpus,
            "cost_usd": self.cost_usd,
            "pools": {name: p.to_dict() for name, p in self.pools.items()},
        }


def summarize(
    stats: PoolStats,
    *,
    pool: str,
    gpu: str,
    model: str,
    tp: int,
    workers: int,
    kv_pool_tokens: int,
    span_s: float,
    billed_s: float,
    price_per_gpu_hour: float,
) -> PoolResult:
    """Turn a pool's tallies into its result."""
    gpu_hours = workers * tp * billed_s / 3600
    cost = gpu_hours * price_per_gpu_hour
    total_tokens = stats.prompt_tokens + stats.output_tokens
    nan = math.nan
    return PoolResult(
        pool=pool,
        gpu=gpu,
        model=model,
        tp=tp,
        workers=workers,
        kv_pool_tokens=kv_pool_tokens,
        ttft_p50_s=percentile(stats.ttft, 50),
        ttft_p99_s=percentile(stats.ttft, 99),
        itl_p50_s=weighted_percentile(stats.itl_values, stats.itl_weights, 50),
        itl_p99_s=weighted_percentile(stats.itl_values, stats.itl_weights, 99),
        e2e_p50_s=percentile(stats.e2e, 50),
        queue_wait_p99_s=percentile(stats.queue_wait, 99),
        output_tokens=stats.output_tokens,
        prompt_tokens=stats.prompt_tokens,
        output_tokens_per_s=stats.output_tokens / billed_s if billed_s > 0 else 0.0,
        cache_hit_rate=stats.cached_tokens / stats.prompt_tokens if stats.prompt_tokens else 0.0,
        kv_use_mean=stats.kv_usage_area / (span_s * workers) if span_s > 0 else 0.0,
        kv_use_peak=stats.kv_usage_peak,
        gpu_busy_fraction=stats.busy_time / (span_s * workers) if span_s > 0 else 0.0,
        turns_completed=stats.turns_completed,
        turns_rejected=stats.turns_rejected,
        sessions_started=stats.sessions_started,
        sessions_completed=stats.sessions_completed,
        sessions_failed=stats.sessions_failed,
        span_s=span_s,
        billed_s=billed_s,
        gpu_hours=gpu_hours,
        price_per_gpu_hour=price_per_gpu_hour,
        cost_usd=cost,
        cost_per_million_tokens=cost / total_tokens * 1e6 if total_tokens else nan,
        cost_per_million_output_tokens=(
            cost / stats.output_tokens * 1e6 if stats.output_tokens else nan
        ),
        cost_per_session=cost / stats.sessions_completed if stats.sessions_completed else nan,
    )
