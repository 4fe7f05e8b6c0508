"""A chat completions stream translated to Anthropic's Messages stream events.

:class:`MessageStream` reads the SSE bytes of the pipeline's chat stream (whole
events, as the relay cuts them, or any other cut: it frames them itself) and
yields Anthropic's events: ``message_start`` and a ``ping``; for each run of text
a ``text`` block and for each tool call a ``tool_use`` block
(``content_block_start``, ``content_block_delta`` with ``text_delta`` or
``input_json_delta``, ``content_block_stop``); at ``[DONE]`` a ``message_delta``
(``stop_reason``, ``stop_sequence``, ``usage``) and ``message_stop``. An error
event of the chat stream (the relay's, in OpenAI's shape) becomes an Anthropic
``error`` event and ends the stream. Reasoning deltas are not translated.

Like the relay it wraps, it is an object with its own ``aclose()`` that closes the
chat stream whether or not iteration began, so the request is released (and
billed) exactly once however the client's stream ends.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable
from typing import Any

import orjson

from gateway.anthropic.errors import error_body, error_from_openai
from gateway.anthropic.replies import stop_reason, usage
from tollway.errors import UpstreamStreamBroken

_DONE = b"[DONE]"


def sse(event: str, data: dict[str, Any]) -> bytes:
    """One Anthropic SSE event: ``event:`` names its ``type``."""
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessageStream:
    """Anthropic stream events for the chat stream ``chunks``."""

    def __init__(
        self,
        chunks: AsyncIterable[str | bytes | memoryview],
        *,
        message_id: str,
        model: str,
        input_tokens: int,
        stop_sequences: list[str] | None,
    ) -> None:
        self.chunks = chunks
        self.message_id = message_id
        self.model = model
        self.input_tokens = input_tokens
        self.stop_sequences = stop_sequences
        self._gen: AsyncGenerator[bytes, None] | None = None
        # The translation's state.
        self._index = -1  # the open block's index
        self._open: str | None = None  # "text", or "tool:<chat index>"
        self._finish: Any = None
        self._matched: Any = None
        self._usage: Any = None

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        if self._gen is None:
            self._gen = self._events()
        return self._gen

    async def aclose(self) -> None:
        """Stop, and close the chat stream (idempotent; whether or not iteration began)."""
        try:
            if self._gen is not None:
                await self._gen.aclose()
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _events(self) -> AsyncGenerator[bytes, None]:
        yield sse("message_start", self._start())
        yield sse("ping", {"type": "ping"})
        pending = b""
        ended = False
        async for block in self.chunks:
            if ended:  # read to its end: what wraps the chat stream finishes there
                continue
            pending += block.encode() if isinstance(block, str) else bytes(block)
            out: list[bytes] = []
            while not ended and (end := pending.find(b"\n\n")) >= 0:
                event, pending = pending[:end], pending[end + 2 :]
                data = _data_of(event)
                if data is None:
                    continue
                if data == _DONE:
                    out.extend(self._end())
                    ended = True
                else:
                    ended = self._chunk(data, out)
            if out:
                yield b"".join(out)
        if ended:
            return
        broken = UpstreamStreamBroken("The stream ended before it was complete.")
        out = []
        self._close_block(out)
        out.append(sse("error", error_body(broken)))
        yield b"".join(out)

    def _start(self) -> dict[str, Any]:
        return {
            "type": "message_start",
            "message": {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
            },
        }

    def _chunk(self, data: bytes, out: list[bytes]) -> bool:
        """Translate one chat chunk into ``out``; True when it ended the stream (an error)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(chunk, dict):
            return False
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"]
            kind = error.get("type") if isinstance(error, dict) else None
            status = 400 if kind == "invalid_request_error" else 500
            self._close_block(out)
            out.append(sse("error", error_body(error_from_openai(chunk, status))))
            return True
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 has no Anthropic form: the first choice only
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._open_block("text", {"type": "text", "text": ""}, out)
                delta_event = {"type": "text_delta", "text": text}
                out.append(self._delta(delta_event))
            for call in delta.get("tool_calls") or ():
                self._tool_delta(call, out)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
                self._matched = choice.get("matched_stop")
        return False

    def _tool_delta(self, call: Any, out: list[bytes]) -> None:
        if not isinstance(call, dict):
            return
        key = f"tool:{call.get('index', 0)}"
        function = call.get("function") or {}
        if self._open != key:
            block = {
                "type": "tool_use",
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "input": {},
            }
            self._open_block(key, block, out)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))

    def _open_block(self, key: str, block: dict[str, Any], out: list[bytes]) -> None:
        if self._open == key:
            return
        self._close_block(out)
        self._index += 1
        self._open = key
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        out.append(sse("content_block_start", start))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            stop = {"type": "content_block_stop", "index": self._index}
            out.append(sse("content_block_stop", stop))
            self._open = None

    def _delta(self, delta: dict[str, Any]) -> bytes:
        event = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return sse("content_block_delta", event)

    def _end(self) -> list[bytes]:
        out: list[bytes] = []
        self._close_block(out)
        reason, sequence = stop_reason(self._finish, self._matched, self.stop_sequences)
        counted = usage(self._usage)
        if self._usage is None:
            counted["input_tokens"] = self.input_tokens
        delta = {"stop_reason": reason or "end_turn", "stop_sequence": sequence}
        ending = {"type": "message_delta", "delta": delta, "usage": counted}
        out.append(sse("message_delta", ending))
        out.append(sse("message_stop", {"type": "message_stop"}))
        return out


def _data_of(event: bytes) -> bytes | None:
    """The ``data`` of one SSE event (None for comments and events without data)."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
