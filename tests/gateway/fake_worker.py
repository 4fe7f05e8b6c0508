"""A scriptable stand-in for an SGLang worker, served over real HTTP on loopback.

Used by the in-process gateway tests to produce exact upstream behaviours
(usage chunk shapes, cut streams, errors) that the emulator makes only by chance.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

MODEL = "upstream-model"


def chunk(content: str | None = None, *, finish: str | None = None) -> bytes:
    delta: dict[str, Any] = {} if content is None else {"content": content}
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def usage_chunk() -> bytes:
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [],
        "usage": USAGE,
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


@dataclass
class FakeWorker:
    """Behaviour knobs; ``requests`` records every body received."""

    mode: str = "ok"  # ok | cut | error500 | reject400 | ratelimit | split
    healthy: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    delay_s: float = 0.0  # wait this long before answering

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.requests.append(body)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.mode == "ratelimit":
            return web.json_response(
                {"error": {"message": "slow down", "type": "requests", "code": "rate_limited"}},
                status=429,
                headers={"retry-after": "3"},
            )
        if self.mode == "error500":
            return web.json_response(
                {"object": "error", "message": "boom", "code": 500}, status=500
            )
        if self.mode == "reject400":
            return web.json_response(
                {
                    "object": "error",
                    "message": "bad conversation",
                    "type": "BadRequestError",
                    "param": None,
                    "code": 400,
                },
                status=400,
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": 1,
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "hello"},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": USAGE,
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        parts = [chunk("he"), chunk("llo"), chunk(finish="stop")]
        if self.mode == "cut":
            await resp.write(parts[0])
            assert request.transport is not None
            request.transport.close()
            return resp
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage:
            parts.append(usage_chunk())
        parts.append(b"data: [DONE]\n\n")
        blob = b"".join(parts)
        if self.mode == "split":
            # Event boundaries fall in the middle of TCP writes.
            for i in range(0, len(blob), 7):
                await resp.write(blob[i : i + 7])
        else:
            for part in parts:
                await resp.write(part)
        return resp

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)


@asynccontextmanager
async def serve_fake_worker(worker: FakeWorker | None = None) -> AsyncIterator[FakeWorker]:
    """Serve a :class:`FakeWorker` on a free loopback port for the block's duration."""
    worker = worker or FakeWorker()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", worker.chat)
    app.router.add_post("/v1/completions", worker.chat)
    app.router.add_get("/health", worker.health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    worker.url = f"http://127.0.0.1:{port}"
    try:
        yield worker
    finally:
        await runner.cleanup()
