"""A fixed number of requests at a fixed concurrency: throughput without ramp-up bias.

A run of fixed duration that starts from an idle server counts nothing until the first
of its ``c`` concurrent requests completes, about ``c / X`` seconds for a server that
serves X requests/s; a slow server interleaving all its requests finishes them in waves
``c / X`` apart. At c=64 and a few dozen requests/s both effects are seconds long, so
requests/s over a 5 s window would understate a slow server by a margin that grows the
slower it is, the wrong direction for a comparison.

Here ``c`` keep-alive connections share ``requests`` tickets; each sends its next
request as soon as the previous answer is complete, and the clock runs from the first
request sent to the last answer received. All connections stay busy until the last
tickets are taken, so the rate is ``requests / elapsed`` with no ramp to discount.
The caller sizes ``requests`` to last about the measurement's duration.

    python -m bench.peers.burst --port P --body-file F --connections 64 --requests 5000
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.loadgen import Sample, Target, _Connection, _percentile
from bench.processes import pinned, python

_MARK = "BENCH_BURST_JSON "
MAX_REQUESTS = 1_000_000


async def burst(
    host: str,
    port: int,
    request: bytes,
    connections: int,
    requests: int,
    timeout_s: float,
) -> Sample:
    """Send ``requests`` requests over ``connections`` connections; at most ``timeout_s``."""
    loop = asyncio.get_running_loop()
    tickets = {"left": requests, "done": 0, "errors": 0}
    latencies: list[int] = []
    deadline = time.monotonic() + timeout_s
    conns: list[_Connection] = []
    for _ in range(connections):
        _, conn = await loop.create_connection(_Connection, host, port)
        conns.append(conn)

    async def worker(conn: _Connection) -> None:
        while tickets["left"] > 0 and time.monotonic() < deadline:
            tickets["left"] -= 1
            if conn.closed:
                _, conn = await loop.create_connection(_Connection, host, port)
            waiter: asyncio.Future[int] = loop.create_future()
            conn.waiter = waiter
            start = time.perf_counter_ns()
            assert conn.transport is not None
            conn.transport.write(request)
            try:
                status = await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))
            except (ConnectionError, OSError, TimeoutError):
                tickets["errors"] += 1
                continue
            latencies.append(time.perf_counter_ns() - start)
            tickets["done"] += 1
            if not 200 <= status < 400:
                tickets["errors"] += 1
        if conn.transport is not None:
            conn.transport.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in conns))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Sample(
        generator="python, fixed count",
        connections=connections,
        requests=tickets["done"],
        errors=tickets["errors"],
        duration_s=elapsed,
        rps=tickets["done"] / elapsed if elapsed else 0.0,
        p50_ms=_percentile(latencies, 50),
        p90_ms=_percentile(latencies, 90),
        p99_ms=_percentile(latencies, 99),
        mean_ms=statistics.fmean(latencies) / 1e6 if latencies else float("nan"),
    )


def request_bytes(target: Target) -> bytes:
    """The raw HTTP/1.1 request for ``target``."""
    lines = [
        f"POST {target.path} HTTP/1.1",
        f"Host: {target.host}:{target.port}",
        "Content-Type: application/json",
        f"Content-Length: {len(target.body)}",
    ]
    if target.authorization:
        lines.append(f"Authorization: {target.authorization}")
    lines.extend(f"{name}: {value}" for name, value in target.headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + target.body


def run_burst(
    target: Target, connections: int, requests: int, timeout_s: float, cpu: int | None
) -> Sample:
    """Run the generator in a child process pinned to ``cpu``; return its sample."""
    with tempfile.NamedTemporaryFile(prefix="bench-request-", suffix=".http") as raw:
        raw.write(request_bytes(target))
        raw.flush()
        argv = [python(), "-m", "bench.peers.burst", "--host", target.host]
        argv += ["--port", str(target.port), "--request-file", raw.name]
        argv += ["--connections", str(connections), "--requests", str(requests)]
        argv += ["--timeout", str(timeout_s)]
        done = subprocess.run(
            pinned(argv, cpu),
            capture_output=True,
            text=True,
            timeout=timeout_s + 60,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )
    for line in done.stdout.splitlines():
        if line.startswith(_MARK):
            return Sample(**json.loads(line[len(_MARK) :]))
    raise RuntimeError(
        f"fixed-count generator failed (rc {done.returncode}):\n{done.stderr[-2000:]}"
    )


def main(argv: list[str] | None = None) -> None:
    """Run one burst and print a ``BENCH_BURST_JSON`` line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--request-file", type=Path, required=True, help="raw HTTP request")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds at most")
    args = parser.parse_args(argv)
    from bench.upstream import install_uvloop

    install_uvloop()
    sample = asyncio.run(
        burst(
            args.host,
            args.port,
            args.request_file.read_bytes(),
            max(1, args.connections),
            max(1, min(args.requests, MAX_REQUESTS)),
            min(max(args.timeout, 1.0), 600.0),
        )
    )
    sys.stdout.write(_MARK + json.dumps(dataclasses.asdict(sample)) + "\n")


if __name__ == "__main__":
    main()
