"""A closed-loop load generator over raw keep-alive HTTP/1.1 connections.

``concurrency`` connections each send one request, wait for the whole response
and send the next, until ``total`` requests were sent or ``max_seconds`` passed.
Requests come from a callable (request number -> bytes: head and body), so the
caller decides what each one is; the connections are spread over one or more
ports (gateway replicas). Responses are parsed with httptools; the status is
counted and the first few error bodies are kept, so a report can explain them.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httptools

from bench.loadgen import HttpConnection

MAX_ERROR_SAMPLES = 5


class _Client(HttpConnection):
    """One keep-alive connection, one request in flight; keeps the start of error bodies."""

    def __init__(self) -> None:
        super().__init__()
        self.keep_body = False
        self.body = bytearray()

    def on_headers_complete(self) -> None:
        self.keep_body = self.parser.get_status_code() >= 400

    def on_body(self, body: bytes) -> None:
        if self.keep_body and len(self.body) < 2000:
            self.body += body


@dataclass
class LoadResult:
    """What one load run did."""

    sent: int = 0
    completed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    elapsed_s: float = 0.0
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    error_samples: list[str] = field(default_factory=list)
    timed_out: bool = False

    @property
    def ok(self) -> int:
        """Responses with a 2xx status."""
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def errors(self) -> int:
        """Non-2xx responses plus requests that got no response."""
        return self.sent - self.ok

    @property
    def rps(self) -> float:
        """Completed requests per second of wall time."""
        return self.completed / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in ms."""
        if not self.latencies_us:
            return float("nan")
        ordered = sorted(self.latencies_us)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index] / 1000


class Driver:
    """Sends ``total`` requests made by ``make(number)`` over ``concurrency`` connections."""

    def __init__(
        self,
        ports: Sequence[int],
        make: Callable[[int], bytes],
        total: int,
        concurrency: int,
        max_seconds: float,
        timeout_s: float = 30.0,
        host: str = "127.0.0.1",
        record_latency: bool = True,
    ) -> None:
        if not ports:
            raise ValueError("no ports")
        self.ports = tuple(ports)
        self.make = make
        self.total = total
        self.concurrency = max(1, concurrency)
        self.max_seconds = max_seconds
        self.timeout_s = timeout_s
        self.host = host
        self.record_latency = record_latency
        self.result = LoadResult()
        self._next = 0
        self._deadline = 0.0

    @property
    def completed(self) -> int:
        """Responses received so far (read from other threads for progress and sampling)."""
        return self.result.completed

    async def _connect(self, port: int) -> _Client:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(_Client, self.host, port)
        return client

    async def _worker(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        result = self.result
        client = await self._connect(port)
        try:
            while self._next < self.total and time.monotonic() < self._deadline:
                number = self._next
                self._next += 1
                data = self.make(number)
                if client.closed:
                    client = await self._connect(port)
                waiter: asyncio.Future[int] = loop.create_future()
                client.waiter = waiter
                client.body.clear()
                started = time.perf_counter_ns()
                assert client.transport is not None
                client.transport.write(data)
                result.sent += 1
                try:
                    status = await asyncio.wait_for(waiter, self.timeout_s)
                except (ConnectionError, OSError, TimeoutError, httptools.HttpParserError) as exc:
                    result.transport_errors += 1
                    if len(result.error_samples) < MAX_ERROR_SAMPLES:
                        result.error_samples.append(f"request {number}: {type(exc).__name__} {exc}")
                    if client.transport is not None:
                        client.transport.abort()
                    client = await self._connect(port)
                    continue
                if self.record_latency:
                    result.latencies_us.append((time.perf_counter_ns() - started) // 1000)
                result.completed += 1
                result.statuses[status] += 1
                if status >= 300 and len(result.error_samples) < MAX_ERROR_SAMPLES:
                    text = bytes(client.body[:300]).decode(errors="replace")
                    result.error_samples.append(f"request {number}: HTTP {status} {text}")
        finally:
            if client.transport is not None:
                client.transport.close()

    async def run(self) -> LoadResult:
        """Run to completion (or to ``max_seconds``); returns the result."""
        started = time.monotonic()
        self._deadline = started + self.max_seconds
        workers = [
            asyncio.ensure_future(self._worker(self.ports[i % len(self.ports)]))
            for i in range(min(self.concurrency, max(1, self.total)))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
        self.result.elapsed_s = time.monotonic() - started
        self.result.timed_out = self._next < self.total
        return self.result
