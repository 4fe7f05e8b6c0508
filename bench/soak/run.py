"""One soak run: start the stack, push the sessions through it, watch the gateway's RSS."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.machine import load_average
from bench.processes import Children, python
from bench.procfs import pids_by_name
from bench.soak.cpu import CpuUsage, snapshot, usage
from bench.soak.driver import Driver, LoadResult
from bench.soak.heapdiff import report as heap_report
from bench.soak.heapdiff import request_dump
from bench.soak.memory import MemorySummary, RssSample, RssSampler, summarize
from bench.soak.stack import (
    GENEROUS_BUDGETS,
    GENEROUS_LIMITS,
    PUBLIC_MODEL,
    Stack,
    StackOptions,
    UpstreamKind,
)
from bench.soak.workload import Sessions, WorkloadSpec, request_head

GATEWAY_CPU = 0
LOAD_CPU = 1
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class SoakOptions:
    """What the soak does."""

    requests: int = 1_000_000
    sessions: int = 10_000
    concurrency: int = 64
    cap_bytes: int = 4096
    warmup_fraction: float = 0.1
    idempotency_every: int = 20
    max_seconds: float = 1800.0
    upstream_kind: UpstreamKind = "canned"
    upstreams: int = 2
    debug_memory: bool = False
    trace_frames: int = 0
    ledger_wait_s: float = 300.0
    statement_cache: int | None = None
    log_level: str = "warning"

    @property
    def warmup_requests(self) -> int:
        """Warm-up ends after this many requests: a share of the run, every session seen."""
        return max(int(self.requests * self.warmup_fraction), self.sessions)


@dataclass
class SoakResult:
    """Everything the report needs."""

    options: SoakOptions
    load: LoadResult
    memory: MemorySummary
    cpu: CpuUsage
    expected_ledger_rows: int
    ledger_rows: int | None
    ledger_wait_s: float
    load_before: str
    load_after: str
    samples: list[RssSample] = field(default_factory=list)
    heap: str | None = None
    notes: list[str] = field(default_factory=list)


def _check(url: str, api_key: str) -> str:
    """One request through the gateway before the run; fail loudly when it is not 200."""
    body = json.dumps(
        {"model": PUBLIC_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    ).encode()
    head = request_head(api_key, "coordinator", "soak-check").decode().split("\r\n")[1:]
    headers = dict(line.split(": ", 1) for line in head if line)
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
    try:
        with _OPENER.open(request, timeout=10) as response:
            route = response.headers.get("x-tollway-route")
            cost = response.headers.get("x-tollway-cost-usd")
            return f"check request ok: route {route}, cost {cost} USD"
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"gateway answered {exc.code}: {exc.read()[:500]!r}") from None


def _pin_self(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and cpu in os.sched_getaffinity(0):
        os.sched_setaffinity(0, {cpu})


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _drive(
    driver: Driver,
    sampler: RssSampler,
    warmup_requests: int,
    on_warm: Callable[[], None] | None,
    progress_s: float = 10.0,
) -> LoadResult:
    """Run the driver; print progress; call ``on_warm`` once warm-up is over."""
    task = asyncio.ensure_future(driver.run())
    last_t, last_n, warm_done = time.monotonic(), 0, False
    while not task.done():
        await asyncio.wait([task], timeout=progress_s if warm_done else 1.0)
        now, done = time.monotonic(), driver.completed
        if not warm_done and done >= warmup_requests:
            warm_done = True
            if on_warm is not None:
                await asyncio.to_thread(on_warm)
        if now - last_t >= progress_s or task.done():
            rss = sampler.samples[-1].total_kib / 1024 if sampler.samples else float("nan")
            _say(
                f"  {done:>9,} done  {(done - last_n) / (now - last_t):8,.0f} req/s  "
                f"gateway RSS {rss:7.1f} MiB  failed {failed(driver.result):,}"
            )
            last_t, last_n = now, done
    return task.result()


def failed(result: LoadResult) -> int:
    """Requests answered with a non-2xx status or not answered at all, so far."""
    return result.completed - result.ok + result.transport_errors


def _wait_for_ledger(stack: Stack, expected: int, timeout_s: float) -> tuple[int | None, float]:
    """Poll the ledger until it holds ``expected`` rows, or stops growing for a while."""
    started = time.monotonic()
    rows, last_change, last_rows = None, started, -1
    while time.monotonic() - started < timeout_s:
        try:
            rows = stack.ledger_rows()
        except Exception as exc:  # noqa: BLE001 - reported, not fatal to the soak
            _say(f"ledger count failed: {exc}")
            return None, time.monotonic() - started
        if rows >= expected:
            break
        if rows != last_rows:
            last_rows, last_change = rows, time.monotonic()
        elif time.monotonic() - last_change > 60:
            break
        time.sleep(1.0)
    return rows, time.monotonic() - started


def run_soak(options: SoakOptions) -> SoakResult:
    """Start everything, run the soak, stop everything; returns the measurements."""
    load_before = load_average()
    with Children() as children:
        heap_dir = children.log_dir / "heap"
        launcher = None
        if options.debug_memory:
            launcher = [
                python(),
                "-m",
                "bench.soak.traced",
                "--out",
                str(heap_dir),
                "--frames",
                str(options.trace_frames),
            ]
        stack_options = StackOptions(
            upstreams=options.upstreams,
            upstream_kind=options.upstream_kind,
            upstream_cpu=LOAD_CPU,
            log_level=options.log_level,
            gateway_launcher=launcher,
            statement_cache=options.statement_cache,
        )
        # Tracing slows the gateway many times; a Redis call that then takes longer
        # than the default 0.25 s must not turn into the Redis-outage fallback.
        overlay = {"limits": {"redis_timeout_s": 2.0}} if options.debug_memory else {}
        with Stack(children, stack_options) as stack:
            _say(f"starting {options.upstreams} {options.upstream_kind} workers and the gateway")
            stack.start()
            (gateway,) = stack.deploy("soak", cpu=GATEWAY_CPU, overlay=overlay).replicas
            api_key = stack.new_key(
                tenant_limits=GENEROUS_LIMITS, key_limits=GENEROUS_LIMITS, budgets=GENEROUS_BUDGETS
            )
            _say(_check(gateway.url, api_key))
            _pin_self(LOAD_CPU)
            spec = WorkloadSpec(model=PUBLIC_MODEL, cap_bytes=options.cap_bytes)
            sessions = Sessions(options.sessions, spec, api_key, run_tag=f"s{stack.run_id}")
            every = options.idempotency_every

            def make(number: int) -> bytes:
                key = f"{stack.run_id}-{number}" if every and number % every == 0 else None
                return sessions.request(number, key)

            driver = Driver(
                [gateway.port],
                make,
                options.requests,
                options.concurrency,
                options.max_seconds,
                timeout_s=300.0 if options.debug_memory else 30.0,
            )
            pid = gateway.serving_pids[0]
            dumps: list[int] = []

            def dump(trim: bool = False) -> None:
                dumps.append(len(dumps) + 1)
                _say(f"  heap dump {dumps[-1]} (gateway paused while it writes)")
                request_dump(pid, heap_dir, dumps[-1], trim=trim)

            groups: dict[str, Callable[[], Sequence[int]]] = {
                "gateway": lambda: [pid],
                "load generator": lambda: [os.getpid()],
                "upstreams": lambda: stack.upstream_pids,
                "redis": lambda: pids_by_name("redis-server"),
                "postgres": lambda: pids_by_name("postgres"),
            }
            cpu_before = snapshot(groups)
            _say(
                f"soak: {options.requests:,} requests, {options.sessions:,} sessions, "
                f"concurrency {options.concurrency}; warm-up ends after "
                f"{options.warmup_requests:,} requests"
            )
            with RssSampler([pid], lambda: driver.completed) as sampler:
                load = asyncio.run(
                    _drive(
                        driver,
                        sampler,
                        options.warmup_requests,
                        dump if options.debug_memory else None,
                    )
                )
                sampler.sample()
            cpu_used = usage(cpu_before, snapshot(groups))
            heap = None
            if options.debug_memory and dumps:
                dump(trim=True)
                heap = heap_report(heap_dir, 1, dumps[-1])
            if gateway.proc.poll() is not None:
                raise RuntimeError(f"the gateway died:\n{children.log_tail('gateway-0')}")
            expected = load.sent + 1  # the check request is metered too
            _say(f"waiting for the ledger to hold {expected:,} rows")
            rows, waited = _wait_for_ledger(stack, expected, options.ledger_wait_s)
            notes = []
            tail = children.log_tail("gateway-0", 20)
            if "Traceback" in tail or "ERROR" in tail:
                notes.append("gateway log tail:\n" + tail)
            memory = summarize(sampler.samples, options.warmup_requests)
            return SoakResult(
                options=options,
                load=load,
                memory=memory,
                cpu=cpu_used,
                expected_ledger_rows=expected,
                ledger_rows=rows,
                ledger_wait_s=waited,
                load_before=load_before,
                load_after=load_average(),
                samples=list(sampler.samples),
                heap=heap,
                notes=notes,
            )
