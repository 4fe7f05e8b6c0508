"""Entry point: ``python -m bench.limits``; see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio import Redis

from bench.limits.measure import (
    Scenario,
    Timing,
    admit_only,
    admit_settle,
    latency,
    median_timing,
    throughput,
)
from bench.machine import cpu_model, load_average, package_versions
from gateway.limits import LimitsConfig, MemoryAdmission, RedisAdmission
from gateway.sharedstate import connect_redis

RESULTS = Path(__file__).with_name("RESULTS.md")
PACKAGES = ("redis", "hiredis", "uvloop", "aiolimiter", "pydantic")

Op = Callable[[int], Awaitable[None]]


async def _cleanup(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
    for start in range(0, len(keys), 1000):
        await client.delete(*keys[start : start + 1000])


async def measure(args: argparse.Namespace) -> tuple[list[tuple[str, Timing]], str]:
    prefix = f"bench-limits:{uuid.uuid4().hex[:8]}:"
    config = LimitsConfig(key_prefix=prefix, clock="local", redis_timeout_s=2.0)
    client = connect_redis(args.redis_url, timeout_s=config.redis_timeout_s)
    inspector = Redis.from_url(args.redis_url)  # version and cleanup, off the measurement
    info = await inspector.info("server")
    redis_version = str(info.get("redis_version", "?"))
    redis_engine = RedisAdmission(client, config)
    memory_engine = MemoryAdmission(config)

    async def ping(_: int) -> None:
        await client.execute("PING")

    rows: list[tuple[str, Op, Op]] = [
        ("no limit (fast path, baseline)", *_ops(Scenario("none", redis_engine, False, True))),
        ("in-process engine, every limit + budget", *_ops(Scenario("mem", memory_engine, True))),
        ("Redis PING (one round trip, reference)", ping, ping),
        ("Redis engine, rpm + tpm (tenant and key)", *_ops(Scenario("rates", redis_engine, False))),
        ("Redis engine, every limit + budget", *_ops(Scenario("full", redis_engine, True))),
    ]
    results: dict[str, list[Timing]] = {}
    try:
        for round_index in range(args.rounds):
            order = rows if round_index % 2 == 0 else list(reversed(rows))
            for name, admit_op, settle_op in order:
                for label, op in (("admit", admit_op), ("admit + settle", settle_op)):
                    if op is ping and label != "admit":
                        continue
                    p50, p99 = await latency(op, args.requests)
                    ops = await throughput(op, args.requests, args.concurrency)
                    results.setdefault(f"{name}|{label}", []).append(Timing(p50, p99, ops))
                await _cleanup(inspector, prefix)
    finally:
        await _cleanup(inspector, prefix)
        await client.aclose()
        await inspector.aclose()
    return [(key, median_timing(values)) for key, values in results.items()], redis_version


def _ops(scenario: Scenario) -> tuple[Op, Op]:
    return admit_only(scenario), admit_settle(scenario)


def render(rows: list[tuple[str, Timing]], args: argparse.Namespace, redis_version: str) -> str:
    baseline = {
        label: t for key, t in rows for name, label in [key.split("|")] if "baseline" in name
    }
    lines = [
        "| scenario | operation | p50 µs | p99 µs | p50 added vs baseline µs | p50 ratio | ops/s "
        f"at concurrency {args.concurrency} |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, timing in sorted(rows, key=lambda r: r[0].split("|")[1]):
        name, label = key.split("|")
        base = baseline.get(label)
        added = f"{timing.p50_us - base.p50_us:.1f}" if base else ""
        ratio = f"{timing.p50_us / base.p50_us:.1f}×" if base else ""
        lines.append(
            f"| {name} | {label} | {timing.p50_us:.1f} | {timing.p99_us:.1f} | {added} | "
            f"{ratio} | {timing.ops_per_s:,.0f} |"
        )
    packages = ", ".join(f"{k} {v}" for k, v in package_versions(PACKAGES).items())
    machine = (
        f"`nproc` {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Redis server {redis_version} on loopback; "
        f"packages: {packages}; event loop: uvloop; load average at the end: {load_average()}."
    )
    command = (
        f"python -m bench.limits --requests {args.requests} --rounds {args.rounds} "
        f"--concurrency {args.concurrency}"
    )
    return "\n".join(
        [
            f"Command: `{command}`",
            "",
            f"Machine: {machine}",
            "",
            f"Medians over {args.rounds} rounds (order alternating) of {args.requests} "
            "sequential operations each (p50/p99), then the same count with "
            f"{args.concurrency} concurrent callers (ops/s); one process, one connection pool.",
            "",
            *lines,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        rows, version = asyncio.run(measure(args))
    else:
        rows, version = uvloop.run(measure(args))
    report = render(rows, args, version)
    print(report)
    if args.write:
        header = RESULTS.read_text().split("<!-- results -->")[0] if RESULTS.exists() else ""
        RESULTS.write_text(f"{header}<!-- results -->\n\n{report}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
