"""The scale-out report: throughput, CPU per request, efficiency, exact limits."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from bench.scaleout.run import CONFIGS, Config, Sample, ScaleOptions, ScaleResult

COMPONENTS = ("gateway", "load generator", "upstreams", "redis", "postgres")


def scaling_efficiency(rps_n: float, rps_1: float, processes: int) -> float:
    """Measured requests/s with ``processes`` processes over ``processes`` × one process's."""
    return rps_n / (processes * rps_1) if rps_1 > 0 and processes > 0 else float("nan")


def cpu_efficiency(us_per_request_1: float, us_per_request_n: float) -> float:
    """A request's gateway CPU cost with one process over its cost with N: 1.0 means
    N processes do the same work per request, so throughput grows with the cores given."""
    return us_per_request_1 / us_per_request_n if us_per_request_n > 0 else float("nan")


def capacity(processes: int, us_per_request: float) -> float:
    """Requests/s the gateway would serve with a whole core per process at this cost."""
    return processes * 1e6 / us_per_request if us_per_request > 0 else float("nan")


def _median(samples: Sequence[Sample], value: Callable[[Sample], float]) -> float:
    return float(statistics.median(value(s) for s in samples))


def _median_us(samples: Sequence[Sample], group: str) -> float:
    return float(statistics.median(s.per_request_us(group) for s in samples))


def _whole_stack_us(sample: Sample) -> float:
    return sum(sample.per_request_us(group) for group in COMPONENTS)


def markdown(result: ScaleResult, command: str, machine: str, source: str = "") -> str:
    """The results block."""
    o = result.options
    configs = [c for c in CONFIGS if c.name in result.samples]
    base = result.samples[CONFIGS[0].name]
    rps_1 = _median(base, lambda s: s.rps)
    us_1 = _median(base, lambda s: s.per_request_us("gateway"))
    cores = base[0].cpu.machine_cores
    head = (
        "| config | req/s | vs 1 process | gateway CPU per request | busy, per process "
        "(cores) | generator | upstreams | Redis | PostgreSQL | whole stack per request "
        "| machine busy (cores) | of which other work | failed |"
    )
    rows = [head, "| --- |" + " ---: |" * 12]
    eff_rows = [
        "| config | processes | throughput vs 1 process | scaling efficiency (measured) "
        "| CPU efficiency | gateway capacity with a core per process | ceiling of this "
        f"{cores}-core machine for the whole stack |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config in configs:
        samples = result.samples[config.name]
        rps = _median(samples, lambda s: s.rps)
        us = {g: _median_us(samples, g) for g in COMPONENTS}
        stack_us = _median(samples, _whole_stack_us)
        busy = [
            statistics.median(s.process_cores[i] for s in samples) for i in range(config.processes)
        ]
        machine_busy = _median(samples, lambda s: s.cpu.machine_busy_s / s.cpu.wall_s)
        others = _median(samples, lambda s: s.cpu.others_s / s.cpu.wall_s)
        failed = sum(s.result.errors for s in samples)
        rows.append(
            f"| {config.label} | {rps:,.0f} | {rps / rps_1:.2f}× | {us['gateway']:,.0f} µs | "
            f"{' + '.join(f'{b:.2f}' for b in busy)} | {us['load generator']:,.0f} µs | "
            f"{us['upstreams']:,.0f} µs | {us['redis']:,.0f} µs | {us['postgres']:,.0f} µs | "
            f"{stack_us:,.0f} µs | {machine_busy:.2f} | {others:.2f} | {failed} |"
        )
        eff_rows.append(
            f"| {config.label} | {config.processes} | {rps / rps_1:.2f}× | "
            f"{scaling_efficiency(rps, rps_1, config.processes):.0%} | "
            f"{cpu_efficiency(us_1, us['gateway']):.0%} | "
            f"{capacity(config.processes, us['gateway']):,.0f} req/s | "
            f"{cores * 1e6 / stack_us:,.0f} req/s |"
        )
    exact_rows = [
        "| config | rpm | sent at once | 200 | 429 | other | phase | correct range | result "
        "| gateway CPU s per process during it |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    all_exact = True
    for config in configs:
        for found in result.exact.get(config.name, []):
            low, high = found.allowed
            all_exact &= found.exact
            exact_rows.append(
                f"| {config.label} | {found.rpm} | {found.demand} | {found.ok} | {found.limited} | "
                f"{found.other} | {found.elapsed_s:.2f} s | "
                f"{low if low == high else f'{low}–{high}'} | "
                f"{'exact' if found.exact else '**WRONG**'} | "
                f"{' + '.join(f'{c:.2f}' for c in found.cpu_by_process_s)} |"
            )
    lines = [
        "## Multi-core scale-out",
        "",
        f"Command: `{command}` (from the repository root, in the project's virtualenv).",
        "",
        _method(o, configs),
        "",
        f"Machine: {machine} Load average at the end: {result.load_after}."
        + (f" Code: {source}." if source else ""),
        "",
        f"Throughput and CPU (medians of {o.repeat} rounds of {o.duration_s:g} s after "
        f"{o.warmup_s:g} s of warm-up; CPU per request = CPU seconds over the phase / "
        "requests answered):",
        "",
        *rows,
        "",
        "Scaling:",
        "",
        *eff_rows,
        "",
        "Limits stay exact across processes "
        f"({'every phase exact' if all_exact else '**some phase was WRONG**'}):",
        "",
        *exact_rows,
    ]
    return "\n".join(lines) + "\n"


def _method(o: ScaleOptions, configs: Sequence[Config]) -> str:
    labels = ", ".join(c.label for c in configs)
    return (
        f"Method: one stack (2 canned SGLang-shaped workers, Redis, a fresh PostgreSQL "
        f"database) and three gateway deployments started side by side: {labels}; each "
        "with every feature on (tenancy keys hashed in PostgreSQL, limits, budgets, "
        "idempotency and the usage stream in Redis, the inline ledger writer, cache-aware "
        "routing, compression for one agent type) and its own Redis key prefix, so each "
        "has its own limits and its own ledger-writer leader. The deployments are loaded "
        "in turns (order reversed every round) by the soak's Python generator: "
        f"{o.concurrency} keep-alive connections, closed loop, spread over the replicas' "
        "ports (under `serve --workers 2` the kernel spreads them over the two processes "
        f"sharing the socket); {o.sessions:,} agent sessions with growing contexts (about "
        "5 KB bodies). Nothing is pinned: on a 2-core machine the gateway processes, the "
        "generator, the workers, Redis and PostgreSQL share both cores, so two gateway "
        "processes cannot get two cores to themselves, and measured requests/s cannot "
        "double. What carries over to a machine with a core per process is the CPU cost: "
        "each process's CPU time is read from `/proc/<pid>/stat` before and after the "
        "phase. **CPU efficiency** = gateway CPU per request with one process / with two "
        "(100 %: two processes do no extra work per request, so throughput grows with the "
        "cores given); **gateway capacity with a core per process** = processes / CPU per "
        "request; the **ceiling of this machine** = cores / CPU per request of the whole "
        "stack (gateway, generator, workers, Redis, PostgreSQL), what the measured req/s "
        "is bounded by here. Busy = CPU seconds per wall second of each serving process; "
        "other work = the machine's busy time (`/proc/stat`) not spent by any of these "
        "processes nor by the idle deployments: other jobs on the shared machine."
    )
