"""The gateway's own HTTP/1.1 client (``backends.http1``) against aiohttp, upstream calls only.

The canned upstream runs pinned to core 1; each measurement runs in a fresh Python
process pinned to core 0 (uvloop). Both clients POST /v1/chat/completions with
pre-encoded bytes over a pool of keep-alive connections (as many as the concurrency),
non-streaming (body read whole) and streaming (the SSE body read as it arrives), at
concurrency 1 and 64. Each run reports calls/s, median latency and the client
process's CPU time per call (``time.process_time``), the number that decides how many
gateway requests one core can carry. Runs alternate client by client and repeat;
medians are reported with the ratio http1 / aiohttp.

    python -m bench.upstream_client [--repeat 3] [--duration 4] [--warmup 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from bench.machine import describe
from bench.processes import Children, free_port, pinned, python

Client = Literal["aiohttp", "http1"]
CLIENTS: tuple[Client, ...] = ("aiohttp", "http1")
CLIENT_CPU = 0
UPSTREAM_CPU = 1
PATH = "/v1/chat/completions"
_MARK = "BENCH_UPSTREAM_CLIENT_JSON "

# One call: returns the number of body bytes read (0 counts as an error).
Call = Callable[[], Awaitable[int]]


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


def _client(
    client: Client, port: int, stream: bool, concurrency: int
) -> tuple[Call, Callable[[], Awaitable[None]]]:
    body = request_body(stream)
    if client == "aiohttp":
        import aiohttp

        url = f"http://127.0.0.1:{port}{PATH}"
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=concurrency, keepalive_timeout=60)
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )
        timeout = aiohttp.ClientTimeout(total=60, sock_connect=5, sock_read=30)
        headers = {"content-type": "application/json", "x-request-id": "bench"}

        async def aiohttp_call() -> int:
            resp = await session.post(url, data=body, headers=headers, timeout=timeout)
            try:
                if stream:
                    size = 0
                    async for block in resp.content.iter_any():
                        size += len(block)
                else:
                    size = len(await resp.read())
            finally:
                resp.release()
            return size if resp.status == 200 else 0

        return aiohttp_call, session.close

    from backends.http1 import Http1Pool

    pool = Http1Pool(f"http://127.0.0.1:{port}", max_connections=concurrency)
    raw_headers = [(b"content-type", b"application/json"), (b"x-request-id", b"bench")]

    async def http1_call() -> int:
        resp = await pool.request(
            "POST", PATH, raw_headers, body, first_byte_timeout_s=30, total_timeout_s=60
        )
        try:
            if stream:
                size = 0
                async for block in resp.chunks():
                    size += len(block)
            else:
                size = len(await resp.read())
        finally:
            resp.release()
        return size if resp.status == 200 else 0

    return http1_call, pool.close


async def _drive(call: Call, concurrency: int, seconds: float) -> tuple[list[int], int]:
    latencies: list[int] = []
    errors = 0
    deadline = time.perf_counter_ns() + int(seconds * 1e9)

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter_ns() < deadline:
            start = time.perf_counter_ns()
            try:
                size = await call()
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter_ns() - start)
            if size == 0:
                errors += 1

    tasks = [asyncio.ensure_future(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + 15)
    for task in pending:
        task.cancel()
    return latencies, errors


async def measure(
    client: Client, port: int, stream: bool, concurrency: int, duration: float, warmup: float
) -> dict[str, float]:
    """One run: calls/s, p50/p99 latency (ms), CPU µs per call, errors."""
    call, close = _client(client, port, stream, concurrency)
    try:
        if warmup > 0:
            await _drive(call, concurrency, warmup)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        latencies, errors = await _drive(call, concurrency, duration)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await close()
    latencies.sort()
    n = len(latencies)

    def pct(q: float) -> float:
        return latencies[min(n - 1, max(0, round(q / 100 * n) - 1))] / 1e6 if n else float("nan")

    return {
        "calls": n,
        "errors": errors,
        "rps": n / wall,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "cpu_us": cpu / n * 1e6 if n else float("nan"),
    }


def _run_child(
    client: Client, port: int, stream: bool, concurrency: int, duration: float, warmup: float
) -> dict[str, float]:
    argv = [python(), "-m", "bench.upstream_client", "--worker", client, "--port", str(port)]
    argv += ["--concurrency", str(concurrency), "--duration", str(duration)]
    argv += ["--warmup", str(warmup)] + (["--stream"] if stream else [])
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
            result: dict[str, float] = json.loads(line[len(_MARK) :])
            return result
    raise RuntimeError(f"{client} worker failed (rc {done.returncode}):\n{done.stderr[-3000:]}")


def table(results: dict[tuple[Client, bool, int], dict[str, float]]) -> str:
    """Markdown table: per body and concurrency, each metric for both clients and the ratio."""
    rows = [
        "| body | c | metric | aiohttp | http1 | http1 / aiohttp |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    metrics = (("rps", "calls/s", 0), ("cpu_us", "CPU µs / call", 1), ("p50_ms", "p50 ms", 3))
    for stream in (False, True):
        for concurrency in (1, 64):
            a, h = (
                results[("aiohttp", stream, concurrency)],
                results[("http1", stream, concurrency)],
            )
            for key, label, digits in metrics:
                rows.append(
                    f"| {'SSE stream' if stream else 'JSON'} | {concurrency} | {label} "
                    f"| {a[key]:,.{digits}f} | {h[key]:,.{digits}f} | {h[key] / a[key]:.2f} |"
                )
    return "\n".join(rows)


def compare(repeat: int, duration: float, warmup: float) -> str:
    """Run the whole comparison; return a markdown report."""
    machine = describe()
    runs: dict[tuple[Client, bool, int], list[dict[str, float]]] = {}
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
                        r = _run_child(client, port, stream, concurrency, duration, warmup)
                        runs.setdefault((client, stream, concurrency), []).append(r)
                        print(
                            f"round {round_ + 1}/{repeat} {client:7} stream={stream!s:5} "
                            f"c={concurrency:<2} {r['rps']:9,.0f}/s cpu {r['cpu_us']:6.1f} µs "
                            f"p50 {r['p50_ms']:.3f} ms errors {r['errors']:.0f}",
                            file=sys.stderr,
                            flush=True,
                        )
    results = {
        key: {m: statistics.median(s[m] for s in samples) for m in samples[0]}
        for key, samples in runs.items()
    }
    command = f"python -m bench.upstream_client --repeat {repeat} --duration {duration:g} "
    command += f"--warmup {warmup:g}"
    return (
        f"Command: `{command}`; medians of {repeat} runs of {duration:g} s after "
        f"{warmup:g} s warm-up; client on core {CLIENT_CPU}, upstream on core {UPSTREAM_CPU}.\n\n"
        f"Machine: {machine}\n\n{table(results)}\n"
    )


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point (also the per-measurement worker)."""
    parser = argparse.ArgumentParser(description="backends.http1 vs aiohttp, upstream calls")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
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
        result = asyncio.run(
            measure(args.worker, args.port, args.stream, args.concurrency, duration, warmup)
        )
        sys.stdout.write(_MARK + json.dumps(result) + "\n")
        return
    print(compare(max(1, args.repeat), duration, warmup))


if __name__ == "__main__":
    main()
