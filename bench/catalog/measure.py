"""The three ways of reaching the same upstream, and the timing of each.

- **pool path** (baseline): an aiohttp POST of the request body over a pooled
  keep-alive session with the same timeouts as the catalog entry (how
  :class:`backends.sglang.pool.SGLangPool` sent requests when this benchmark
  was written; it now uses :mod:`backends.http1`); a stream is read block by
  block to its end.
- **catalog, direct_openai**: :class:`backends.catalog.CatalogBackend` with
  the ``direct_openai`` transport (rate limiter off).
- **catalog, litellm**: the same backend with the ``litellm`` transport:
  ``litellm.acompletion`` plus serialising its answer back to OpenAI bytes.

Every path takes the same :class:`backends.base.UpstreamRequest` and reads
the whole answer, so the difference between a path and the baseline is what
that path adds.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from backends.base import UpstreamRequest, UpstreamResponse
from backends.catalog import CatalogBackend, CatalogEntryConfig

MODEL = "llama-3.1-8b-instruct"
Call = Callable[[UpstreamRequest], Awaitable[int]]


def agent_body(stream: bool) -> dict[str, Any]:
    """A typical agent turn: system prompt, tools, a few turns with a tool result (~3 KB)."""
    tool = {
        "type": "function",
        "function": {
            "name": "search_flights",
            "description": "Search flights between two airports on a date.",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "destination": {"type": "string"},
                    "date": {"type": "string", "format": "date"},
                },
                "required": ["origin", "destination", "date"],
            },
        },
    }
    call = {
        "id": "call_1",
        "type": "function",
        "function": {
            "name": "search_flights",
            "arguments": '{"origin": "JFK", "destination": "SFO", "date": "2025-05-01"}',
        },
    }
    flights = [{"flight": f"HAT{n:03d}", "price": 100 + n, "seats": n % 9} for n in range(12)]
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are an airline agent. " * 40},
            {"role": "user", "content": "Find me a flight from JFK to SFO on May 1st."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": orjson.dumps(flights).decode()},
            {"role": "user", "content": "Which is the cheapest with seats left?"},
        ],
        "tools": [tool],
        "temperature": 0.2,
        "max_tokens": 256,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def upstream_request(stream: bool) -> UpstreamRequest:
    """The request every path sends."""
    body = agent_body(stream)
    return UpstreamRequest(
        path="/v1/chat/completions",
        body=orjson.dumps(body),
        stream=stream,
        request_id="bench",
        payload=body,
    )


async def _drain(response: UpstreamResponse) -> int:
    if response.stream is None:
        return len(response.body)
    size = 0
    try:
        async for block in response.chunks():
            size += len(block)
    finally:
        await response.aclose()
    return size


def pool_path(session: aiohttp.ClientSession, base: str, timeout: aiohttp.ClientTimeout) -> Call:
    """The baseline: one aiohttp POST, as the SGLang pool sends it (same session, timeouts)."""
    url = base + "/chat/completions"
    headers = {"content-type": "application/json", "x-request-id": "bench"}

    async def call(request: UpstreamRequest) -> int:
        post = session.post(url, data=request.body, headers=headers, timeout=timeout)
        async with post as resp:
            if resp.status != 200:
                raise RuntimeError(f"upstream answered {resp.status}")
            if not request.stream:
                return len(await resp.read())
            size = 0
            async for block in resp.content.iter_any():
                size += len(block)
            return size

    return call


def backend_path(backend: CatalogBackend) -> Call:
    """A catalog backend's ``send``, reading the whole answer."""

    async def call(request: UpstreamRequest) -> int:
        return await _drain(await backend.send(request))

    return call


def catalog_entry(base: str, transport: str) -> CatalogEntryConfig:
    """The catalog entry for the upstream at ``base`` (``.../v1``)."""
    return CatalogEntryConfig.model_validate(
        {
            "litellm_model": f"openai/{MODEL}",
            "api_base": base,
            "transport": transport,
            "price": {"input_per_million": "0.10", "output_per_million": "0.40"},
        }
    )


@dataclass(frozen=True, slots=True)
class Timing:
    """One round of one path: latency percentiles (µs) and throughput."""

    p50_us: float
    p99_us: float
    rps: float


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sequential(call: Call, request: UpstreamRequest, count: int) -> list[float]:
    """Latency of ``count`` requests one after the other, in microseconds."""
    out = []
    for _ in range(count):
        began = time.perf_counter()
        await call(request)
        out.append((time.perf_counter() - began) * 1e6)
    return out


async def concurrent(call: Call, request: UpstreamRequest, count: int, workers: int) -> float:
    """Requests per second with ``workers`` callers sharing ``count`` requests."""
    left = count

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call(request)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return count / (time.perf_counter() - began)


async def measure_round(call: Call, request: UpstreamRequest, count: int, workers: int) -> Timing:
    """One round: ``count`` sequential requests, then ``count`` with ``workers`` callers."""
    latencies = await sequential(call, request, count)
    rps = await concurrent(call, request, count, workers)
    return Timing(p50_us=statistics.median(latencies), p99_us=_percentile(latencies, 0.99), rps=rps)


def median_timing(rounds: list[Timing]) -> Timing:
    """The median of each figure over rounds."""
    return Timing(
        p50_us=statistics.median(t.p50_us for t in rounds),
        p99_us=statistics.median(t.p99_us for t in rounds),
        rps=statistics.median(t.rps for t in rounds),
    )
