"""A canned OpenAI-compatible upstream, fast enough never to be the bottleneck.

It speaks HTTP/1.1 on a raw asyncio protocol (uvloop when installed): keep-alive,
pipelined requests, requests split across reads, ``Content-Length`` and chunked request
bodies. Every response is pre-encoded bytes, cached per (model, stream, include_usage).

Routes (SGLang-shaped where SGLang has them):

- ``POST /v1/chat/completions``: a ``chat.completion`` with ``usage`` (including
  ``prompt_tokens_details.cached_tokens``); with ``"stream": true`` an SSE stream sent
  with chunked transfer encoding: a role chunk, content chunks, a final chunk with
  ``finish_reason``, a usage chunk with ``choices: []`` when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``.
- ``GET /health``, ``GET /health_generate``: 200, empty body.
- ``GET /server_info``, ``GET /get_server_info`` (deprecated): JSON with
  ``max_total_num_tokens``.
- ``GET /get_model_info``, ``GET /v1/models``: the served model.
- ``GET /get_load``: SGLang's per-data-parallel-rank load list.

Run: ``python -m bench.upstream --port 30000``.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any, cast

import orjson

MODEL = "llama-3.1-8b-instruct"
CREATED = 1_700_000_000
CONTENT_PIECES = ("Hello", " from", " the", " canned", " upstream", ".")
PROMPT_TOKENS = 12
CACHED_TOKENS = 8
MAX_TOTAL_NUM_TOKENS = 500_000
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
_CACHE_LIMIT = 256

_STATUS_TEXT = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    431: b"Request Header Fields Too Large",
}


def _usage() -> dict[str, Any]:
    completion = len(CONTENT_PIECES)
    return {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": completion,
        "total_tokens": PROMPT_TOKENS + completion,
        "prompt_tokens_details": {"cached_tokens": CACHED_TOKENS},
    }


def _head(status: int, content_type: bytes, length: int | None, keep_alive: bool) -> bytes:
    lines = [
        b"HTTP/1.1 %d %s" % (status, _STATUS_TEXT.get(status, b"Unknown")),
        b"server: bench-upstream",
        b"content-type: " + content_type,
    ]
    if length is None:
        lines.append(b"transfer-encoding: chunked")
    else:
        lines.append(b"content-length: %d" % length)
    lines.append(b"connection: keep-alive" if keep_alive else b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def json_response(status: int, payload: object, keep_alive: bool = True) -> bytes:
    """Encode a full HTTP/1.1 JSON response."""
    body = orjson.dumps(payload)
    return _head(status, b"application/json", len(body), keep_alive) + body


def empty_response(status: int, keep_alive: bool = True) -> bytes:
    """Encode a full HTTP/1.1 response with an empty body."""
    return _head(status, b"text/plain", 0, keep_alive)


def completion_response(model: str, keep_alive: bool = True) -> bytes:
    """Encode the canned non-streaming ``chat.completion`` response."""
    payload = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(CONTENT_PIECES)},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(),
    }
    return json_response(200, payload, keep_alive)


def _chunk(payload: object) -> bytes:
    data = b"data: " + (payload if isinstance(payload, bytes) else orjson.dumps(payload))
    data += b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def stream_response(model: str, include_usage: bool, keep_alive: bool = True) -> bytes:
    """Encode the canned SSE stream as a chunked HTTP/1.1 response."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED}
    base["model"] = model

    def choice(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    parts = [_head(200, b"text/event-stream", None, keep_alive)]
    parts.append(_chunk({**base, "choices": [choice({"role": "assistant", "content": ""}, None)]}))
    for piece in CONTENT_PIECES:
        parts.append(_chunk({**base, "choices": [choice({"content": piece}, None)]}))
    parts.append(_chunk({**base, "choices": [choice({}, "stop")]}))
    if include_usage:
        parts.append(_chunk({**base, "choices": [], "usage": _usage()}))
    parts.append(_chunk(b"[DONE]"))
    parts.append(b"0\r\n\r\n")
    return b"".join(parts)


class _Responses:
    """Pre-encoded responses, built once per distinct request shape."""

    def __init__(self) -> None:
        self._chat: dict[tuple[str, bool, bool, bool], bytes] = {}
        self.health = {k: empty_response(200, k) for k in (True, False)}
        self.not_found = {k: json_response(404, {"error": "not found"}, k) for k in (True, False)}
        self.bad_request = json_response(400, {"error": "bad request"}, False)
        self.server_info = {
            k: json_response(
                200,
                {
                    "model_path": MODEL,
                    "served_model_name": MODEL,
                    "max_total_num_tokens": MAX_TOTAL_NUM_TOKENS,
                    "max_running_requests": 1024,
                    "page_size": 1,
                    "tp_size": 1,
                    "dp_size": 1,
                    "version": "bench-upstream",
                },
                k,
            )
            for k in (True, False)
        }
        self.model_info = {
            k: json_response(200, {"model_path": MODEL, "is_generation": True}, k)
            for k in (True, False)
        }
        self.models = {
            k: json_response(
                200,
                {
                    "object": "list",
                    "data": [
                        {"id": MODEL, "object": "model", "created": CREATED, "owned_by": "bench"}
                    ],
                },
                k,
            )
            for k in (True, False)
        }

    def chat(self, body: bytes, keep_alive: bool) -> bytes:
        """The response for one chat-completions request body."""
        model, stream, include_usage = MODEL, False, False
        if body:
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                return self.bad_request
            if isinstance(request, dict):
                name = request.get("model")
                model = name if isinstance(name, str) and len(name) < 256 else MODEL
                stream = request.get("stream") is True
                options = request.get("stream_options")
                include_usage = isinstance(options, dict) and options.get("include_usage") is True
        key = (model, stream, include_usage, keep_alive)
        response = self._chat.get(key)
        if response is None:
            if len(self._chat) >= _CACHE_LIMIT:
                self._chat.clear()
            if stream:
                response = stream_response(model, include_usage, keep_alive)
            else:
                response = completion_response(model, keep_alive)
            self._chat[key] = response
        return response

    def load(self, inflight: int, keep_alive: bool) -> bytes:
        """SGLang's ``/get_load`` shape: one entry per data-parallel rank."""
        payload = [
            {
                "dp_rank": 0,
                "num_reqs": inflight,
                "num_waiting_reqs": 0,
                "num_tokens": inflight * PROMPT_TOKENS,
            }
        ]
        return json_response(200, payload, keep_alive)


def _decode_chunked(buf: bytearray, start: int) -> tuple[bytes, int] | None:
    """Decode a chunked body starting at ``start``; ``None`` until it is complete."""
    body = bytearray()
    pos = start
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip() or b"0", 16)
        pos = eol + 2
        if size == 0:
            # Skip trailers up to the blank line.
            while True:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return bytes(body), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        body += buf[pos : pos + size]
        pos += size + 2
        if len(body) > MAX_BODY_BYTES:
            raise ValueError("body too large")


class UpstreamProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse every complete request in the buffer, reply in order."""

    def __init__(self, responses: _Responses, stats: dict[str, int]) -> None:
        self._responses = responses
        self._stats = stats
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        buf = self._buf
        buf += data
        out: list[bytes] = []
        close = False
        try:
            while True:
                parsed = self._next_request(buf)
                if parsed is None:
                    break
                response, keep_alive = parsed
                out.append(response)
                if not keep_alive:
                    close = True
                    break
        except ValueError:
            out.append(self._responses.bad_request)
            close = True
        if out:
            transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close:
            buf.clear()
            transport.close()

    def _next_request(self, buf: bytearray) -> tuple[bytes, bool] | None:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEADER_BYTES:
                raise ValueError("headers too large")
            return None
        lines = bytes(buf[:end]).split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise ValueError("bad request line")
        method, target, version = parts
        keep_alive = version == b"HTTP/1.1"
        length = 0
        chunked = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
                if length < 0 or length > MAX_BODY_BYTES:
                    raise ValueError("bad content-length")
            elif name == b"connection":
                token = value.strip().lower()
                if token == b"close":
                    keep_alive = False
                elif token == b"keep-alive":
                    keep_alive = True
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        start = end + 4
        if chunked:
            decoded = _decode_chunked(buf, start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            if len(buf) < start + length:
                return None
            body = bytes(buf[start : start + length])
            consumed = start + length
        del buf[:consumed]
        self._stats["requests"] += 1
        return self._route(method, target.split(b"?", 1)[0], body, keep_alive), keep_alive

    def _route(self, method: bytes, path: bytes, body: bytes, keep_alive: bool) -> bytes:
        r = self._responses
        if path == b"/v1/chat/completions" and method == b"POST":
            return r.chat(body, keep_alive)
        if method != b"GET":
            return r.not_found[keep_alive]
        if path in (b"/health", b"/health_generate"):
            return r.health[keep_alive]
        if path in (b"/server_info", b"/get_server_info"):
            return r.server_info[keep_alive]
        if path == b"/get_model_info":
            return r.model_info[keep_alive]
        if path == b"/v1/models":
            return r.models[keep_alive]
        if path == b"/get_load":
            return r.load(0, keep_alive)
        return r.not_found[keep_alive]


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    """Serve until cancelled or until SIGINT/SIGTERM."""
    loop = asyncio.get_running_loop()
    responses = _Responses()
    stats = {"requests": 0}
    server = await loop.create_server(
        lambda: UpstreamProtocol(responses, stats), host, port, reuse_address=True, backlog=4096
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            # Not the main thread (tests run the upstream in-process): the caller stops
            # it through ``stop`` instead of a signal.
            pass
    if ready is not None:
        ready.set()
    async with server:
        await stop.wait()


def install_uvloop() -> str:
    """Use uvloop when it is installed; return the loop's name."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=30000)
    args = parser.parse_args(argv)
    install_uvloop()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
