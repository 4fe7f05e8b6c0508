"""The handlers of ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Both take the key from ``x-api-key`` or ``Authorization: Bearer``; ``anthropic-version``
and ``anthropic-beta`` are accepted and not read (no beta changes what is served).
``/v1/messages`` runs the chat pipeline on the translated body
(:meth:`gateway.pipeline.InferencePipeline.translated`) and translates its answer;
``count_tokens`` counts the translated conversation with the gateway's token counter.
Every error is answered in Anthropic's shape (:mod:`gateway.anthropic.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway.anthropic.errors import JSON, anthropic_error_response, error_from_openai
from gateway.anthropic.replies import message_id, to_message
from gateway.anthropic.stream import MessageStream
from gateway.anthropic.translate import to_chat
from gateway.body import parse_json_object, read_body
from gateway.pipeline import InferencePipeline
from gateway.requestid import request_id_of
from gateway.translation import Translation
from tollway.errors import TollwayError

log = logging.getLogger("tollway")

MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"
#: Response headers that describe the chat body, not the translated one.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


def credentials_of(request: Request) -> str | None:
    """The caller's key as an ``Authorization`` value: ``x-api-key``, else the bearer."""
    key = request.headers.get("x-api-key")
    if key is not None:
        return f"Bearer {key.strip()}"
    return request.headers.get("authorization")


@dataclass(slots=True)
class _Asked:
    """What the translation saw of the request, for translating the answer back."""

    model: str = ""
    stream: bool = False
    stop_sequences: list[str] | None = None
    input_tokens: int = 0


class MessagesApi:
    """Anthropic's Messages API over an :class:`InferencePipeline`."""

    def __init__(self, pipeline: InferencePipeline) -> None:
        self.pipeline = pipeline

    async def messages(self, request: Request) -> Response:
        """``POST /v1/messages``."""
        return await _anthropic_errors(request, self._messages)

    async def count_tokens(self, request: Request) -> Response:
        """``POST /v1/messages/count_tokens``."""
        return await _anthropic_errors(request, self._count_tokens)

    async def _messages(self, request: Request) -> Response:
        asked = _Asked()
        counter = self.pipeline.responder.counter

        def translate(body: dict[str, Any]) -> dict[str, Any]:
            chat = to_chat(body)
            asked.model = str(body.get("model", ""))
            asked.stream = bool(chat.get("stream"))
            asked.stop_sequences = chat.get("stop")
            if asked.stream:
                asked.input_tokens = counter.count_messages(chat["messages"])
            return chat

        translation = Translation(MESSAGES_PATH, credentials_of(request), translate)
        response = await self.pipeline.translated(request, translation)
        rid = request_id_of(request.scope) or ""
        try:
            translated = _translate_back(response, asked, rid)
        except Exception as exc:  # noqa: BLE001 - answered in Anthropic's shape, released below
            if not isinstance(exc, TollwayError):
                log.exception("request %s: translating the answer failed", rid)
                exc = TollwayError("The server had an error while processing your request.")
            translated = anthropic_error_response(exc, rid)
        # The pipeline's work after the response is sent (settling limits, the access
        # log) goes with whatever answers the client.
        translated.background = response.background
        return translated

    async def _count_tokens(self, request: Request) -> Response:
        pipeline = self.pipeline
        principal = await pipeline.auth.authenticate(credentials_of(request))
        raw = await read_body(request, pipeline.max_body_bytes)
        chat = to_chat(parse_json_object(raw, pipeline.max_json_depth), counting=True)
        entry = pipeline.registry.entry(str(chat.get("model", "")))
        principal.check_model(entry.name)
        counter = pipeline.responder.counter
        tokens = counter.count_messages(chat["messages"])
        if chat.get("tools"):
            tokens += counter.count_text(orjson.dumps(chat["tools"]).decode())
        return Response(orjson.dumps({"input_tokens": tokens}), media_type=JSON)


def _translate_back(response: Response, asked: _Asked, rid: str) -> Response:
    """The Anthropic response for the pipeline's chat ``response``."""
    headers = {k: v for k, v in response.headers.items() if k not in _BODY_HEADERS}
    headers["request-id"] = rid
    if isinstance(response, StreamingResponse):
        stream = MessageStream(
            response.body_iterator,
            message_id=message_id(rid),
            model=asked.model,
            input_tokens=asked.input_tokens,
            stop_sequences=asked.stop_sequences,
        )
        return StreamingResponse(
            stream,
            status_code=response.status_code,
            headers=headers,
            media_type="text/event-stream",
        )
    data = orjson.loads(bytes(response.body))
    if response.status_code != 200:  # a stored error answer, replayed
        raise error_from_openai(data, response.status_code)
    message = to_message(data, rid, asked.model, asked.stop_sequences)
    return Response(orjson.dumps(message), headers=headers, media_type=JSON)


async def _anthropic_errors(
    request: Request, handler: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Run ``handler``; any error becomes Anthropic's error response."""
    rid = request_id_of(request.scope)
    try:
        return await handler(request)
    except TollwayError as exc:
        return anthropic_error_response(exc, rid)
    except Exception:
        log.exception("request %s failed", rid)
        error = TollwayError("The server had an error while processing your request.")
        return anthropic_error_response(error, rid)
