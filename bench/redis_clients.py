"""The admission's Redis calls through two clients: redis-py (``redis.asyncio`` with
hiredis) against the gateway's hand-written RESP client (``tollway/resp.py``).

What is timed is the gateway's hot-path use of Redis, alone: per request one
``EVALSHA`` of the admission script (:data:`gateway.limits.scripts.ADMIT`) and one of
the settlement script, with the keys and arguments the limits planner makes for a key
with rpm, tpm, concurrency and a daily budget (spread over 16 tenants and 64 keys).
Both clients send the same bytes to the same private ``redis-server``: redis-py
with the settings the gateway gave it (a blocking pool, socket timeouts, no
retries; see :func:`redis_py`), the RESP client as the gateway calls it (the
admission ``urgent``, the settlement not deferred). Per round and client:

- c=1: admission + settlement one at a time, p50 and p99 of the pair in µs;
- c=64: 64 concurrent callers, pairs/s and this process's CPU µs per pair.

The benchmark process is pinned to core 0, Redis to core 1; rounds alternate the
order of the clients, and the report gives medians and same-round ratios.

The RESP client is loaded from a source tree's ``tollway/resp.py`` (this one by
default), so an earlier or changed version can be measured too:

    python -m bench.redis_clients [--resp-from DIR] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from bench.gateway_admin import start_redis
from bench.limits.measure import FULL_BUDGET, FULL_LIMITS
from bench.machine import describe, load_average, package_versions
from bench.processes import Children
from gateway.limits import scripts
from gateway.limits.plan import Planner
from gateway.limits.specs import WINDOW_MS, AdmissionRequest

ROOT = Path(__file__).resolve().parent.parent
HIGH = 64
KEYS = 64
TIMEOUT_S = 2.0

#: one Redis call: (sha, script, keys, args, urgent) -> reply
Evaluate = Callable[[str, str, tuple[str, ...], tuple[str | int, ...], bool], Awaitable[Any]]


@dataclass
class Figures:
    """One client's figures from one round."""

    p50_us: float
    p99_us: float
    pairs_per_s: float
    cpu_us: float


class Calls:
    """The admission and settlement calls of the gateway, for precomputed plans."""

    def __init__(self, prefix: str) -> None:
        planner = Planner(prefix)
        self.admit_sha = hashlib.sha1(scripts.ADMIT.encode()).hexdigest()
        self.settle_sha = hashlib.sha1(scripts.SETTLE.encode()).hexdigest()
        now = int(time.time() * 1000)
        self.plans = []
        for k in range(KEYS):
            request = AdmissionRequest(
                f"r{k}",
                f"tenant-{k % 16}",
                f"key-{k}",
                tenant_limits=FULL_LIMITS,
                key_limits=FULL_LIMITS,
                tenant_budget=FULL_BUDGET,
                key_budget=FULL_BUDGET,
                estimated_tokens=500,
                reserve_micro_usd=2_000,
            )
            self.plans.append(planner.plan(request, now))
        self.fixed = f"{WINDOW_MS},60000"

    def op(self, evaluate: Evaluate) -> Callable[[int], Awaitable[None]]:
        """Admission then settlement of the ``n``-th request, through ``evaluate``."""

        async def run(n: int) -> None:
            plan = self.plans[n % KEYS]
            now = int(time.time() * 1000)
            member = f"r{n}#bench"
            numbers = (
                f"{self.fixed},{plan.tokens},{plan.reserve},"
                f"{plan.day_end_ms - now},{plan.month_end_ms - now}"
            )
            args = (now, member, plan.day, plan.month, numbers, plan.layout.spec)
            await evaluate(self.admit_sha, scripts.ADMIT, plan.layout.keys, args, True)
            numbers = (
                f"{self.fixed},-100,{plan.reserve},1500,"
                f"{plan.day_end_ms - now},{plan.month_end_ms - now}"
            )
            args = (now, member, plan.day, plan.month, numbers, plan.layout.spec)
            await evaluate(self.settle_sha, scripts.SETTLE, plan.layout.keys, args, False)

        return run


def redis_py(url: str) -> Redis:
    """redis-py as the gateway configured it when it used redis-py for its limits."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=512,
        timeout=TIMEOUT_S,
        socket_timeout=TIMEOUT_S,
        socket_connect_timeout=TIMEOUT_S,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    return Redis.from_pool(pool)


def load_resp(tree: Path) -> ModuleType:
    """``tollway/resp.py`` of ``tree``, imported under its own name."""
    path = tree / "tollway" / "resp.py"
    spec = importlib.util.spec_from_file_location("bench_resp_client", path)
    if spec is None or spec.loader is None or not path.exists():
        raise SystemExit(f"no RESP client at {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def measure(op: Callable[[int], Awaitable[None]], requests: int) -> Figures:
    """c=1 latency of ``requests`` pairs, then c=64 throughput and CPU of as many."""
    for n in range(200):
        await op(n)
    samples = []
    clock = time.perf_counter_ns
    for n in range(requests):
        started = clock()
        await op(n)
        samples.append((clock() - started) / 1000)
    samples.sort()
    counter = iter(range(requests * 4))

    async def worker() -> None:
        for n in counter:
            await op(n)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(HIGH)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Figures(
        samples[len(samples) // 2],
        samples[min(len(samples) - 1, int(0.99 * len(samples)))],
        requests * 4 / wall,
        cpu * 1e6 / (requests * 4),
    )


async def main_async(args: argparse.Namespace, url: str) -> str:
    resp = load_resp(args.resp_from)
    prefix = f"bench-redis-clients:{uuid.uuid4().hex[:8]}:"
    calls = Calls(prefix)
    py_client = redis_py(url)
    lean = resp.RespClient.from_url(url, timeout_s=TIMEOUT_S)

    async def via_redis_py(
        sha: str, _script: str, keys: tuple[str, ...], argv: tuple[str | int, ...], _u: bool
    ) -> Any:
        return await py_client.evalsha(sha, len(keys), *keys, *argv)

    async def via_resp(
        sha: str, _script: str, keys: tuple[str, ...], argv: tuple[str | int, ...], urgent: bool
    ) -> Any:
        return await lean.execute("EVALSHA", sha, len(keys), *keys, *argv, urgent=urgent)

    for script in (scripts.ADMIT, scripts.SETTLE):
        await py_client.script_load(script)
    clients: list[tuple[str, Callable[[int], Awaitable[None]]]] = [
        ("redis-py + hiredis", calls.op(via_redis_py)),
        ("tollway/resp.py", calls.op(via_resp)),
    ]
    runs: dict[str, list[Figures]] = {name: [] for name, _ in clients}
    try:
        for round_ in range(args.repeat):
            order = clients if round_ % 2 == 0 else clients[::-1]
            for name, op in order:
                figures = await measure(op, args.requests)
                runs[name].append(figures)
                print(f"round {round_ + 1} {name}: {figures}", file=sys.stderr)
    finally:
        await lean.aclose()
        await py_client.aclose()
    return report(runs, args)


def report(runs: dict[str, list[Figures]], args: argparse.Namespace) -> str:
    """Medians per client and of the same-round ratios (resp.py / redis-py)."""
    base, new = runs["redis-py + hiredis"], runs["tollway/resp.py"]
    rows = (
        ("c=1 admission + settlement p50 µs", lambda f: f.p50_us, 1),
        ("c=1 admission + settlement p99 µs", lambda f: f.p99_us, 1),
        (f"c={HIGH} pairs/s", lambda f: f.pairs_per_s, 0),
        (f"c={HIGH} CPU µs/pair (client process)", lambda f: f.cpu_us, 1),
    )
    versions = package_versions(("redis", "hiredis", "uvloop"))
    lines = [
        f"Command: `python -m bench.redis_clients --repeat {args.repeat} "
        f"--requests {args.requests}`. Machine: {describe().rstrip('.')}; packages "
        f"{versions}; load average at the end: {load_average()}.",
        "",
        "| figure | redis-py + hiredis | resp.py | resp.py / redis-py (same-round median) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for label, get, digits in rows:
        b = statistics.median(get(f) for f in base)
        n = statistics.median(get(f) for f in new)
        ratio = statistics.median(get(x) / get(y) for x, y in zip(new, base, strict=True))
        lines.append(f"| {label} | {b:,.{digits}f} | {n:,.{digits}f} | {ratio:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--resp-from", type=Path, default=ROOT, help="a source tree with tollway/resp.py"
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000, help="c=1 pairs per round")
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {0})
    try:
        import uvloop

        runner: Callable[..., Any] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency
        runner = asyncio.run
    with Children() as children:
        url = start_redis(children)
        print(runner(main_async(args, url)))  # a private Redis: nothing to clean up


if __name__ == "__main__":
    main()
