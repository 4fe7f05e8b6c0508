"""A small stand-in of Anthropic's Messages API (aiohttp.web) for catalog tests.

``POST /v1/messages``, non-streaming and streaming with Anthropic's SSE event
types (``message_start``, ``content_block_start``/``delta``/``stop``,
``message_delta`` with usage, ``message_stop``), ``tool_use`` blocks, and usage
with ``cache_read_input_tokens`` and ``cache_creation_input_tokens``.

The requested ``model`` picks the behaviour: ``claude-ok`` (and any other name)
answers, calling ``get_weather`` when tools are offered and no ``tool_result``
is in the conversation yet; ``claude-error-401`` / ``-429`` / ``-400`` /
``-context`` / ``-500`` / ``-529`` answer with that error in Anthropic's shape;
``claude-slow`` waits until the server stops.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

#: Anthropic counts input_tokens without the cached ones; the cache figures are separate.
INPUT_TOKENS = 30
CACHE_READ = 20
CACHE_WRITE = 5
OUTPUT_TOKENS = 9
TEXT_PIECES = ("Sunny", " in Paris.")
TOOL_JSON = ('{"city": ', '"Paris"}')

_ERRORS: dict[str, tuple[int, str, str, dict[str, str]]] = {
    "claude-error-401": (401, "authentication_error", "invalid x-api-key", {}),
    "claude-error-429": (
        429,
        "rate_limit_error",
        "Number of requests has exceeded your rate limit",
        {"retry-after": "3"},
    ),
    "claude-error-400": (400, "invalid_request_error", "max_tokens: must be positive", {}),
    "claude-error-context": (
        400,
        "invalid_request_error",
        "prompt is too long: 250000 tokens > 200000 maximum",
        {},
    ),
    "claude-error-500": (500, "api_error", "Internal server error", {}),
    "claude-error-529": (529, "overloaded_error", "Overloaded", {}),
}


def _wants_tool(body: dict[str, Any]) -> bool:
    if not body.get("tools"):
        return False
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        ):
            return False
    return True


def _usage(output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": INPUT_TOKENS,
        "cache_read_input_tokens": CACHE_READ,
        "cache_creation_input_tokens": CACHE_WRITE,
        "output_tokens": output_tokens,
    }


class AnthropicStandIn:
    """The stand-in's state: requests and headers seen, and the release event for ``slow``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.released = asyncio.Event()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        return app

    async def messages(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/messages``."""
        body = orjson.loads(await request.read())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        model = body.get("model", "")
        if model in _ERRORS:
            status, kind, message, headers = _ERRORS[model]
            error = {"type": "error", "error": {"type": kind, "message": message}}
            return web.json_response(error, status=status, headers=headers)
        if model == "claude-slow":
            await self.released.wait()
        tool = _wants_tool(body)
        if body.get("stream"):
            return await self._stream(request, model, tool)
        content: list[dict[str, Any]]
        if tool:
            content = [
                {
                    "type": "tool_use",
                    "id": "toolu_01",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                }
            ]
        else:
            content = [{"type": "text", "text": "".join(TEXT_PIECES)}]
        return web.json_response(
            {
                "id": "msg_standin",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": "tool_use" if tool else "end_turn",
                "stop_sequence": None,
                "usage": _usage(OUTPUT_TOKENS),
            }
        )

    async def _stream(self, request: web.Request, model: str, tool: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def event(name: str, data: dict[str, Any]) -> None:
            await resp.write(
                b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
            )

        await event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_standin",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": _usage(1),
                },
            },
        )
        await event("ping", {"type": "ping"})
        if tool:
            block = {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in TOOL_JSON]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in TEXT_PIECES]
        await event(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
        for delta in deltas:
            await event(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        await event("content_block_stop", {"type": "content_block_stop", "index": 0})
        await event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": OUTPUT_TOKENS},
            },
        )
        await event("message_stop", {"type": "message_stop"})
        await resp.write_eof()
        return resp
