"""The scale-out measurement: three gateway deployments on one stack, measured in turns."""

from __future__ import annotations

import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.machine import load_average
from bench.processes import Children
from bench.procfs import pids_by_name
from bench.scaleout.exact import ExactOutcome, hammer, outcome
from bench.soak.cpu import CpuUsage, snapshot, usage
from bench.soak.driver import Driver, LoadResult
from bench.soak.stack import (
    GENEROUS_BUDGETS,
    GENEROUS_LIMITS,
    PUBLIC_MODEL,
    Deployment,
    Stack,
    StackOptions,
)
from bench.soak.workload import Sessions, WorkloadSpec

#: Effectively unbounded: a throughput phase ends at its duration.
_UNBOUNDED = 10**9


@dataclass(frozen=True)
class Config:
    """One way to run more than one gateway process."""

    name: str
    label: str
    workers: int
    replicas: int

    @property
    def processes(self) -> int:
        """Serving processes in total."""
        return self.workers * self.replicas


CONFIGS = (
    Config("one", "1 process", 1, 1),
    Config("workers", "2 processes (`serve --workers 2`)", 2, 1),
    Config("replicas", "2 replicas (one Redis)", 1, 2),
)


@dataclass(frozen=True)
class ScaleOptions:
    """What the measurement does."""

    duration_s: float = 10.0
    warmup_s: float = 2.0
    repeat: int = 3
    concurrency: int = 64
    sessions: int = 2000
    limit_rpm: int = 50
    limit_demand: int = 400
    limit_repeat: int = 3
    upstreams: int = 2
    log_level: str = "warning"


@dataclass(frozen=True)
class Sample:
    """One throughput phase of one config."""

    config: str
    result: LoadResult
    cpu: CpuUsage
    serving_pids: tuple[int, ...]

    @property
    def rps(self) -> float:
        """Requests answered per second."""
        return self.result.rps

    def per_request_us(self, group: str) -> float:
        """CPU µs per answered request spent by ``group``."""
        done = self.result.completed
        return self.cpu.groups.get(group, 0.0) / done * 1e6 if done else float("nan")

    @property
    def process_cores(self) -> list[float]:
        """Each serving process's CPU seconds per wall second."""
        spent = self.cpu.per_pid.get("gateway", {})
        return [spent.get(pid, 0.0) / self.cpu.wall_s for pid in self.serving_pids]


@dataclass
class ScaleResult:
    """Everything the report needs."""

    options: ScaleOptions
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    exact: dict[str, list[ExactOutcome]] = field(default_factory=dict)
    load_before: str = ""
    load_after: str = ""

    def median(self, config: str, value: Callable[[Sample], float]) -> float:
        """The median of ``value`` over a config's rounds."""
        return statistics.median(value(s) for s in self.samples[config])


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _groups(
    stack: Stack, measured: Deployment, idle: Sequence[Deployment]
) -> dict[str, Callable[[], Sequence[int]]]:
    """The process groups whose CPU time is accounted while ``measured`` is loaded."""
    return {
        "gateway": lambda: measured.all_pids,
        "idle gateways": lambda: [pid for d in idle for pid in d.all_pids],
        "load generator": lambda: [os.getpid()],
        "upstreams": lambda: stack.upstream_pids,
        "redis": lambda: pids_by_name("redis-server"),
        "postgres": lambda: pids_by_name("postgres"),
    }


def _throughput(
    deployment: Deployment,
    make: Callable[[int], bytes],
    options: ScaleOptions,
    groups: dict[str, Callable[[], Sequence[int]]],
) -> tuple[LoadResult, CpuUsage]:
    ports = deployment.ports
    warm = Driver(ports, make, _UNBOUNDED, options.concurrency, options.warmup_s)
    asyncio.run(warm.run())
    driver = Driver(ports, make, _UNBOUNDED, options.concurrency, options.duration_s)
    before = snapshot(groups)
    result = asyncio.run(driver.run())
    after = snapshot(groups)
    return result, usage(before, after)


def _exact_phase(stack: Stack, deployment: Deployment, options: ScaleOptions) -> ExactOutcome:
    key = stack.new_key(key_limits={"rpm": options.limit_rpm}, name="exact")
    pids = deployment.serving_pids
    groups: dict[str, Callable[[], Sequence[int]]] = {"gateway": lambda: pids}
    before = snapshot(groups)
    result = hammer(
        deployment.ports, key, PUBLIC_MODEL, options.limit_demand, min(128, options.limit_demand)
    )
    spent = usage(before, snapshot(groups)).per_pid["gateway"]
    return outcome(options.limit_rpm, options.limit_demand, result, [spent[p] for p in pids])


def run_scaleout(options: ScaleOptions, configs: Sequence[Config] = CONFIGS) -> ScaleResult:
    """Start the stack and every config's gateways, measure them in turns, stop everything."""
    scale = ScaleResult(options, load_before=load_average())
    with Children() as children:
        stack_options = StackOptions(
            upstreams=options.upstreams, upstream_cpu=None, log_level=options.log_level
        )
        with Stack(children, stack_options) as stack:
            _say(f"starting {options.upstreams} canned workers and {len(configs)} deployments")
            stack.start()
            deployments = {
                c.name: stack.deploy(c.name, workers=c.workers, replicas=c.replicas)
                for c in configs
            }
            api_key = stack.new_key(
                tenant_limits=GENEROUS_LIMITS, key_limits=GENEROUS_LIMITS, budgets=GENEROUS_BUDGETS
            )
            spec = WorkloadSpec(model=PUBLIC_MODEL)
            sessions = Sessions(options.sessions, spec, api_key, run_tag=f"x{stack.run_id}")
            numbers = itertools.count()

            def make(_: int) -> bytes:
                number = next(numbers)
                key = f"{stack.run_id}-{number}" if number % 20 == 0 else None
                return sessions.request(number, key)

            for round_ in range(options.repeat):
                order = list(configs) if round_ % 2 == 0 else list(reversed(configs))
                for config in order:
                    deployment = deployments[config.name]
                    idle = [d for d in deployments.values() if d is not deployment]
                    groups = _groups(stack, deployment, idle)
                    result, cpu = _throughput(deployment, make, options, groups)
                    sample = Sample(config.name, result, cpu, tuple(deployment.serving_pids))
                    scale.samples.setdefault(config.name, []).append(sample)
                    cores = " + ".join(f"{c:.2f}" for c in sample.process_cores)
                    cpu_us = sample.per_request_us("gateway")
                    _say(
                        f"round {round_ + 1}/{options.repeat} {config.label:36} "
                        f"{sample.rps:7,.0f} req/s  gateway {cpu_us:5,.0f} µs/req  busy {cores}"
                        f"  machine {cpu.machine_busy_s / cpu.wall_s:.2f} of "
                        f"{cpu.machine_cores} cores  failed {result.errors}"
                    )
                    for proc in (g.proc for d in deployments.values() for g in d.replicas):
                        if proc.poll() is not None:
                            raise RuntimeError(f"a gateway exited with {proc.returncode}")
            for config in configs:
                for _ in range(options.limit_repeat):
                    found = _exact_phase(stack, deployments[config.name], options)
                    scale.exact.setdefault(config.name, []).append(found)
                    spent = " + ".join(f"{s:.2f}" for s in found.cpu_by_process_s)
                    _say(
                        f"limit {config.label:36} rpm {found.rpm}, {found.demand} sent: "
                        f"{found.ok} ok, {found.limited} x 429, {found.other} other in "
                        f"{found.elapsed_s:.2f} s (CPU s per process {spent}) -> {found.verdict}"
                    )
                    time.sleep(0.2)
    scale.load_after = load_average()
    return scale
