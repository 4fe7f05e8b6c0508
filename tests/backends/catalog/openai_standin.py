"""A small stand-in of OpenAI's chat-completions API (aiohttp.web) for catalog tests.

The requested ``model`` picks the behaviour, so one server serves every test:

- ``ok`` (any other name): answers. With ``tools`` and no tool result yet in the
  conversation it calls ``get_weather``; otherwise it answers in text. Streams
  send a role chunk, content (or tool-call) chunks, a finish chunk, then a
  usage chunk when ``stream_options.include_usage`` is true, then ``[DONE]``.
- ``usage-on-last``: streams with usage attached to the finish chunk instead.
- ``error-401``, ``error-429``, ``error-500``, ``error-503``, ``error-context``,
  ``error-400``: answers with that error in OpenAI's shape.
- ``slow``: waits (until the server stops) before answering.

``POST /v1/embeddings`` answers each input with the unit vector :data:`EMBEDDING`
(base64 when asked) and :data:`EMBEDDING_TOKENS` prompt tokens per input.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

import orjson
from aiohttp import web

USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 7,
    "total_tokens": 47,
    "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0},
}
EMBEDDING = [0.6, 0.8]
EMBEDDING_TOKENS = 5
TEXT_PIECES = ("It is", " sunny", " in Paris.")
TOOL_ARGUMENTS = ('{"city"', ': "Paris"}')

_ERRORS: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {
    "error-401": (
        401,
        {
            "message": "Incorrect API key provided: sk-te***23.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        },
        {},
    ),
    "error-429": (
        429,
        {
            "message": "Rate limit reached for requests",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        {"retry-after": "7"},
    ),
    "error-400": (
        400,
        {
            "message": "Invalid value for 'temperature'.",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": None,
        },
        {},
    ),
    "error-context": (
        400,
        {
            "message": "This model's maximum context length is 128000 tokens. "
            "However, your messages resulted in 250000 tokens.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        },
        {},
    ),
    "error-500": (500, {"message": "boom", "type": "server_error", "code": None}, {}),
    "error-503": (503, {"message": "overloaded", "type": "server_error", "code": None}, {}),
}


def _wants_tool_call(body: dict[str, Any]) -> bool:
    messages = body.get("messages") or []
    return bool(body.get("tools")) and not any(m.get("role") == "tool" for m in messages)


class OpenAIStandIn:
    """The stand-in's state: requests seen, and the event that releases ``slow``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.released = asyncio.Event()

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        return app

    async def embeddings(self, request: web.Request) -> web.Response:
        """``POST /v1/embeddings``."""
        body = orjson.loads(await request.read())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        model = body.get("model", "")
        if model in _ERRORS:
            status, error, headers = _ERRORS[model]
            return web.json_response({"error": error}, status=status, headers=headers)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if inputs and isinstance(inputs[0], int):
            inputs = [inputs]
        vector: Any = EMBEDDING
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack("<2f", *EMBEDDING)).decode()
        tokens = EMBEDDING_TOKENS * len(inputs)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i in range(len(inputs))
                ],
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions``."""
        body = orjson.loads(await request.read())
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        model = body.get("model", "")
        if model in _ERRORS:
            status, error, headers = _ERRORS[model]
            return web.json_response({"error": error}, status=status, headers=headers)
        if model == "slow":
            await self.released.wait()
        tool = _wants_tool_call(body)
        if not body.get("stream"):
            return web.json_response(self._completion(model, tool))
        return await self._stream(request, body, model, tool)

    @staticmethod
    def _completion(model: str, tool: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if tool:
            message["tool_calls"] = [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": "".join(TOOL_ARGUMENTS)},
                }
            ]
        else:
            message["content"] = "".join(TEXT_PIECES)
        return {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": model,
            "system_fingerprint": "fp_standin",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tool else "stop",
                }
            ],
            "usage": USAGE,
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, tool: bool
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        base = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
        }

        async def send(choices: list[dict[str, Any]], **extra: Any) -> None:
            await resp.write(
                b"data: " + orjson.dumps({**base, "choices": choices, **extra}) + b"\n\n"
            )

        def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        await send([choice({"role": "assistant", "content": ""})])
        if tool:
            await send(
                [
                    choice(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": "get_weather", "arguments": ""},
                                }
                            ]
                        }
                    )
                ]
            )
            for part in TOOL_ARGUMENTS:
                await send(
                    [choice({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})]
                )
        else:
            for piece in TEXT_PIECES:
                await send([choice({"content": piece})])
        finish = choice({}, "tool_calls" if tool else "stop")
        options = body.get("stream_options") or {}
        if model == "usage-on-last":
            await send([finish], usage=USAGE)
        else:
            await send([finish])
            if options.get("include_usage"):
                await send([], usage=USAGE)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp
