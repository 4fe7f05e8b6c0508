"""Measuring every system round after round, in a rotating order.

For each system and body (JSON, then SSE stream) one round measures:

- concurrency 1 (one keep-alive connection, closed loop): latency p50/p99;
- concurrency 64: requests/s, latency p50/p99 and the system's CPU per request (its
  process tree's utime + stime over the run, divided by the requests served), from a
  fixed-count run (``bench.peers.burst``) sized by the warm-up to last about the
  duration, so that no ramp-up from idle biases a slow system's figure;
- for streams, concurrency 1 with the Python generator: time to the first body byte.

Each measurement is a warm-up run, then a measured run, with the load generator on the
side core; before and after the measured run the system is given time to finish the
requests a stopped load generator left in flight (until it uses under 5 % of a core),
so that a slow system's backlog never spills into the next measurement. The order of
the systems rotates from round to round so that drift on the shared machine spreads
over all of them; medians over rounds are reported, and "added" figures are medians of
same-round differences against the upstream measured directly.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.loadgen import Generator, Load, Sample, run
from bench.peers.burst import run_burst
from bench.peers.systems import SIDE_CPU, System
from bench.procfs import process_tree, total_cpu_seconds, wait_idle

HIGH_CONCURRENCY = 64
MIN_BURST_ROUNDS = 3  # a fixed-count run sends at least this many requests per connection
Key = tuple[str, bool, int, str]  # (system, stream, connections, "load" | "ttfb")


@dataclass(frozen=True)
class Measurement:
    """One measured run with the CPU the system (and its helpers) spent on it."""

    sample: Sample
    cpu_s: float
    helper_cpu_s: float = 0.0
    #: CPU the other systems on the same core spent meanwhile (they should be idle).
    bystander_cpu_s: float = 0.0

    def cpu_us_per_request(self, helpers: bool = False) -> float:
        """CPU per request served, in microseconds (helpers: the helpers' instead)."""
        if not self.sample.requests:
            return float("nan")
        return (self.helper_cpu_s if helpers else self.cpu_s) / self.sample.requests * 1e6


@dataclass
class Results:
    """Measurements by key, one per round, plus what failed."""

    runs: dict[Key, list[Measurement]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def add(self, key: Key, m: Measurement) -> None:
        self.runs.setdefault(key, []).append(m)

    def has(self, key: Key) -> bool:
        return key in self.runs

    def series(self, key: Key, what: Callable[[Measurement], float]) -> list[float]:
        return [what(m) for m in self.runs.get(key, [])]

    def median(self, key: Key, what: Callable[[Measurement], float]) -> float:
        values = self.series(key, what)
        return statistics.median(values) if values else float("nan")

    def paired(self, key: Key, base: Key, what: Callable[[Measurement], float]) -> float:
        """Median over rounds of (key − base), each pair measured in the same round."""
        a, b = self.series(key, what), self.series(base, what)
        pairs = [x - y for x, y in zip(a, b, strict=False)]
        return statistics.median(pairs) if pairs else float("nan")

    def spread(self, key: Key) -> float:
        """(max − min) / median of requests/s across rounds: a contention alarm."""
        rps = self.series(key, lambda m: m.sample.rps)
        if len(rps) < 2 or not statistics.median(rps):
            return 0.0
        return (max(rps) - min(rps)) / statistics.median(rps)

    def bystander_share(self) -> float:
        """Most CPU the idle systems used during any one measurement, as a share of a core."""
        shares = [
            m.bystander_cpu_s / m.sample.duration_s
            for ms in self.runs.values()
            for m in ms
            if m.sample.duration_s
        ]
        return max(shares, default=0.0)

    def errors_of(self, key: Key) -> int:
        """Failed or non-2xx requests over every round of one measurement."""
        return sum(m.sample.errors for m in self.runs.get(key, []))


def rotated(systems: Sequence[System], round_: int) -> list[System]:
    """The systems in this round's order: rotated by one per round."""
    shift = round_ % len(systems) if systems else 0
    return [*systems[shift:], *systems[:shift]]


def _timed(system: System, bystanders: Sequence[System], load: Callable[[], Sample]) -> Measurement:
    """One run from idle, with the CPU time of the system, its helpers and the bystanders."""
    pids = process_tree(system.pid)
    helpers = list(system.helper_pids)
    others = [p for b in bystanders for p in (*process_tree(b.pid), *b.helper_pids)]
    before = (total_cpu_seconds(pids), total_cpu_seconds(helpers), total_cpu_seconds(others))
    sample = load()
    after = (total_cpu_seconds(pids), total_cpu_seconds(helpers), total_cpu_seconds(others))
    wait_idle(pids)  # what a stopped generator left in flight must not spill over
    return Measurement(sample, *(a - b for a, b in zip(after, before, strict=True)))


def burst_size(warmup: Sample, duration: float, connections: int) -> int:
    """Requests for a fixed-count run of about ``duration`` seconds, from a warm-up's rate."""
    rate = warmup.requests / warmup.duration_s if warmup.duration_s else 0.0
    return max(MIN_BURST_ROUNDS * connections, round(rate * duration))


def measure_once(
    system: System,
    stream: bool,
    connections: int,
    duration: float,
    warmup: float,
    generator: Generator,
    ttfb: bool = False,
    bystanders: Sequence[System] = (),
) -> Measurement:
    """Warm up, then measure.

    At concurrency 1: a warm-up run, then a run of ``duration`` seconds. At higher
    concurrency: the warm-up run (fixed duration) sizes a fixed-count run
    (``bench.peers.burst``) of about ``duration`` seconds, which gives requests/s, CPU
    per request and latency percentiles without the ramp-up bias of a fixed-duration run.
    """
    target = system.target(stream)
    if connections == 1:
        if warmup > 0:
            run(target, Load(connections, warmup, 0.0), generator, cpu=SIDE_CPU, ttfb=ttfb)
            wait_idle(process_tree(system.pid))
        load = Load(connections, duration, 0.0)
        return _timed(
            system, bystanders, lambda: run(target, load, generator, cpu=SIDE_CPU, ttfb=ttfb)
        )
    warm = Load(connections, max(warmup, 1.0), 0.0)
    size = burst_size(run(target, warm, generator, cpu=SIDE_CPU), duration, connections)
    wait_idle(process_tree(system.pid))
    timeout = max(10 * duration, 120.0)
    return _timed(
        system,
        bystanders,
        lambda: run_burst(target, connections, size, timeout, cpu=SIDE_CPU),
    )


def _progress(round_: int, repeat: int, system: System, key: Key, m: Measurement) -> None:
    s = m.sample
    extra = f" ttfb p50 {s.ttfb_p50_ms:.3f} ms" if key[3] == "ttfb" and s.ttfb_p50_ms else ""
    print(
        f"round {round_ + 1}/{repeat} {system.name:8} {'stream' if key[1] else 'json':6} "
        f"{key[3]:4} c={key[2]:<2} [{s.generator}] {s.rps:9,.0f}/s p50 {s.p50_ms:8.3f} ms "
        f"p99 {s.p99_ms:8.3f} ms{extra} cpu {m.cpu_us_per_request():7.1f} us/req "
        f"errors {s.errors}",
        file=sys.stderr,
        flush=True,
    )


def measure(
    systems: Sequence[System],
    repeat: int,
    duration: float,
    warmup: float,
    generator: Generator,
    modes: tuple[bool, ...] = (False, True),
    alive: Callable[[System], str | None] = lambda _: None,
) -> Results:
    """Every system, every round; a system that dies is reported and dropped."""
    results = Results()
    for round_ in range(repeat):
        for system in rotated(systems, round_):
            if system.name in results.failures:
                continue
            try:
                for stream in modes:
                    plans = [(1, "load"), (HIGH_CONCURRENCY, "load")]
                    if stream:
                        plans.append((1, "ttfb"))
                    for connections, kind in plans:
                        m = measure_once(
                            system,
                            stream,
                            connections,
                            duration,
                            warmup,
                            generator,
                            ttfb=kind == "ttfb",
                            bystanders=[
                                s for s in systems if s is not system and s.name != "direct"
                            ],
                        )
                        key = (system.name, stream, connections, kind)
                        results.add(key, m)
                        _progress(round_, repeat, system, key, m)
                problem = alive(system)
                if problem:
                    raise RuntimeError(problem)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                results.failures[system.name] = f"failed in round {round_ + 1}: {exc}"
                print(f"{system.label}: {results.failures[system.name]}", file=sys.stderr)
    return results
