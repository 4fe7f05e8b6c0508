"""The client: replays sessions concurrently, streaming, and times each turn.

``concurrency`` sessions run at once; when one ends the next starts. Within a
session each turn is sent after the previous turn's response has ended plus
that turn's simulated tool wait. Requests go round-robin across the targets
(one gateway, or several replicas behind a client-side round robin), one
counter for all sessions, so consecutive turns of a session may reach
different replicas. Time to first token is the time from sending the request
to the first SSE chunk that carries generated text or a tool call.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import orjson

from bench.routing.workload import Session


@dataclass(slots=True)
class TurnResult:
    """One request's outcome as the client saw it."""

    sid: str
    turn: int
    target: str
    status: int
    sent_at: float
    ttft_s: float | None = None
    latency_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int | None = None
    worker: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.error is None and self.ttft_s is not None


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    """What the client sends and how hard."""

    targets: tuple[str, ...]
    model: str
    api_key: str | None
    concurrency: int
    max_tokens: int
    session_header: bool
    deadline_s: float
    request_timeout_s: float = 120.0
    #: Session slots start spread over this many seconds (not all at once).
    ramp_s: float = 0.0


def _first_token(chunk: dict[str, object]) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls")):
            return True
    return False


def _usage(result: TurnResult, chunk: dict[str, object]) -> None:
    usage = chunk.get("usage")
    if not isinstance(usage, dict):
        return
    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    result.completion_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        result.cached_tokens = int(details["cached_tokens"])


async def _one(
    http: aiohttp.ClientSession,
    config: ReplayConfig,
    target: str,
    session: Session,
    turn: int,
) -> TurnResult:
    body = {
        "model": config.model,
        "messages": list(session.turns[turn]),
        "max_tokens": config.max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    headers = {"content-type": "application/json"}
    if config.api_key:
        headers["authorization"] = f"Bearer {config.api_key}"
    if config.session_header:
        headers["x-session-id"] = session.sid
    data = orjson.dumps(body)
    start = time.perf_counter()
    result = TurnResult(session.sid, turn, target, 0, start)
    try:
        async with http.post(target + "/v1/chat/completions", data=data, headers=headers) as resp:
            result.status = resp.status
            route = resp.headers.get("x-tollway-route")
            if route:
                result.worker = route.split("/", 1)[1] if "/" in route else route
            if resp.status != 200:
                result.error = (await resp.read())[:300].decode(errors="replace")
                return result
            buffer = b""
            async for raw in resp.content.iter_any():
                buffer += raw
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue
                        payload = line[5:].strip()
                        if payload == b"[DONE]":
                            continue
                        chunk = orjson.loads(payload)
                        if result.ttft_s is None and _first_token(chunk):
                            result.ttft_s = time.perf_counter() - start
                        _usage(result, chunk)
            result.latency_s = time.perf_counter() - start
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


async def replay(
    sessions: Sequence[Session], config: ReplayConfig
) -> tuple[list[TurnResult], float]:
    """Replay ``sessions``; returns every turn's result and the makespan in seconds.

    Bounded by ``config.deadline_s``: what has not finished by then is cancelled
    (and missing from the results).
    """
    queue: asyncio.Queue[Session] = asyncio.Queue()
    for session in sessions:
        queue.put_nowait(session)
    rotation = itertools.cycle(config.targets)
    results: list[TurnResult] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=config.request_timeout_s)

    async def runner(http: aiohttp.ClientSession, slot: int) -> None:
        await asyncio.sleep(config.ramp_s * slot / max(1, config.concurrency))
        while True:
            try:
                session = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            for turn in range(len(session.turns)):
                if turn and turn < len(session.tool_waits_s):
                    await asyncio.sleep(session.tool_waits_s[turn])
                result = await _one(http, config, next(rotation), session, turn)
                results.append(result)
                if not result.ok:
                    break  # the agent would not go on after a failed turn

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        tasks = [asyncio.create_task(runner(http, i)) for i in range(config.concurrency)]
        done, pending = await asyncio.wait(tasks, timeout=config.deadline_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            task.result()
    end = max((r.sent_at + (r.latency_s or 0.0) for r in results), default=start)
    return results, end - start
