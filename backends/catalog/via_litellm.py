"""The ``litellm`` transport: one ``litellm.acompletion`` call per request
(``litellm.aembedding`` for ``/v1/embeddings``).

The request body is re-parsed from its bytes (a private copy litellm may
change at will), OpenAI's parameters are passed as keyword arguments and any
other field goes to the provider in ``extra_body``, so a client can never set
litellm's own options (``api_base``, ``api_key``, ``mock_response``...).
Retries are off (fallbacks are the gateway's job) and usage is always asked for.
A stream is primed with its first chunk before :meth:`send` returns, so a
provider that fails at the start of a stream fails before the client saw a byte.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from backends.base import UpstreamRequest, UpstreamResponse
from backends.catalog.config import CatalogEntryConfig
from backends.catalog.errors import translate_litellm_errors
from backends.catalog.wire import StreamEncoder, completion_body
from tollway.errors import InvalidRequest

CHAT_PATH = "/v1/chat/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
#: Embeddings parameters passed to litellm by name (the gateway asks for floats).
EMBEDDING_PARAMETERS = frozenset({"input", "dimensions", "encoding_format", "user"})

#: Chat-completions parameters passed to litellm by name (it maps them per provider).
OPENAI_PARAMETERS = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "temperature",
        "top_p",
        "n",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "seed",
        "user",
        "reasoning_effort",
        "modalities",
        "audio",
        "prediction",
        "service_tier",
        "web_search_options",
    }
)
#: Set by this transport, or litellm options under an OpenAI name (``metadata`` is
#: litellm's logging dict, and carries the gateway's own agent and session hints).
_NOT_FORWARDED = frozenset({"model", "stream", "stream_options", "metadata"})


def call_arguments(payload: dict[str, Any]) -> dict[str, Any]:
    """litellm keyword arguments for an OpenAI chat body (the body is consumed)."""
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in payload.items():
        if key in _NOT_FORWARDED:
            continue
        if key in OPENAI_PARAMETERS:
            kwargs[key] = value
        else:
            extra[key] = value
    if extra:
        kwargs["extra_body"] = extra
    return kwargs


class LitellmTransport:
    """Calls one catalog entry's provider through litellm."""

    def __init__(
        self,
        config: CatalogEntryConfig,
        *,
        litellm: Any,
        api_key: str | None,
        label: str,
        upstream_model: str,
    ) -> None:
        self.config = config
        self.label = label
        self.upstream_model = upstream_model
        self._litellm = litellm
        t = config.timeouts
        self._fixed: dict[str, Any] = {
            "model": config.litellm_model,
            "timeout": httpx.Timeout(t.read_s, connect=t.connect_s),
            "max_retries": 0,
        }
        if config.api_base is not None:
            self._fixed["api_base"] = config.api_base
        if api_key is not None:
            self._fixed["api_key"] = api_key
        if config.drop_params:
            self._fixed["drop_params"] = True

    async def start(self) -> None:
        """Nothing to open: litellm keeps its own HTTP clients."""

    async def stop(self) -> None:
        """Nothing to close."""

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Call the provider; raise :mod:`tollway.errors` on failure."""
        if request.path == EMBEDDINGS_PATH:
            return await self._embed(request)
        if request.path != CHAT_PATH:
            raise InvalidRequest(
                f"{self.label} serves {CHAT_PATH} and {EMBEDDINGS_PATH} only",
                code="unsupported_endpoint",
            )
        kwargs = call_arguments(orjson.loads(request.body))
        kwargs.update(self._fixed)
        total = self.config.timeouts.total_s
        if not request.stream:
            with translate_litellm_errors(self._litellm, self.label):
                async with asyncio.timeout(total):
                    response = await self._litellm.acompletion(**kwargs)
                data = response.model_dump()
            body, _usage = completion_body(data, self.upstream_model)
            return UpstreamResponse(status=200, route=self.label, worker=self.label, body=body)
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        deadline = asyncio.get_running_loop().time() + total
        with translate_litellm_errors(self._litellm, self.label):
            async with asyncio.timeout_at(deadline):
                stream = await self._litellm.acompletion(**kwargs)
        encoder = StreamEncoder(self.upstream_model)
        try:
            first = await self._next(stream, deadline)
        except BaseException:
            await _close(stream)
            raise
        return UpstreamResponse(
            status=200,
            route=self.label,
            worker=self.label,
            stream=self._events(stream, first, encoder, deadline),
            _close=lambda: _close(stream),
        )

    async def _embed(self, request: UpstreamRequest) -> UpstreamResponse:
        """``litellm.aembedding``: an OpenAI ``CreateEmbeddingResponse`` body."""
        payload = orjson.loads(request.body)
        kwargs = {k: v for k, v in payload.items() if k in EMBEDDING_PARAMETERS}
        kwargs.update(self._fixed)
        with translate_litellm_errors(self._litellm, self.label):
            async with asyncio.timeout(self.config.timeouts.total_s):
                response = await self._litellm.aembedding(**kwargs)
            data = response.model_dump()
        body: dict[str, Any] = {
            "object": "list",
            "data": data.get("data") or [],
            "model": self.upstream_model,
        }
        usage = data.get("usage")
        if isinstance(usage, dict) and usage.get("prompt_tokens") is not None:
            prompt = usage["prompt_tokens"]  # checked by the gateway, as every usage
            body["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
        return UpstreamResponse(
            status=200, route=self.label, worker=self.label, body=orjson.dumps(body)
        )

    async def _next(self, stream: Any, deadline: float) -> Any | None:
        """The next chunk, or ``None`` at the end of the stream."""
        with translate_litellm_errors(self._litellm, self.label):
            async with asyncio.timeout_at(deadline):
                try:
                    return await anext(stream)
                except StopAsyncIteration:
                    return None

    async def _events(
        self, stream: Any, first: Any | None, encoder: StreamEncoder, deadline: float
    ) -> AsyncIterator[bytes]:
        chunk = first
        while chunk is not None:
            event = encoder.event(chunk.model_dump())
            if event:
                yield event
            chunk = await self._next(stream, deadline)
        yield encoder.finish()


async def _close(stream: Any) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        # Closing a stream that already failed or finished may raise; nothing to report.
        with contextlib.suppress(Exception):
            await close()
