"""A scriptable stand-in for an SGLang worker, served over real HTTP on loopback.

Used by the in-process gateway tests to produce exact upstream behaviours
(usage chunk shapes, cut streams, errors) that the emulator makes only by chance,
and a hostile upstream's misbehaviours, one per ``mode``:

==================  ==================================================================
``bad_usage``       ``usage`` is :attr:`FakeWorker.bad_usage` (JSON body and stream)
``not_json``        200 with an HTML body
``stream_error``    a 200 stream whose first event is SGLang's in-stream error, then
                    ``[DONE]`` (``serving_chat.py``: ``create_streaming_error_response``)
``stream_error_mid``  the same after two content events
``giant_event``     one event of :attr:`FakeWorker.giant_bytes` bytes
``no_blank_line``   :attr:`FakeWorker.giant_bytes` bytes that never end an event
``cut``             the connection closed after the first event, no ``[DONE]``
==================  ==================================================================
"""

from __future__ import annotations

import asyncio
import json
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


def usage_chunk(usage: Any = USAGE) -> bytes:
    data = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": MODEL,
        "choices": [],
        "usage": usage,
    }
    # json, not orjson: a hostile usage may hold integers beyond 64 bits.
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def sglang_stream_error(message: str, status: int = 400) -> bytes:
    """SGLang 0.5.6's in-stream error event, byte for byte (``json.dumps`` spacing)."""
    error = {
        "object": "error",
        "message": message,
        "type": "BadRequestError",
        "param": None,
        "code": status,
    }
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


@dataclass
class FakeWorker:
    """Behaviour knobs; ``requests`` records every body received."""

    mode: str = "ok"  # ok | cut | error500 | reject400 | ratelimit | split | misbehaviours
    healthy: bool = True
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    delay_s: float = 0.0  # wait this long before answering
    bad_usage: Any = field(default_factory=lambda: {"prompt_tokens": "many"})
    giant_bytes: int = 2 * 1024 * 1024
    error_status: int = 400  # the ``code`` of an in-stream error
    #: The client port of each request's connection (a repeat means it was reused).
    ports: list[int] = field(default_factory=list)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json(loads=orjson.loads)
        self.requests.append(body)
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.ports.append(peer[1] if peer else 0)
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
        usage: Any = self.bad_usage if self.mode == "bad_usage" else USAGE
        if self.mode == "not_json":
            return web.Response(body=b"<html>oops</html>", content_type="text/html")
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
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        parts = [chunk("he"), chunk("llo"), chunk(finish="stop")]
        if self.mode in _STREAM_MISBEHAVIOURS:
            for part in self._misbehaving_stream():
                await resp.write(part)
            return resp
        if self.mode == "cut":
            await resp.write(parts[0])
            assert request.transport is not None
            request.transport.close()
            return resp
        wants_usage = (body.get("stream_options") or {}).get("include_usage")
        if wants_usage:
            parts.append(usage_chunk(usage))
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

    def _misbehaving_stream(self) -> list[bytes]:
        done = b"data: [DONE]\n\n"
        if self.mode == "stream_error":
            return [sglang_stream_error("prompt too long", self.error_status), done]
        if self.mode == "stream_error_mid":
            error = sglang_stream_error("failed mid-way", self.error_status)
            return [chunk("he"), chunk("llo"), error, done]
        if self.mode == "giant_event":
            return [chunk("he"), chunk("x" * self.giant_bytes), chunk(finish="stop"), done]
        # no_blank_line: one event that never ends, sent in 64 KiB writes
        blob = b"data: " + b"y" * self.giant_bytes
        return [blob[i : i + 65536] for i in range(0, len(blob), 65536)]

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)


_STREAM_MISBEHAVIOURS = frozenset(
    {"stream_error", "stream_error_mid", "giant_event", "no_blank_line"}
)


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
