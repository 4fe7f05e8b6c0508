"""``capacity`` and ``plan``: GPU sizing from first principles and by simulation.

``register(app)`` adds both commands to a typer app (``tollway capacity``,
``tollway plan``). Everything heavy is imported when a command runs, so the
rest of the command line starts fast; matplotlib only when a chart is asked for.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from tollway.errors import ConfigError


class Gpu(StrEnum):
    """GPUs the performance model knows."""

    h100 = "h100"
    h200 = "h200"
    a100 = "a100"
    l4 = "l4"


class WeightsDtype(StrEnum):
    """Storage dtypes of model weights."""

    fp16 = "fp16"
    bf16 = "bf16"
    fp8 = "fp8"
    int8 = "int8"
    int4 = "int4"


class KvDtype(StrEnum):
    """Storage dtypes of the KV cache."""

    fp16 = "fp16"
    bf16 = "bf16"
    fp8 = "fp8"


def _fail(message: str) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, allow_nan=False))


def _precisions(weights: list[WeightsDtype], kv: list[KvDtype]) -> list[tuple[str, str]]:
    if len(weights) == len(kv):
        return [(w.value, k.value) for w, k in zip(weights, kv, strict=True)]
    if len(kv) == 1:
        return [(w.value, kv[0].value) for w in weights]
    if len(weights) == 1:
        return [(weights[0].value, k.value) for k in kv]
    raise _fail(
        "give --weights-dtype and --kv-dtype the same number of times (or one of them once)"
    )


def capacity(
    gpu: Annotated[Gpu, typer.Option(help="GPU (ignored with --table: every GPU).")] = Gpu.h100,
    model: Annotated[str, typer.Option(help="Model from the catalog.")] = "llama-3.1-8b-instruct",
    weights_dtype: Annotated[
        list[WeightsDtype] | None,
        typer.Option("--weights-dtype", help="Weights dtype (repeat with --table)."),
    ] = None,
    kv_dtype: Annotated[
        list[KvDtype] | None,
        typer.Option("--kv-dtype", help="KV-cache dtype (repeat with --table)."),
    ] = None,
    context: Annotated[
        list[int] | None,
        typer.Option("--context", min=1, help="Tokens per request (repeat with --table)."),
    ] = None,
    tp: Annotated[int, typer.Option(min=1, max=64, help="Tensor-parallel degree.")] = 1,
    mem_fraction: Annotated[
        float | None,
        typer.Option(min=0.01, max=0.99, help="SGLang's --mem-fraction-static (default: its own)."),
    ] = None,
    headroom: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Tollway's KV admission ceiling.")
    ] = 0.8,
    table: Annotated[bool, typer.Option("--table", help="The grid for every GPU.")] = False,
    markdown: Annotated[bool, typer.Option(help="With --table: print Markdown.")] = False,
    plot: Annotated[Path | None, typer.Option(help="With --table: write a PNG chart.")] = None,
    calibrate: Annotated[
        bool, typer.Option("--calibrate", help="Compare the model with published benchmarks.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """KV-cache sizing: weights, KV bytes, SGLang's KV pool and the concurrency ceiling."""
    from simulator.planner import render
    from simulator.planner.sizing import capacity_report, capacity_table

    if calibrate:
        _calibrate(as_json)
        return
    weights = weights_dtype or [WeightsDtype.bf16]
    kvs = kv_dtype or [KvDtype.bf16]
    contexts = context or [4096]
    try:
        if table:
            reports = capacity_table(
                model,
                precisions=_precisions(weights, kvs),
                contexts=contexts,
                tp=tp,
                mem_fraction_static=mem_fraction,
                headroom=headroom,
            )
        else:
            if len(weights) > 1 or len(kvs) > 1 or len(contexts) > 1:
                raise _fail("repeat --weights-dtype, --kv-dtype or --context only with --table")
            reports = [
                capacity_report(
                    gpu.value,
                    model,
                    weights_dtype=weights[0].value,
                    kv_dtype=kvs[0].value,
                    context_tokens=contexts[0],
                    tp=tp,
                    mem_fraction_static=mem_fraction,
                    headroom=headroom,
                )
            ]
    except (KeyError, ValueError) as exc:
        raise _fail(str(exc.args[0] if exc.args else exc)) from None
    if plot is not None:
        _plot_capacity(reports, plot)
    if as_json:
        _emit_json([r.to_dict() for r in reports] if table else reports[0].to_dict())
    elif table and markdown:
        typer.echo(render.capacity_markdown(reports))
    elif table:
        Console(width=160).print(render.capacity_table(reports))
    else:
        typer.echo("\n".join(render.report_lines(reports[0])))


def _plot_capacity(reports: list[Any], path: Path) -> None:
    from simulator.planner.charts import ChartsUnavailable, plot_capacity_table

    try:
        written = plot_capacity_table(reports, path)
    except ChartsUnavailable as exc:
        raise _fail(str(exc)) from None
    Console(stderr=True).print(f"chart written to {written}")


def _calibrate(as_json: bool) -> None:
    from simulator.planner import render
    from simulator.planner.calibration import calibration_rows, h200_speedups
    from simulator.planner.latency import latency_rows

    rows = calibration_rows()
    latency = latency_rows()
    speedups = h200_speedups()
    if as_json:
        _emit_json(
            {
                "calibration": [
                    {**asdict(r.published), "modelled": r.modelled, "error": r.error} for r in rows
                ],
                "latency": [
                    {
                        **asdict(r.published),
                        "modelled_ttft_ms": r.ttft_ms,
                        "modelled_itl_ms": r.itl_ms,
                        "modelled_throughput": r.throughput,
                    }
                    for r in latency
                ],
                "h200_vs_h100": [
                    {"case": s.label, "h100": s.h100, "h200": s.h200, "speedup": s.ratio}
                    for s in speedups
                ],
            }
        )
        return
    typer.echo(render.calibration_markdown(rows, speedups))
    typer.echo("")
    typer.echo(render.latency_markdown(latency))


def plan(
    workload: Annotated[Path, typer.Option("--workload", "-w", help="Workload YAML file.")],
    pools: Annotated[Path, typer.Option("--pools", "-p", help="Pools YAML file.")],
    seed: Annotated[int | None, typer.Option(help="Override the workload's seed.")] = None,
    search: Annotated[
        bool, typer.Option("--search", help="Find the cheapest pool mix meeting the targets.")
    ] = False,
    write_pools: Annotated[
        Path | None, typer.Option(help="With --search: write the chosen pools file here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="Write PNG charts of latency against load to this folder.")
    ] = None,
    load_scales: Annotated[
        str, typer.Option(help="With --plot: comma-separated multiples of the arrival rates.")
    ] = "0.5,1,1.5,2",
    progress: Annotated[bool, typer.Option(help="Show a progress bar on a terminal.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Simulate an agent workload on GPU pools: latency, throughput, KV use, cost."""
    from simulator.planner.schema import check_references, load_pools, load_workload

    try:
        wl = load_workload(workload)
    except ConfigError as exc:
        raise _fail(f"invalid workload file {workload}: {exc.message}") from None
    try:
        pf = load_pools(pools)
    except ConfigError as exc:
        raise _fail(f"invalid pools file {pools}: {exc.message}") from None
    try:
        check_references(wl, pf)
    except ConfigError as exc:
        raise _fail(f"invalid workload file {workload}: {exc.message}") from None
    if seed is not None:
        wl = wl.model_copy(update={"seed": seed})
    try:
        scales = [float(s) for s in load_scales.split(",") if s.strip()]
    except ValueError:
        raise _fail(
            f"--load-scales must be numbers separated by commas, got {load_scales!r}"
        ) from None
    if not scales or min(scales) <= 0:
        raise _fail("--load-scales must be positive")
    from simulator.planner.runner import run_plan, run_search

    console = Console(stderr=True)
    show = progress and console.is_terminal and not as_json
    try:
        if search:
            run_search(
                wl,
                pf,
                console=console,
                show_progress=show,
                as_json=as_json,
                write_pools=write_pools,
            )
        else:
            run_plan(
                wl,
                pf,
                console=console,
                show_progress=show,
                as_json=as_json,
                plot=plot,
                scales=scales,
            )
    except ConfigError as exc:
        raise _fail(exc.message) from None


def register(app: typer.Typer) -> None:
    """Add the ``capacity`` and ``plan`` commands to ``app``."""
    app.command("capacity")(capacity)
    app.command("plan")(plan)
