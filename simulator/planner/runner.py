"""What ``tollway plan`` does once its files are valid: run, show progress, print, chart."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from simulator.planner import render
from simulator.planner.des import simulate
from simulator.planner.results import PlanResult
from simulator.planner.schema import PoolsFile, Workload
from simulator.planner.search import search


def _progress(console: Console, show: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not show,
    )


def _simulate_with_bar(
    workload: Workload, pools: PoolsFile, scale: float, bar: Progress
) -> PlanResult:
    task = bar.add_task(f"load x{scale:g}", total=1.0)

    def report(fraction: float) -> None:
        bar.update(task, completed=fraction)

    return simulate(workload, pools, load_scale=scale, progress=report)


def pool_rates(workload: Workload) -> dict[str, float]:
    """Sessions per minute arriving at each pool at load scale 1."""
    rates: dict[str, float] = {}
    for agent in workload.agents.values():
        rates[agent.pool] = rates.get(agent.pool, 0.0) + agent.sessions_per_minute
    return rates


def run_plan(
    workload: Workload,
    pools: PoolsFile,
    *,
    console: Console,
    show_progress: bool,
    as_json: bool,
    plot: Path | None,
    scales: list[float],
) -> PlanResult:
    """Simulate at load 1 (and at each of ``scales`` when charts are asked for); print."""
    sweep: list[PlanResult] = []
    with _progress(console, show_progress) as bar:
        task = bar.add_task("simulating", total=1.0)
        result = simulate(workload, pools, progress=lambda f: bar.update(task, completed=f))
        if plot is not None:
            for scale in scales:
                if scale == 1.0:
                    sweep.append(result)
                    continue
                sweep.append(_simulate_with_bar(workload, pools, scale, bar))
    if plot is not None:
        from simulator.planner.charts import plot_latency_vs_load

        for path in plot_latency_vs_load(sweep, pool_rates(workload), plot):
            console.print(f"chart written to {path}")
    if as_json:
        data = result.to_dict()
        if sweep:
            data["load_sweep"] = [r.to_dict() for r in sorted(sweep, key=lambda r: r.load_scale)]
        print(json.dumps(data, indent=2))
    else:
        Console(width=160).print(render.plan_table(result))
    return result


def run_search(
    workload: Workload,
    pools: PoolsFile,
    *,
    console: Console,
    show_progress: bool,
    as_json: bool,
    write_pools: Path | None,
) -> None:
    """Search the cheapest mix; print it, and the pools file that realises it."""
    with _progress(console, show_progress) as bar:
        task = bar.add_task("searching", total=None)
        result = search(
            workload,
            pools,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    chosen = result.pools_file(pools)
    data = chosen.model_dump(mode="json", exclude_defaults=True)
    for name, pool in chosen.pools.items():
        data["pools"][name]["workers"] = pool.workers  # explicit, even when it is the default
    text = yaml.safe_dump(data, sort_keys=False)
    if write_pools is not None:
        write_pools.write_text(text, encoding="utf-8")
        console.print(f"pools file written to {write_pools}")
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    out = Console(width=160)
    out.print(render.search_table(result))
    out.print(f"total: ${result.cost_per_hour:,.2f} per hour")
    if not result.feasible:
        out.print(
            "[bold red]no layout within the search limits meets the targets for some pools[/]"
        )
    out.print("\npools file for this mix:\n", markup=False)
    out.print(text, markup=False, highlight=False)
