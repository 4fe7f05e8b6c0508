"""Reading a request body once, within the size limit, and parsing it with orjson.

Limits on input, each with a clear OpenAI-shaped error: the body's size (413,
before it is read whole when ``content-length`` declares it), its JSON nesting
depth (400 ``json_too_deep``: a walk over the parsed containers, level by
level, with no recursion; about 0.7 ms for a 128K-token agent conversation,
under orjson's own parse time), and a body the client stopped sending (408
``request_timeout``: the connection protocol, :mod:`gateway.protocol`, answers
a body that does not arrive in time and drops the connection, and the app sees
the disconnect here).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from tollway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

DEFAULT_MAX_JSON_DEPTH = 64


def _too_large(limit: int) -> PayloadTooLarge:
    # The rest of the body is not read: the connection closes after the answer.
    return PayloadTooLarge(
        f"Request body is larger than the limit of {limit} bytes.",
        headers={"connection": "close"},
    )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) anything over ``limit`` bytes before reading it all.

    Reads the ASGI messages itself (no Starlette stream generator per request)."""
    declared = _content_length(request.scope["headers"])
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _too_large(limit)
        except ValueError:
            raise InvalidRequest("Invalid Content-Length header.", code="invalid_header") from None
    receive = request.receive
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                parts.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise RequestTimeout(
                "The request body was not received in full: the client was too slow or "
                "closed the connection.",
                headers={"connection": "close"},
            )
    return b"".join(parts)


def _content_length(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name == b"content-length":
            return value
    return None


def json_depth_exceeds(data: Any, max_depth: int) -> bool:
    """Whether ``data`` nests objects and arrays deeper than ``max_depth`` levels.

    ``{}`` and ``[]`` are depth 1. Visits each container once, level by level.
    """
    level = [data] if type(data) is dict or type(data) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        deeper: list[Any] = []
        for node in level:
            for value in node.values() if type(node) is dict else node:
                kind = type(value)
                if kind is dict or kind is list:
                    deeper.append(value)
        level = deeper
    return False


def parse_json_object(raw: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    """Parse a JSON object body nested at most ``max_depth`` deep; 400 for anything else."""
    if not raw:
        raise InvalidRequest(
            "We could not parse the JSON body of your request: the body is empty.",
            code="invalid_json",
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request: {exc}.", code="invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise InvalidRequest(
            "The JSON body of your request must be an object.", code="invalid_json"
        )
    if json_depth_exceeds(data, max_depth):
        raise InvalidRequest(
            f"The JSON body of your request is nested more than {max_depth} levels deep.",
            code="json_too_deep",
        )
    return data


async def read_json_object(
    request: Request, limit: int, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> dict[str, Any]:
    """Read and parse a JSON object body within ``limit`` bytes and ``max_depth`` levels."""
    return parse_json_object(await read_body(request, limit), max_depth)
