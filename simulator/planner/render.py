"""Text renderings of the planner's results: rich tables and Markdown."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.table import Table

from simulator.planner.calibration import CalibrationRow, Speedup
from simulator.planner.latency import LatencyRow
from simulator.planner.results import PlanResult
from simulator.planner.search import SearchResult
from simulator.planner.sizing import CapacityReport

GIB = 2**30


def _fmt_s(seconds: float) -> str:
    if math.isnan(seconds):
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _money(value: float) -> str:
    return "-" if math.isnan(value) else f"${value:,.3f}"


def report_lines(r: CapacityReport) -> list[str]:
    """The single-deployment report, one fact per line."""
    lines = [
        f"{r.model} on {r.tp} x {r.gpu.upper()} ({r.gpu_memory_gib:.1f} GiB each), "
        f"weights {r.weights_dtype}, KV cache {r.kv_dtype}, context {r.context_tokens} tokens",
        f"  weights:            {r.weights_gb_total:.1f} GB in all, "
        f"{r.weights_gib_per_gpu:.2f} GiB per GPU",
        f"  KV per token:       {r.kv_bytes_per_token:,} bytes "
        f"({r.kv_bytes_per_token_per_gpu:,} per GPU)",
        f"  KV per request:     {r.kv_bytes_per_request:,} bytes = {r.kv_gb_per_request:.2f} GB "
        f"({r.kv_bytes_per_request / GIB:.2f} GiB)",
        f"  mem_fraction_static {r.mem_fraction_static:.3f}; KV pool {r.kv_pool_tokens:,} tokens "
        f"({r.kv_pool_gib_per_gpu:.2f} GiB per GPU)",
        f"  concurrency:        {r.concurrency} requests at {r.context_tokens} tokens; "
        f"{r.headroom_concurrency} within headroom {r.headroom:g}",
        f"  verdict:            {r.verdict()}",
    ]
    if r.exceeds_model_context:
        lines.append(
            f"  note: {r.context_tokens} tokens exceed the model's context length "
            f"({r.model_context_length}); the figures are memory arithmetic only"
        )
    return lines


def _table_cells(r: CapacityReport) -> list[str]:
    if r.fits:
        ceiling, headroom = str(r.concurrency), str(r.headroom_concurrency)
        note = ""
    else:
        ceiling = headroom = "does not fit"
        tp = r.smallest_tp_that_fits
        note = (
            f"tp={tp} fits: {r.concurrency_at_smallest_tp} per {tp} GPUs"
            if tp
            else "no TP <= 8 fits"
        )
    return [
        r.gpu.upper(),
        f"{r.weights_dtype}/{r.kv_dtype}",
        f"{r.context_tokens:,}",
        f"{r.weights_gib_per_gpu:.1f}",
        f"{r.kv_gb_per_request:.2f}",
        f"{r.kv_pool_tokens:,}",
        ceiling,
        headroom,
        note,
    ]


_TABLE_HEAD = [
    "GPU",
    "weights/KV",
    "context",
    "weights GiB/GPU",
    "KV GB/request",
    "KV pool tokens",
    "concurrent requests",
    "at headroom",
    "note",
]


def capacity_table(reports: Sequence[CapacityReport]) -> Table:
    """The grid as a rich table."""
    headroom = reports[0].headroom if reports else 0.8
    table = Table(
        title=f"{reports[0].model if reports else ''} (tp={reports[0].tp if reports else 1})"
    )
    for head in _TABLE_HEAD:
        table.add_column(head.replace("at headroom", f"at {headroom:g} headroom"))
    for r in reports:
        table.add_row(*_table_cells(r))
    return table


def capacity_markdown(reports: Sequence[CapacityReport]) -> str:
    """The grid as a GitHub Markdown table."""
    rows = [_TABLE_HEAD, ["---"] * len(_TABLE_HEAD)] + [_table_cells(r) for r in reports]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def plan_table(result: PlanResult) -> Table:
    """Per-pool results of one simulation."""
    table = Table(title=f"simulated plan (seed {result.seed}, load x{result.load_scale:g})")
    table.add_column("metric")
    pools = list(result.pools.values())
    for p in pools:
        table.add_column(f"{p.pool}: {p.workers} x tp{p.tp} {p.gpu.upper()}")
    rows: list[tuple[str, list[str]]] = [
        ("model", [p.model for p in pools]),
        ("TTFT p50 / p99", [f"{_fmt_s(p.ttft_p50_s)} / {_fmt_s(p.ttft_p99_s)}" for p in pools]),
        ("ITL p50 / p99", [f"{_fmt_s(p.itl_p50_s)} / {_fmt_s(p.itl_p99_s)}" for p in pools]),
        ("output tokens/s", [f"{p.output_tokens_per_s:,.0f}" for p in pools]),
        ("KV use mean / peak", [f"{p.kv_use_mean:.0%} / {p.kv_use_peak:.0%}" for p in pools]),
        ("GPU busy", [f"{p.gpu_busy_fraction:.0%}" for p in pools]),
        ("cache hit rate", [f"{p.cache_hit_rate:.0%}" for p in pools]),
        (
            "sessions done / started (failed)",
            [f"{p.sessions_completed}/{p.sessions_started} ({p.sessions_failed})" for p in pools],
        ),
        ("turns done (rejected)", [f"{p.turns_completed} ({p.turns_rejected})" for p in pools]),
        ("GPU-hours", [f"{p.gpu_hours:.2f}" for p in pools]),
        ("cost", [_money(p.cost_usd) for p in pools]),
        ("cost / M tokens (in+out)", [_money(p.cost_per_million_tokens) for p in pools]),
        ("cost / M output tokens", [_money(p.cost_per_million_output_tokens) for p in pools]),
        ("cost / session", [_money(p.cost_per_session) for p in pools]),
    ]
    for label, cells in rows:
        table.add_row(label, *cells)
    return table


def search_table(result: SearchResult) -> Table:
    """The chosen layout of each pool."""
    t = result.targets
    table = Table(
        title=f"cheapest mix meeting p99 TTFT <= {_fmt_s(t.ttft_p99_s)}, "
        f"p99 ITL <= {_fmt_s(t.itl_p99_s)}"
    )
    for head in ("pool", "layout", "GPUs", "$/hour", "TTFT p99", "ITL p99", "trials"):
        table.add_column(head)
    for name, choice in result.choices.items():
        c = choice.chosen
        if c is None:
            table.add_row(name, choice.note, "-", "-", "-", "-", str(len(choice.tried)))
            continue
        table.add_row(
            name,
            f"{c.workers} x tp{c.tp} {c.gpu.upper()}",
            str(c.tp * c.workers),
            f"{c.cost_per_hour:,.2f}",
            _fmt_s(c.result.ttft_p99_s),
            _fmt_s(c.result.itl_p99_s),
            str(len(choice.tried)),
        )
    return table


def calibration_markdown(rows: Sequence[CalibrationRow], speedups: Sequence[Speedup]) -> str:
    """The calibration comparison and the H200/H100 speed-ups as Markdown tables."""
    out = [
        "| source | GPU | model | dtype | TP | in/out | metric | published | model | error |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        p = row.published
        out.append(
            f"| {p.engine} | {p.gpu.upper()} | {p.model} | {p.weights_dtype} | {p.tp} | "
            f"{p.input_len}/{p.output_len} | {p.metric} tok/s | {p.value:,.0f} | "
            f"{row.modelled:,.0f} | {row.error:+.0%} |"
        )
    errors = [abs(r.error) for r in rows]
    if errors:
        out.append("")
        out.append(
            f"Mean absolute error {sum(errors) / len(errors):.0%}, "
            f"largest {max(errors):.0%} ({len(errors)} figures)."
        )
    out += [
        "",
        "| H200 vs H100 (TP1) | H100 tok/s (batch) | H200 tok/s (batch) | speed-up |",
        "| --- | --- | --- | --- |",
    ]
    for s in speedups:
        out.append(
            f"| {s.label} | {s.h100:,.0f} ({s.h100_batch}) | {s.h200:,.0f} ({s.h200_batch}) | "
            f"{s.ratio:.2f}x |"
        )
    return "\n".join(out)


def latency_markdown(rows: Sequence[LatencyRow]) -> str:
    """The closed-loop latency comparison (TTFT, ITL, throughput) as a Markdown table."""
    out = [
        "| GPU | model | TP | in/out | c | TTFT ms pub / model | ITL ms pub / model "
        "| tok/s pub / model | batch |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        p, q = row.published, row.ratios()
        out.append(
            f"| {p.gpu.upper()} | {p.model} | {p.tp} | {p.input_len}/{p.output_len} | "
            f"{p.concurrency} | {p.ttft_ms:,.0f} / {row.ttft_ms:,.0f} ({q['ttft'] - 1:+.0%}) | "
            f"{p.itl_ms:.1f} / {row.itl_ms:.1f} ({q['itl'] - 1:+.0%}) | "
            f"{p.throughput:,.0f} / {row.throughput:,.0f} ({q['throughput'] - 1:+.0%}) | "
            f"{row.max_batch} |"
        )
    return "\n".join(out)
