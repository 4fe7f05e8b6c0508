"""One run's figures, medians over repeats, and the comparisons the issue asks for."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields

from bench.routing.replay import TurnResult


@dataclass(frozen=True, slots=True)
class RunFigures:
    """What one run of one frontend on one workload measured."""

    hit_rate: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    requests_per_s: float
    tokens_per_s: float
    makespan_s: float
    requests: int
    errors: int
    #: Largest worker's share of prompt tokens over the mean (1.0 = even).
    imbalance: float
    #: Turns after the first that reached the same worker as the turn before
    #: (only where the frontend names the worker: Tollway's ``x-tollway-route``).
    sticky: float | None
    #: Hit rate from the client's ``usage.prompt_tokens_details.cached_tokens``.
    client_hit_rate: float | None


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def figures(
    results: Sequence[TurnResult],
    makespan_s: float,
    before: dict[str, tuple[float, float]],
    after: dict[str, tuple[float, float]],
) -> RunFigures:
    """The figures of one run from the client's results and the workers' counter deltas."""
    deltas = {
        url: (after[url][0] - before[url][0], after[url][1] - before[url][1]) for url in after
    }
    cached = sum(c for c, _ in deltas.values())
    prompt = sum(p for _, p in deltas.values())
    shares = [p for _, p in deltas.values()]
    mean_share = sum(shares) / len(shares) if shares else 0.0
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    completion = sum(r.completion_tokens for r in ok)
    previous: dict[str, str] = {}
    same = moves = 0
    for r in sorted(ok, key=lambda r: (r.sid, r.turn)):
        if r.worker is None:
            continue
        if r.sid in previous:
            moves += 1
            same += previous[r.sid] == r.worker
        previous[r.sid] = r.worker
    reported = [r for r in ok if r.cached_tokens is not None]
    client_prompt = sum(r.prompt_tokens for r in reported)
    return RunFigures(
        hit_rate=cached / prompt if prompt else 0.0,
        ttft_p50_ms=percentile(ttfts, 50),
        ttft_p99_ms=percentile(ttfts, 99),
        requests_per_s=len(ok) / makespan_s if makespan_s > 0 else 0.0,
        tokens_per_s=(prompt + completion) / makespan_s if makespan_s > 0 else 0.0,
        makespan_s=makespan_s,
        requests=len(ok),
        errors=len(results) - len(ok),
        imbalance=max(shares) / mean_share if mean_share else 0.0,
        sticky=same / moves if moves else None,
        client_hit_rate=(
            sum(r.cached_tokens or 0 for r in reported) / client_prompt
            if reported and client_prompt
            else None
        ),
    )


def median_figures(runs: Sequence[RunFigures]) -> RunFigures:
    """Field-by-field median over repeats (errors: the sum)."""
    values = {}
    for f in fields(RunFigures):
        column = [getattr(r, f.name) for r in runs]
        if f.name == "errors":
            values[f.name] = sum(column)
        elif all(v is None for v in column):
            values[f.name] = None
        else:
            present = [v for v in column if v is not None]
            values[f.name] = statistics.median(present)
            if f.name == "requests":
                values[f.name] = int(values[f.name])
    return RunFigures(**values)
