"""PNG charts (matplotlib, imported only when a chart is asked for).

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot,
so no global figure state) on the Agg backend.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulator.planner.results import PlanResult
from simulator.planner.sizing import CapacityReport


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed (``pip install 'tollway[plot]'``)."""


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ChartsUnavailable("charts need matplotlib: pip install 'tollway[plot]'") from exc
    return Figure(figsize=(width, height), layout="constrained")


def plot_capacity_table(reports: Sequence[CapacityReport], path: Path) -> Path:
    """Bar chart of concurrent full-context requests per GPU, one bar per precision/context."""
    gpus = list(dict.fromkeys(r.gpu for r in reports))
    series = list(dict.fromkeys((r.weights_dtype, r.kv_dtype, r.context_tokens) for r in reports))
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(series))
    for i, (weights, kv, context) in enumerate(series):
        values = []
        for gpu in gpus:
            match = [
                r
                for r in reports
                if (r.gpu, r.weights_dtype, r.kv_dtype, r.context_tokens)
                == (gpu, weights, kv, context)
            ]
            values.append(match[0].concurrency if match and match[0].fits else 0)
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(gpus))]
        bars = ax.bar(xs, values, width, label=f"{weights} weights, {kv} KV, {context} ctx")
        ax.bar_label(bars, labels=[str(v) if v else "n/f" for v in values], fontsize=7)
    ax.set_xticks(range(len(gpus)), [g.upper() for g in gpus])
    ax.set_ylabel("concurrent full-context requests (tp=1)")
    model = reports[0].model if reports else ""
    ax.set_title(f"{model}: KV-cache concurrency ceiling per GPU (n/f: does not fit)")
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def plot_latency_vs_load(
    results: Sequence[PlanResult], rates: dict[str, float], directory: Path
) -> list[Path]:
    """One PNG per pool: p50/p99 TTFT and ITL against the pool's session arrival rate.

    ``rates`` maps each pool to its session arrival rate (per minute) at load scale 1.
    """
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    ordered = sorted(results, key=lambda r: r.load_scale)
    for pool in ordered[0].pools if ordered else []:
        xs = [r.load_scale * rates.get(pool, 0.0) for r in ordered]
        fig = _figure(9, 3.8)
        left, right = fig.subplots(1, 2)
        for ax, metric, label in ((left, "ttft", "TTFT"), (right, "itl", "inter-token latency")):
            for q, style in (("p50", "o-"), ("p99", "s--")):
                ys = [getattr(r.pools[pool], f"{metric}_{q}_s") for r in ordered]
                ax.plot(xs, [y if not math.isnan(y) else None for y in ys], style, label=q)
            ax.set_xlabel("sessions per minute")
            ax.set_ylabel(f"{label} (s)")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend()
        p = ordered[0].pools[pool]
        fig.suptitle(f"pool {pool}: {p.workers} x tp{p.tp} {p.gpu.upper()}, {p.model}")
        path = directory / f"latency-vs-load-{pool}.png"
        fig.savefig(path, dpi=120)
        written.append(path)
    return written
