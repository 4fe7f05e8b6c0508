"""One gateway configuration from two source trees, side by side: did a change help?

``bench.pipeline_costs`` compares configurations of one build; this compares two
builds (for example a ``git worktree`` of the previous commit against the working
tree) with the same configuration, in the same run, on the same machine state. Each
tree's gateway is started from its own directory (``python -m gateway serve`` with
that directory as the working directory, so its packages are the ones imported),
pinned to core 0, with the upstream, Redis and the load generator on core 1, as in
``bench.pipeline_costs``. Every round measures both, in alternating order:

- JSON at concurrency 1 (latency p50, p99, gateway CPU per request), with ``wrk``;
- JSON at concurrency 64 (requests/s, CPU per request), with ``wrk``;
- a stream at concurrency 1: time to the first body byte (the Python generator);
- streams at concurrency 64 (streams/s, CPU per stream), with ``wrk``.

``--phases`` picks some of them (``1``, ``6``, ``s``, ``S``). An A/A run (the same tree
on both sides, 9 rounds of JSON at c=64) put the second gateway 6 % below the first in
requests/s: differences of that size at c=64 are within this tool's noise.

Reported: medians over rounds, and the medians of the paired same-round differences
(new − baseline).

    git worktree add /tmp/base HEAD~1
    python -m bench.ab --baseline /tmp/base [--variant F] [--repeat 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.gateway_admin import RedisScratch, start_redis
from bench.gateway_overhead import request_body
from bench.loadgen import Load, Sample, Target, run
from bench.machine import describe, load_average
from bench.pipeline_costs import LOAD_CPU, ROOT, UPSTREAM_CPU, Gateway, start_gateways
from bench.pipeline_variants import VARIANTS
from bench.processes import Children, free_port, python
from bench.procfs import cpu_seconds

HIGH = 64


@dataclass
class Figures:
    """One build's figures from one round."""

    p50_us: float
    p99_us: float
    cpu_c1_us: float
    rps: float
    cpu_c64_us: float
    ttfb_us: float
    stream_rps: float = float("nan")
    stream_cpu_us: float = float("nan")


def _phase(
    gateway: Gateway, body: bytes, connections: int, s: float, w: float
) -> tuple[Sample, float]:
    target = Target(gateway.port, body, authorization=gateway.authorization)
    run(target, Load(connections, w, 0.0), cpu=LOAD_CPU)
    before = cpu_seconds(gateway.pid)
    sample = run(target, Load(connections, s, 0.0), cpu=LOAD_CPU)
    spent = cpu_seconds(gateway.pid) - before
    return sample, spent * 1e6 / max(1, sample.requests)


def measure(gateway: Gateway, duration: float, warmup: float, phases: str) -> Figures:
    """The figures of one gateway in one round (NaN for the phases not measured)."""
    nan = float("nan")
    figures = Figures(nan, nan, nan, nan, nan, nan)
    errors = 0
    if "1" in phases:
        c1, cpu1 = _phase(gateway, request_body(False), 1, duration, warmup)
        figures.p50_us, figures.p99_us, figures.cpu_c1_us = c1.p50_ms * 1000, c1.p99_ms * 1000, cpu1
        errors += c1.errors
    if "6" in phases:
        c64, cpu64 = _phase(gateway, request_body(False), HIGH, duration, warmup)
        figures.rps, figures.cpu_c64_us = c64.rps, cpu64
        errors += c64.errors
    if "s" in phases:
        target = Target(gateway.port, request_body(True), authorization=gateway.authorization)
        stream: Sample = run(target, Load(1, duration, warmup), cpu=LOAD_CPU, ttfb=True)
        figures.ttfb_us = (stream.ttfb_p50_ms or 0.0) * 1000
        errors += stream.errors
    if "S" in phases:
        streams, cpu = _phase(gateway, request_body(True), HIGH, duration, warmup)
        figures.stream_rps, figures.stream_cpu_us = streams.rps, cpu
        errors += streams.errors
    if errors:
        raise RuntimeError(f"{gateway.variant.name}: {errors} failed requests")
    return figures


_ROWS: tuple[tuple[str, Callable[[Figures], float], int], ...] = (
    ("JSON c=1 p50 µs", lambda f: f.p50_us, 1),
    ("JSON c=1 p99 µs", lambda f: f.p99_us, 1),
    ("JSON c=1 CPU µs/request", lambda f: f.cpu_c1_us, 1),
    (f"JSON c={HIGH} requests/s", lambda f: f.rps, 0),
    (f"JSON c={HIGH} CPU µs/request", lambda f: f.cpu_c64_us, 1),
    ("stream c=1 first byte p50 µs", lambda f: f.ttfb_us, 1),
    (f"stream c={HIGH} streams/s", lambda f: f.stream_rps, 0),
    (f"stream c={HIGH} CPU µs/stream", lambda f: f.stream_cpu_us, 1),
)


def report(base: list[Figures], new: list[Figures], header: str) -> str:
    """Medians per build and of the paired differences."""
    lines = [
        header,
        "",
        "| figure | baseline | new | new − baseline (paired median) | new / baseline |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, get, digits in _ROWS:
        if math.isnan(get(base[0])):
            continue
        b = statistics.median(get(f) for f in base)
        n = statistics.median(get(f) for f in new)
        d = statistics.median(get(x) - get(y) for x, y in zip(new, base, strict=True))
        lines.append(
            f"| {label} | {b:,.{digits}f} | {n:,.{digits}f} | {d:+,.{digits}f} | {n / b:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other source tree")
    parser.add_argument("--new", type=Path, default=ROOT, help="default: this tree")
    parser.add_argument("--variant", default="F", help="bench.pipeline_costs variant (F)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--phases",
        default="16sS",
        help="1: JSON c=1, 6: JSON c=64, s: stream c=1, S: stream c=64 (default all)",
    )
    args = parser.parse_args(argv)
    (variant,) = [v for v in VARIANTS if v.name == args.variant.upper()]
    machine = describe()
    prefix = f"bench-ab:{uuid.uuid4().hex[:8]}:"
    with Children() as children:
        redis_url = start_redis(children) + "?max_connections=1024"
        scratch = RedisScratch(redis_url.split("?")[0], prefix)
        port = free_port()
        upstream = children.start(
            "upstream", [python(), "-m", "bench.upstream", "--port", str(port)], cpu=UPSTREAM_CPU
        )
        children.wait_ready("upstream", f"http://127.0.0.1:{port}/health", proc=upstream)
        gateways = []
        for name, tree in (("0", args.baseline), ("1", args.new)):
            renamed = dataclasses.replace(variant, name=variant.name + name)
            (gateway,) = start_gateways(
                children, [renamed], port, redis_url, prefix, "warning", root=tree.resolve()
            )
            gateways.append(gateway)
        runs: dict[str, list[Figures]] = {g.variant.name: [] for g in gateways}
        for round_ in range(max(1, args.repeat)):
            order = gateways if round_ % 2 == 0 else gateways[::-1]
            for gateway in order:
                figures = measure(gateway, args.duration, args.warmup, args.phases)
                scratch.trim_usage()
                runs[gateway.variant.name].append(figures)
                print(f"round {round_ + 1} {gateway.variant.name}: {figures}", file=sys.stderr)
    header = (
        f"Command: `python -m bench.ab --baseline DIR --variant {variant.name} "
        f"--repeat {args.repeat} --duration {args.duration:g} --warmup {args.warmup:g} "
        f"--phases {args.phases}`; "
        f"variant {variant.name} ({variant.label}); baseline `{args.baseline}`, new "
        f"`{args.new}`. Machine: {machine.rstrip('.')}; load average at the end: "
        f"{load_average()}."
    )
    base, new = (runs[g.variant.name] for g in gateways)
    print(report(base, new, header))


if __name__ == "__main__":
    main()
