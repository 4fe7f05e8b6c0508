"""aiohttp against httpx as the gateway's pooled upstream client.

The canned upstream runs pinned to core 1; each measurement runs in a fresh Python
process pinned to core 0 (uvloop), so the client's own CPU cost per call is what is
measured. Both clients POST /v1/chat/completions with pre-encoded bytes over pooled
keep-alive connections, non-streaming (body read whole) and streaming (SSE body read
as raw bytes, the way a relay reads it), at concurrency 1 (latency per call) and 64
(calls/s). Runs are interleaved client by client and repeated; medians are reported
with the ratio httpx / aiohttp.

    python -m bench.http_clients [--repeat 3] [--duration 5] [--warmup 2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from bench.loadgen import Sample, median
from bench.machine import describe
from bench.processes import Children, free_port, pinned, python

Client = Literal["aiohttp", "httpx"]
CLIENTS: tuple[Client, ...] = ("aiohttp", "httpx")
CLIENT_CPU = 0
UPSTREAM_CPU = 1
_MARK = "BENCH_CLIENT_JSON "
_HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer bench"}


def request_body(stream: bool) -> bytes:
    """The chat-completions body the gateway would forward."""
    body: dict[str, object] = {
        "model": "llama-3.1-8b-instruct",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


# A call returns (nanoseconds to the first body bytes, body bytes read).
Call = Callable[[], Awaitable[tuple[int, int]]]


async def _drive(call: Call, concurrency: int, seconds: float) -> tuple[list[int], list[int], int]:
    latencies: list[int] = []
    firsts: list[int] = []
    errors = 0
    deadline = time.perf_counter_ns() + int(seconds * 1e9)

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter_ns() < deadline:
            start = time.perf_counter_ns()
            try:
                first, size = await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter_ns() - start)
            firsts.append(first - start)
            if size == 0:
                errors += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + 15)
    for task in pending:
        task.cancel()
    return latencies, firsts, errors


async def _measure(
    client: Client, url: str, stream: bool, concurrency: int, duration: float, warmup: float
) -> Sample:
    body = request_body(stream)
    if client == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60)
        session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

        async def aiohttp_call() -> tuple[int, int]:
            async with session.post(url, data=body, headers=_HEADERS) as resp:
                if stream:
                    first, size = 0, 0
                    async for chunk in resp.content.iter_any():
                        first = first or time.perf_counter_ns()
                        size += len(chunk)
                    return first, size if resp.status == 200 else 0
                data = await resp.read()
                return time.perf_counter_ns(), len(data) if resp.status == 200 else 0

        call: Call = aiohttp_call
        close: Callable[[], Awaitable[None]] = session.close
    else:
        import httpx

        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        hclient = httpx.AsyncClient(limits=limits, timeout=10.0)

        async def httpx_call() -> tuple[int, int]:
            if stream:
                async with hclient.stream("POST", url, content=body, headers=_HEADERS) as resp:
                    first, size = 0, 0
                    async for chunk in resp.aiter_raw():
                        first = first or time.perf_counter_ns()
                        size += len(chunk)
                    return first, size if resp.status_code == 200 else 0
            resp = await hclient.post(url, content=body, headers=_HEADERS)
            return time.perf_counter_ns(), len(resp.content) if resp.status_code == 200 else 0

        call = httpx_call
        close = hclient.aclose
    try:
        if warmup > 0:
            await _drive(call, concurrency, warmup)
        started = time.perf_counter()
        latencies, firsts, errors = await _drive(call, concurrency, duration)
        elapsed = time.perf_counter() - started
    finally:
        await close()
    latencies.sort()
    firsts.sort()

    def pct(values: list[int], q: float) -> float:
        if not values:
            return float("nan")
        return values[min(len(values) - 1, max(0, round(q / 100 * len(values)) - 1))] / 1e6

    return Sample(
        generator=client,
        connections=concurrency,
        requests=len(latencies),
        errors=errors,
        duration_s=elapsed,
        rps=len(latencies) / elapsed,
        p50_ms=pct(latencies, 50),
        p90_ms=pct(latencies, 90),
        p99_ms=pct(latencies, 99),
        mean_ms=statistics.fmean(latencies) / 1e6 if latencies else float("nan"),
        ttfb_p50_ms=pct(firsts, 50) if stream else None,
        ttfb_p99_ms=pct(firsts, 99) if stream else None,
    )


def _run_child(
    client: Client, port: int, stream: bool, concurrency: int, duration: float, warmup: float
) -> Sample:
    argv = [
        python(),
        "-m",
        "bench.http_clients",
        "--worker",
        client,
        "--port",
        str(port),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    if stream:
        argv.append("--stream")
    done = subprocess.run(
        pinned(argv, CLIENT_CPU),
        capture_output=True,
        text=True,
        timeout=duration + warmup + 60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            return Sample(**json.loads(line[len(_MARK) :]))
    raise RuntimeError(f"{client} worker failed (rc {done.returncode}):\n{done.stderr[-3000:]}")


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(results: dict[tuple[str, bool, int], Sample]) -> str:
    """Markdown table: latency at c=1 and calls/s at c=64, with httpx/aiohttp ratios."""
    rows = [
        "| body | metric | aiohttp | httpx | httpx / aiohttp |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for stream in (False, True):
        kind = "SSE stream" if stream else "JSON"
        a1, h1 = results[("aiohttp", stream, 1)], results[("httpx", stream, 1)]
        a64, h64 = results[("aiohttp", stream, 64)], results[("httpx", stream, 64)]
        rows.append(
            f"| {kind} | c=1 p50 latency (ms) | {a1.p50_ms:.3f} | {h1.p50_ms:.3f} "
            f"| {h1.p50_ms / a1.p50_ms:.2f} |"
        )
        rows.append(
            f"| {kind} | c=1 p99 latency (ms) | {a1.p99_ms:.3f} | {h1.p99_ms:.3f} "
            f"| {h1.p99_ms / a1.p99_ms:.2f} |"
        )
        if stream:
            rows.append(
                f"| {kind} | c=1 p50 first chunk (ms) | {_fmt(a1.ttfb_p50_ms)} "
                f"| {_fmt(h1.ttfb_p50_ms)} | "
                f"{(h1.ttfb_p50_ms or 0) / (a1.ttfb_p50_ms or 1):.2f} |"
            )
        rows.append(
            f"| {kind} | c=64 calls/s | {a64.rps:,.0f} | {h64.rps:,.0f} | {h64.rps / a64.rps:.2f} |"
        )
        rows.append(
            f"| {kind} | c=64 p50 latency (ms) | {a64.p50_ms:.3f} | {h64.p50_ms:.3f} "
            f"| {h64.p50_ms / a64.p50_ms:.2f} |"
        )
    return "\n".join(rows)


def compare(repeat: int, duration: float, warmup: float) -> str:
    """Run the whole comparison; return a markdown report."""
    machine = describe()
    runs: dict[tuple[str, bool, int], list[Sample]] = {}
    with Children() as children:
        port = free_port()
        upstream = children.start(
            "upstream", [python(), "-m", "bench.upstream", "--port", str(port)], cpu=UPSTREAM_CPU
        )
        children.wait_ready("upstream", f"http://127.0.0.1:{port}/health", proc=upstream)
        for round_ in range(repeat):
            order = CLIENTS if round_ % 2 == 0 else tuple(reversed(CLIENTS))
            for stream in (False, True):
                for concurrency in (1, 64):
                    for client in order:
                        sample = _run_child(client, port, stream, concurrency, duration, warmup)
                        runs.setdefault((client, stream, concurrency), []).append(sample)
                        print(
                            f"round {round_ + 1}/{repeat} {client:7} stream={stream!s:5} "
                            f"c={concurrency:<2} {sample.rps:9,.0f}/s p50 {sample.p50_ms:.3f} ms "
                            f"p99 {sample.p99_ms:.3f} ms errors {sample.errors}",
                            file=sys.stderr,
                            flush=True,
                        )
    results = {key: median(samples) for key, samples in runs.items()}
    command = f"python -m bench.http_clients --repeat {repeat} --duration {duration:g} "
    command += f"--warmup {warmup:g}"
    return (
        f"Command: `{command}`; medians of {repeat} runs of {duration:g} s after "
        f"{warmup:g} s warm-up; client on core {CLIENT_CPU}, upstream on core {UPSTREAM_CPU}.\n\n"
        f"Machine: {machine}\n\n{table(results)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (also the per-measurement worker)."""
    parser = argparse.ArgumentParser(description="aiohttp vs httpx as the upstream client")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--worker", choices=CLIENTS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--concurrency", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--stream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    duration = min(args.duration, 60.0)
    warmup = min(args.warmup, 30.0)
    if args.worker:
        from bench.upstream import install_uvloop

        install_uvloop()
        url = f"http://127.0.0.1:{args.port}/v1/chat/completions"
        sample = asyncio.run(
            _measure(args.worker, url, args.stream, args.concurrency, duration, warmup)
        )
        sys.stdout.write(_MARK + json.dumps(dataclasses.asdict(sample)) + "\n")
        return
    print(compare(max(1, args.repeat), duration, warmup))


if __name__ == "__main__":
    main()
