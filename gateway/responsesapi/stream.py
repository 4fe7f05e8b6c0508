"""A chat completions stream translated to the Responses API's typed stream events.

:class:`ResponseStream` reads the SSE bytes of the pipeline's chat stream and yields
``response.created`` and ``response.in_progress``; for a run of text a ``message``
item (``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta`` …, ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``); for each tool call
a ``function_call`` item (``response.output_item.added``,
``response.function_call_arguments.delta`` …, ``…arguments.done``,
``response.output_item.done``); at ``[DONE]`` the finished response is handed to
``on_finish`` (which stores it) and ``response.completed`` (or
``response.incomplete`` when max tokens cut it) ends the stream. Every event
carries ``sequence_number`` (0, 1, 2 …).

An error inside the stream (the relay's error event, a stream cut short, a failure
to store) is an ``error`` event followed by ``response.failed``. Like the relay it
wraps, it has its own ``aclose()`` that closes the chat stream whether or not
iteration began, so the request is released (and billed) exactly once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable
from typing import Any

import orjson

from gateway.responsesapi.items import new_id
from gateway.responsesapi.replies import call_item, finish, text_item, text_part, usage

_DONE = b"[DONE]"

Finisher = Callable[[dict[str, Any]], Awaitable[None]]


def sse(data: dict[str, Any]) -> bytes:
    """One SSE event: ``event:`` names its ``type``."""
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def failure_code(status: int) -> str:
    """The ``Response.error.code`` for an error of HTTP status ``status``."""
    if status == 429:
        return "rate_limit_exceeded"
    return "invalid_prompt" if 400 <= status < 500 else "server_error"


class ResponseStream:
    """Responses stream events for the chat stream ``chunks``."""

    def __init__(
        self,
        chunks: AsyncIterable[str | bytes | memoryview],
        response: dict[str, Any],
        on_finish: Finisher,
    ) -> None:
        self.chunks = chunks
        self.response = response
        self.on_finish = on_finish
        self._gen: AsyncGenerator[bytes, None] | None = None
        self._seq = 0
        self._open: dict[str, Any] | None = None  # the item being streamed
        self._open_key: str | None = None  # "text", or "tool:<chat index>"
        self._finish: Any = None
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

    def _event(self, data: dict[str, Any]) -> bytes:
        data["sequence_number"] = self._seq
        self._seq += 1
        return sse(data)

    async def _events(self) -> AsyncGenerator[bytes, None]:
        yield self._event({"type": "response.created", "response": self.response})
        yield self._event({"type": "response.in_progress", "response": self.response})
        pending = b""
        ended = False
        async for block in self.chunks:
            if ended:  # read to its end: what wraps the chat stream finishes there
                continue
            pending += block.encode() if isinstance(block, str) else bytes(block)
            out: list[bytes] = []
            done = False
            while not ended and (end := pending.find(b"\n\n")) >= 0:
                event, pending = pending[:end], pending[end + 2 :]
                data = _data_of(event)
                if data is None:
                    continue
                if data == _DONE:
                    done = ended = True
                else:
                    ended = self._chunk(data, out)
            if out:
                yield b"".join(out)
            if done:
                yield await self._end()
        if not ended:
            yield self._fail("server_error", "The stream ended before it was complete.")

    def _chunk(self, data: bytes, out: list[bytes]) -> bool:
        """Translate one chat chunk into ``out``; True when it ended the stream (an error)."""
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(chunk, dict):
            return False
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {}
            kind = error.get("type")
            status = 429 if kind in ("requests", "tokens", "insufficient_quota") else 500
            if kind == "invalid_request_error":
                status = 400
            message = str(error.get("message") or "The upstream failed.")
            out.append(self._fail(failure_code(status), message))
            return True
        if isinstance(chunk.get("usage"), dict):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # n > 1 has no Responses form: the first choice only
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                self._text(text, out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._tool(call, out)
            if choice.get("finish_reason") is not None:
                self._finish = choice["finish_reason"]
        return False

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open_key != "text":
            self._close(out)
            item = text_item(new_id("msg"), "")
            item["status"], item["content"] = "in_progress", []
            self._add(item, "text", out)
            part = text_part("")
            out.append(
                self._event(
                    {
                        **self._where(),
                        "type": "response.content_part.added",
                        "content_index": 0,
                        "part": part,
                    }
                )
            )
        assert self._open is not None
        self._open["_text"] = self._open.get("_text", "") + text
        out.append(
            self._event(
                {
                    **self._where(),
                    "type": "response.output_text.delta",
                    "content_index": 0,
                    "delta": text,
                    "logprobs": [],
                }
            )
        )

    def _tool(self, call: dict[str, Any], out: list[bytes]) -> None:
        key = f"tool:{call.get('index', 0)}"
        function = call.get("function") or {}
        if self._open_key != key:
            self._close(out)
            item = call_item(
                new_id("fc"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                "",
            )
            item["status"] = "in_progress"
            self._add(item, key, out)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            assert self._open is not None
            self._open["arguments"] += arguments
            out.append(
                self._event(
                    {
                        **self._where(),
                        "type": "response.function_call_arguments.delta",
                        "delta": arguments,
                    }
                )
            )

    def _where(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self.response["output"]) - 1}

    def _add(self, item: dict[str, Any], key: str, out: list[bytes]) -> None:
        self.response["output"].append(item)
        self._open, self._open_key = item, key
        public = {k: v for k, v in item.items() if not k.startswith("_")}
        out.append(
            self._event(
                {
                    "type": "response.output_item.added",
                    "output_index": len(self.response["output"]) - 1,
                    "item": public,
                }
            )
        )

    def _close(self, out: list[bytes], status: str = "completed") -> None:
        item = self._open
        if item is None:
            return
        where = self._where()
        if item["type"] == "message":
            text = item.pop("_text", "")
            part = text_part(text)
            out.append(
                self._event(
                    {
                        **where,
                        "type": "response.output_text.done",
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    }
                )
            )
            out.append(
                self._event(
                    {
                        **where,
                        "type": "response.content_part.done",
                        "content_index": 0,
                        "part": part,
                    }
                )
            )
            item["content"] = [part]
        else:
            out.append(
                self._event(
                    {
                        **where,
                        "type": "response.function_call_arguments.done",
                        "name": item["name"],
                        "arguments": item["arguments"],
                    }
                )
            )
        item["status"] = status if item["type"] == "message" else "completed"
        out.append(
            self._event(
                {
                    "type": "response.output_item.done",
                    "output_index": where["output_index"],
                    "item": dict(item),
                }
            )
        )
        self._open = self._open_key = None

    async def _end(self) -> bytes:
        out: list[bytes] = []
        cut = self._finish in ("length", "content_filter")
        self._close(out, "incomplete" if cut else "completed")
        self.response["usage"] = usage(self._usage)
        finish(self.response, self._finish)
        try:
            await self.on_finish(self.response)
        except Exception as exc:  # noqa: BLE001 - the client hears of it in the stream
            message = getattr(exc, "message", "The response could not be stored.")
            out.append(self._fail("server_error", str(message)))
            return b"".join(out)
        kind = (
            "response.completed"
            if self.response["status"] == "completed"
            else ("response.incomplete")
        )
        out.append(self._event({"type": kind, "response": self.response}))
        return b"".join(out)

    def _fail(self, code: str, message: str) -> bytes:
        out: list[bytes] = []
        self._close(out, "incomplete")
        out.append(self._event({"type": "error", "code": code, "message": message, "param": None}))
        self.response["status"] = "failed"
        self.response["error"] = {"code": code, "message": message}
        out.append(self._event({"type": "response.failed", "response": self.response}))
        return b"".join(out)


def _data_of(event: bytes) -> bytes | None:
    """The ``data`` of one SSE event (None for comments and events without data)."""
    lines = [line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None
