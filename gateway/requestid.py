"""Request ids: echo the client's ``x-request-id`` when valid, else mint one.

A pure ASGI middleware (no per-request Request objects) puts the id in the
scope and adds the ``x-request-id`` header to every HTTP response.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HEADER = b"x-request-id"
_ALLOWED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+=")


def new_request_id() -> str:
    """A fresh request id."""
    return "req_" + uuid.uuid4().hex


def request_id_of(scope: Scope) -> str | None:
    """The request id the middleware assigned, if any."""
    state: dict[str, Any] = scope.get("state") or {}
    rid = state.get("request_id")
    return rid if isinstance(rid, str) else None


class RequestIdMiddleware:
    """Assigns a request id and adds it to every response."""

    def __init__(self, app: ASGIApp, max_length: int = 128) -> None:
        self.app = app
        self.max_length = max_length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid: str | None = None
        for name, value in scope["headers"]:
            if name == _HEADER:
                if 0 < len(value) <= self.max_length and all(c in _ALLOWED for c in value):
                    rid = value.decode("ascii")
                break
        if rid is None:
            rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        header = (_HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0] != _HEADER]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
