"""Entry point: ``python -m bench.catalog``; see the package docstring."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path

import aiohttp
import orjson

from backends.base import UpstreamRequest
from backends.catalog import CatalogBackend
from bench.catalog.measure import (
    Call,
    Timing,
    backend_path,
    catalog_entry,
    measure_round,
    median_timing,
    pool_path,
    upstream_request,
)
from bench.machine import cpu_model, load_average, package_versions
from bench.processes import Children, free_port, python
from bench.upstream import install_uvloop

RESULTS = Path(__file__).with_name("RESULTS.md")
PACKAGES = ("litellm", "openai", "httpx", "aiohttp", "uvloop", "orjson", "pydantic")
PATHS = ("pool path (aiohttp POST, baseline)", "catalog, direct_openai", "catalog, litellm")


async def _verify_stream(backend: CatalogBackend, request: UpstreamRequest) -> None:
    response = await backend.send(request)
    raw = b""
    try:
        async for block in response.chunks():
            raw += block
    finally:
        await response.aclose()
    events = [e for e in raw.split(b"\n\n") if e.strip()]
    if events[-1] != b"data: [DONE]" or b'"usage"' not in events[-2]:
        raise RuntimeError(f"{backend.route}: stream lacks usage or [DONE]: {events[-2:]!r}")
    usage = orjson.loads(events[-2][6:])["usage"]
    if not usage.get("prompt_tokens"):
        raise RuntimeError(f"{backend.route}: empty usage {usage!r}")


async def measure(args: argparse.Namespace, base: str) -> tuple[dict[str, list[Timing]], float]:
    """Every path, streaming and not, round after round (order alternating)."""
    began = time.perf_counter()
    litellm_backend = CatalogBackend("bench-litellm", catalog_entry(base, "litellm"), api_key="k")
    await litellm_backend.start()  # imports litellm: the one-off start-up cost
    import_s = time.perf_counter() - began
    direct_backend = CatalogBackend(
        "bench-direct", catalog_entry(base, "direct_openai"), api_key="k"
    )
    await direct_backend.start()
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, limit_per_host=256, keepalive_timeout=60),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )
    t = direct_backend.config.timeouts
    timeout = aiohttp.ClientTimeout(total=t.total_s, sock_connect=t.connect_s, sock_read=t.read_s)
    paths: dict[str, Call] = {
        PATHS[0]: pool_path(session, base, timeout),
        PATHS[1]: backend_path(direct_backend),
        PATHS[2]: backend_path(litellm_backend),
    }
    results: dict[str, list[Timing]] = {}
    try:
        for backend in (direct_backend, litellm_backend):
            await _verify_stream(backend, upstream_request(stream=True))
        for stream in (False, True):
            request = upstream_request(stream)
            for call in paths.values():
                for _ in range(args.warmup):
                    await call(request)
        for round_no in range(args.rounds):
            order = list(paths.items())
            if round_no % 2:
                order.reverse()
            for stream in (False, True):
                request = upstream_request(stream)
                for name, call in order:
                    timing = await measure_round(call, request, args.requests, args.workers)
                    results.setdefault(f"{stream}|{name}", []).append(timing)
                    # litellm finishes its logging and cost hooks in the background.
                    await asyncio.sleep(args.settle)
            print(f"round {round_no + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        await session.close()
        await direct_backend.stop()
        await litellm_backend.stop()
    return results, import_s


def table(results: dict[str, list[Timing]], workers: int) -> str:
    """The markdown table of medians, with ratios against the baseline of the same mode."""
    lines = [
        "| mode | path | p50 µs | p99 µs | added p50 vs pool µs | p50 ratio "
        f"| req/s at concurrency {workers} | req/s ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stream in (False, True):
        mode = "streaming" if stream else "non-streaming"
        base = median_timing(results[f"{stream}|{PATHS[0]}"])
        for name in PATHS:
            t = median_timing(results[f"{stream}|{name}"])
            lines.append(
                f"| {mode} | {name} | {t.p50_us:,.0f} | {t.p99_us:,.0f} | "
                f"{t.p50_us - base.p50_us:,.0f} | {t.p50_us / base.p50_us:.2f}× | "
                f"{t.rps:,.0f} | {t.rps / base.rps:.2f}× |"
            )
    return "\n".join(lines)


def _pin_self(cpu: int) -> bool:
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print (or, with ``--write``, record) the results."""
    parser = argparse.ArgumentParser(prog="python -m bench.catalog")
    parser.add_argument("--requests", type=int, default=400, help="requests per path and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=16, help="callers for the req/s figure")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds between paths")
    parser.add_argument("--write", action="store_true", help=f"write {RESULTS.name}")
    args = parser.parse_args(argv)
    pin = (os.cpu_count() or 1) >= 2
    loop_name = install_uvloop()
    port = free_port()
    with Children() as children:
        proc = children.start(
            "upstream",
            [python(), "-m", "bench.upstream", "--port", str(port)],
            cpu=1 if pin else None,
        )
        children.wait_ready("upstream", f"http://127.0.0.1:{port}/health", proc=proc)
        pinned = _pin_self(0) if pin else False
        results, import_s = asyncio.run(measure(args, f"http://127.0.0.1:{port}/v1"))
    versions = ", ".join(f"{k} {v}" for k, v in package_versions(PACKAGES).items())
    command = "python -m bench.catalog " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k != "write"
    )
    report = "\n\n".join(
        [
            f"Command: `{command}`",
            f"Machine: `nproc` {os.cpu_count()}, CPU {cpu_model()}, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}; event loop: {loop_name}; "
            f"packages: {versions}; load average at the end: {load_average()}; "
            f"client pinned to core 0 and upstream to core 1: {pinned}.",
            f"Medians over {args.rounds} rounds (order alternating) of {args.requests} "
            f"sequential requests per path (p50/p99), then {args.requests} requests from "
            f"{args.workers} concurrent callers (req/s); one process, pooled connections.",
            table(results, args.workers),
            f"One-off: importing litellm (first `CatalogBackend.start` of a litellm entry) "
            f"took {import_s:.1f} s.",
        ]
    )
    print(report)
    if args.write:
        text = RESULTS.read_text(encoding="utf-8")
        marker = "<!-- results -->"
        head = text.split(marker, 1)[0] if marker in text else text.rstrip() + "\n\n"
        RESULTS.write_text(head + marker + "\n\n" + report + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
