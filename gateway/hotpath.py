"""The hot path: inference routes dispatched straight from ASGI, ahead of FastAPI.

``POST /v1/chat/completions`` and ``POST /v1/completions`` carry nearly all of
the traffic, so they skip FastAPI's middleware stack, router and exception
wrappers: this layer assigns the request id, calls the pipeline, renders any
Tollway error in OpenAI's shape, adds ``x-request-id`` and sends the response
(:mod:`gateway.sending`: a stream without Starlette's task group). Every other route
(admin, usage, models, health, metrics, docs) goes to the FastAPI app as usual.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.responses import error_response
from gateway.sending import send_response
from tollway.errors import TollwayError

log = logging.getLogger("tollway")

Handler = Callable[[Request], Awaitable[Response]]
_HEADER = b"x-request-id"
_ALLOWED = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+=")


class RequestIds:
    """Request ids: the client's when valid, else a process-unique fresh one.

    A random per-process prefix and a counter: unique across replicas without a
    syscall per request (``uuid4`` reads the OS's random source every time).
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self._prefix = "req_" + os.urandom(8).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}{next(self._counter):08x}"

    def of(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == _HEADER:
                if 0 < len(value) <= self.max_length and all(c in _ALLOWED for c in value):
                    return str(value.decode("ascii"))
                break
        return self.new()


class HotPath:
    """ASGI app: the inference routes directly, everything else through ``app``."""

    def __init__(self, app: ASGIApp, routes: dict[str, Handler], ids: RequestIds) -> None:
        self.app = app
        self.routes = routes
        self.ids = ids

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        response = await answer(handler, self.ids, scope, receive)
        await send_response(response, receive, send)


async def answer(handler: Handler, ids: RequestIds, scope: Scope, receive: Receive) -> Response:
    """Name the request, run its handler, and turn any error into OpenAI's shape.

    Shared by the ASGI hot path (:class:`HotPath`) and the connection's own cycle
    (:class:`gateway.hotcycle.HotCycle`), so both answer alike.
    """
    rid = ids.of(scope)
    scope.setdefault("state", {})["request_id"] = rid
    try:
        response = await handler(Request(scope, receive))
    except TollwayError as exc:
        return error_response(exc, rid)
    except Exception:
        log.exception("request %s failed", rid)
        return error_response(
            TollwayError("The server had an error while processing your request."), rid
        )
    response.raw_headers.append((_HEADER, rid.encode("ascii")))  # errors name it themselves
    return response
