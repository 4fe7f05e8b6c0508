"""Load generation: ``wrk`` when installed, else a Python keep-alive generator.

Both POST one fixed body over ``connections`` keep-alive connections for a fixed
duration after a warm-up, and report requests/s and latency percentiles. Every
``Sample`` names the generator that produced it, so a report can say which one did.

``wrk`` (C, one thread, epoll) is preferred: it costs far less CPU per request than
any Python client, so on a shared core it disturbs the measurement least. The Python
generator (uvloop + httptools, raw protocol, no per-request allocation beyond the
latency record) is the fallback, and the only one here that measures time to first
body byte (``ttfb``), which matters for streaming.

Run the Python generator directly::

    python -m bench.loadgen --port 8000 --path /v1/chat/completions \
        --body '{"stream": true}' --connections 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from bench.processes import pinned, python

Generator = Literal["auto", "wrk", "python"]
WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")
_WRK_MARK = "BENCH_WRK_JSON "
_PY_MARK = "BENCH_PY_JSON "
_MAX_REQUESTS = 5_000_000  # a hard bound on any one Python run, whatever the duration


@dataclass(frozen=True)
class Target:
    """Where and what to POST."""

    port: int
    body: bytes
    path: str = "/v1/chat/completions"
    host: str = "127.0.0.1"
    authorization: str | None = None
    headers: tuple[tuple[str, str], ...] = ()  # more request headers: (name, value) pairs

    @property
    def url(self) -> str:
        """The full URL of the target."""
        return f"http://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True)
class Load:
    """How hard and how long to push."""

    connections: int
    duration_s: float = 5.0
    warmup_s: float = 2.0


@dataclass(frozen=True)
class Sample:
    """One measured run (or the medians of several)."""

    generator: str
    connections: int
    requests: int
    errors: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    ttfb_p50_ms: float | None = None
    ttfb_p99_ms: float | None = None


def available_generator(preferred: Generator = "auto") -> Literal["wrk", "python"]:
    """The generator to use: ``wrk`` when installed (or asked for), else Python."""
    if preferred == "python":
        return "python"
    if shutil.which("wrk") is not None:
        return "wrk"
    if preferred == "wrk":
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    return "python"


def run(
    target: Target,
    load: Load,
    generator: Generator = "auto",
    cpu: int | None = None,
    ttfb: bool = False,
) -> Sample:
    """Warm up, then measure once. ``ttfb`` forces the Python generator."""
    chosen = "python" if ttfb else available_generator(generator)
    with tempfile.NamedTemporaryFile(prefix="bench-body-", suffix=".json") as body:
        body.write(target.body)
        body.flush()
        if chosen == "wrk":
            return _run_wrk(target, load, Path(body.name), cpu)
        return _run_python(target, load, Path(body.name), cpu)


def median(samples: list[Sample]) -> Sample:
    """Field-wise medians of repeated runs of the same measurement."""
    if not samples:
        raise ValueError("no samples")
    values: dict[str, object] = {}
    for field in dataclasses.fields(Sample):
        column = [getattr(s, field.name) for s in samples]
        if field.name in ("generator", "connections"):
            values[field.name] = column[0]
        elif field.name in ("requests", "errors"):
            values[field.name] = int(statistics.median(column))
        elif any(v is None for v in column):
            values[field.name] = None
        else:
            values[field.name] = float(statistics.median(column))
    return Sample(**values)  # type: ignore[arg-type]


def _run_wrk(target: Target, load: Load, body_file: Path, cpu: int | None) -> Sample:
    env = {**os.environ, "BENCH_BODY_FILE": str(body_file)}
    if target.authorization:
        env["BENCH_AUTHORIZATION"] = target.authorization
    else:
        env.pop("BENCH_AUTHORIZATION", None)

    def wrk(seconds: float) -> dict[str, float]:
        argv = [
            "wrk",
            "-t1",
            f"-c{load.connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "5s",
            "-s",
            str(WRK_SCRIPT),
            *(arg for name, value in target.headers for arg in ("-H", f"{name}: {value}")),
            target.url,
        ]
        done = subprocess.run(
            pinned(argv, cpu),
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
            check=False,
        )
        for line in done.stdout.splitlines():
            if line.startswith(_WRK_MARK):
                return cast(dict[str, float], json.loads(line[len(_WRK_MARK) :]))
        raise RuntimeError(
            f"wrk gave no summary (rc {done.returncode}):\n{done.stdout}\n{done.stderr}"
        )

    if load.warmup_s > 0:
        wrk(load.warmup_s)
    r = wrk(load.duration_s)
    errors = sum(
        int(r[k]) for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")
    )
    seconds = r["duration_us"] / 1e6
    return Sample(
        generator="wrk",
        connections=load.connections,
        requests=int(r["requests"]),
        errors=errors,
        duration_s=seconds,
        rps=r["requests"] / seconds if seconds else 0.0,
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        mean_ms=r["mean_us"] / 1000,
    )


def _run_python(target: Target, load: Load, body_file: Path, cpu: int | None) -> Sample:
    argv = [
        python(),
        "-m",
        "bench.loadgen",
        "--host",
        target.host,
        "--port",
        str(target.port),
        "--path",
        target.path,
        "--body-file",
        str(body_file),
        "--connections",
        str(load.connections),
        "--duration",
        str(load.duration_s),
        "--warmup",
        str(load.warmup_s),
    ]
    if target.authorization:
        argv += ["--authorization", target.authorization]
    for name, value in target.headers:
        argv += ["--header", f"{name}: {value}"]
    done = subprocess.run(
        pinned(argv, cpu),
        capture_output=True,
        text=True,
        timeout=load.duration_s + load.warmup_s + 60,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    for line in done.stdout.splitlines():
        if line.startswith(_PY_MARK):
            return Sample(**json.loads(line[len(_PY_MARK) :]))
    raise RuntimeError(f"python generator failed (rc {done.returncode}):\n{done.stderr[-2000:]}")


# --- the Python generator ---------------------------------------------------------------


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection; one request in flight at a time.

    The caller sets ``waiter`` to a fresh future before writing a request; it gets
    the status code once the whole response has been parsed (httptools), or the
    error when the response cannot be parsed or the connection is lost (then
    ``closed`` is set). Subclasses add more httptools callbacks (``on_body``, ...).
    """

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as exc:  # httptools raises its own parse errors
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)

    def on_message_complete(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(self.parser.get_status_code())


class _Connection(HttpConnection):
    """A connection of the Python generator: also records when the body began."""

    def __init__(self) -> None:
        super().__init__()
        self.first_body_ns = 0

    def on_body(self, body: bytes) -> None:
        if self.first_body_ns == 0 and body:
            self.first_body_ns = time.perf_counter_ns()


async def _phase(
    host: str, port: int, request: bytes, connections: int, seconds: float
) -> tuple[list[int], list[int], int, int, float]:
    loop = asyncio.get_running_loop()
    latencies: list[int] = []
    ttfbs: list[int] = []
    counters = {"errors": 0, "requests": 0}
    deadline = time.perf_counter_ns() + int(seconds * 1e9)

    async def connect() -> _Connection:
        _, conn = await loop.create_connection(_Connection, host, port)
        return conn

    async def worker() -> None:
        conn = await connect()
        while time.perf_counter_ns() < deadline and counters["requests"] < _MAX_REQUESTS:
            if conn.closed:
                conn = await connect()
            waiter: asyncio.Future[int] = loop.create_future()
            conn.waiter = waiter
            conn.first_body_ns = 0
            start = time.perf_counter_ns()
            assert conn.transport is not None
            conn.transport.write(request)
            try:
                status = await waiter
            except (ConnectionError, OSError):
                counters["errors"] += 1
                continue
            end = time.perf_counter_ns()
            counters["requests"] += 1
            if not 200 <= status < 400:
                counters["errors"] += 1
            latencies.append(end - start)
            ttfbs.append((conn.first_body_ns or end) - start)
        if conn.transport is not None:
            conn.transport.close()

    started = time.perf_counter()
    tasks = [asyncio.ensure_future(worker()) for _ in range(connections)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + 15)
    for task in pending:
        task.cancel()
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())
    elapsed = time.perf_counter() - started
    return latencies, ttfbs, counters["requests"], counters["errors"], elapsed


def _percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    index = min(len(sorted_ns) - 1, max(0, round(q / 100 * len(sorted_ns)) - 1))
    return sorted_ns[index] / 1e6


async def generate(
    host: str,
    port: int,
    path: str,
    body: bytes,
    connections: int,
    duration_s: float,
    warmup_s: float,
    authorization: str | None = None,
    extra_headers: tuple[str, ...] = (),
) -> Sample:
    """Run the Python generator in this process (warm-up, then one measured phase)."""
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if authorization:
        headers.append(f"Authorization: {authorization}")
    headers.extend(extra_headers)
    request = ("\r\n".join(headers) + "\r\n\r\n").encode() + body
    if warmup_s > 0:
        await _phase(host, port, request, connections, warmup_s)
    latencies, ttfbs, requests, errors, elapsed = await _phase(
        host, port, request, connections, duration_s
    )
    latencies.sort()
    ttfbs.sort()
    return Sample(
        generator="python",
        connections=connections,
        requests=requests,
        errors=errors,
        duration_s=elapsed,
        rps=requests / elapsed if elapsed else 0.0,
        p50_ms=_percentile(latencies, 50),
        p90_ms=_percentile(latencies, 90),
        p99_ms=_percentile(latencies, 99),
        mean_ms=statistics.fmean(latencies) / 1e6 if latencies else float("nan"),
        ttfb_p50_ms=_percentile(ttfbs, 50),
        ttfb_p99_ms=_percentile(ttfbs, 99),
    )


def main(argv: list[str] | None = None) -> None:
    """Run the Python generator and print one ``BENCH_PY_JSON`` line."""
    parser = argparse.ArgumentParser(description="Python keep-alive HTTP load generator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/chat/completions")
    body = parser.add_mutually_exclusive_group()
    body.add_argument("--body", default="{}")
    body.add_argument("--body-file", type=Path)
    parser.add_argument("--authorization")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    payload = args.body_file.read_bytes() if args.body_file else args.body.encode()
    from bench.upstream import install_uvloop

    install_uvloop()
    sample = asyncio.run(
        generate(
            args.host,
            args.port,
            args.path,
            payload,
            args.connections,
            min(args.duration, 120.0),
            min(args.warmup, 60.0),
            args.authorization,
            tuple(args.header),
        )
    )
    sys.stdout.write(_PY_MARK + json.dumps(dataclasses.asdict(sample)) + "\n")


if __name__ == "__main__":
    main()
