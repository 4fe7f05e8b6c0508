"""The one dispatch path: every HTTP request passes here, once, before any body is read.

:class:`Dispatcher` is the gateway's ASGI app. For each request it makes one
pass over the header list (:func:`scan_headers`) and then, in this order:

1. refuses a repeated credential or request-identity header (``authorization``,
   ``x-api-key``, ``x-agent-type``, ``x-session-id``, ``idempotency-key``,
   ``x-request-id``) with 400 ``duplicate_header`` naming it in ``param``, so
   that no route reads the first copy where another reads the last;
2. names the request (:class:`gateway.requestid.RequestIds`) and adds
   ``x-request-id`` to whatever answers it;
3. dispatches the inference routes of the :class:`~gateway.routes.RouteTable`
   to their handler (405 for another method), which authenticates the caller
   before it reads the body within the limit;
4. for every other route, checks credentials before any body is read: the
   admin token on ``/admin/…`` (and ``/metrics`` when
   ``metrics.require_admin_token`` is on), a tenant key on other ``/v1/…``
   routes sent with a body (401/403);
5. refuses a declared ``content-length`` over ``server.max_body_bytes`` with 413
   before reading anything; reads a body sent without a declared length
   counting it, and refuses it at the limit (:func:`gateway.body.read_body`);
   then hands the request to FastAPI (a route that takes no body ignores it).

An inference route's client that hangs up after sending its body cancels the
handler (:class:`gateway.sending.Departure`; on the gateway's own server the protocol
calls it back, no task waits for the disconnect): the pipeline releases what the
request holds (a worker slot, a connection to a hung upstream) and bills it once.

So on every route: duplicate headers (400), then credentials (401/403), then
the body's size (413), then the body. A request answered before its body was
read closes its connection (:mod:`gateway.protocol`).

Errors are rendered in the shape of the route's API (``InferenceRoute.api``:
Anthropic's on ``/v1/messages`` and ``/v1/messages/count_tokens``, OpenAI's
everywhere else) and written by :func:`gateway.sending.send_response`, the one
response writer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.body import read_body
from gateway.requestid import HEADER, RequestIds
from gateway.responses import error_response
from gateway.routes import OPENAI, Handler, RouteTable
from gateway.sending import Departure, send_response
from tollway.errors import InvalidRequest, MethodNotAllowed, TollwayError

log = logging.getLogger("tollway")

#: Headers that must appear at most once (one reading on every route).
SINGLE = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"x-agent-type",
        b"x-session-id",
        b"idempotency-key",
        HEADER,
    }
)
_TENANT = "/v1/"


class Head:
    """What the dispatcher needs from a request's headers, from one pass over them."""

    __slots__ = ("single", "content_length", "chunked")

    def __init__(self) -> None:
        self.single: dict[bytes, bytes] = {}
        self.content_length: bytes | None = None
        self.chunked = False


def scan_headers(headers: list[tuple[bytes, bytes]]) -> Head:
    """One pass over the (lower-cased) header list; 400 ``duplicate_header`` for a
    header of :data:`SINGLE` sent twice."""
    head = Head()
    single = head.single
    for name, value in headers:
        if name in SINGLE:
            if name in single:
                text = name.decode("latin-1")
                raise InvalidRequest(
                    f"The header `{text}` was sent more than once; send it once.",
                    param=text,
                    code="duplicate_header",
                )
            single[name] = value
        elif name == b"content-length":
            head.content_length = value
        elif name == b"transfer-encoding":
            head.chunked = True
    return head


class Dispatcher:
    """ASGI app: the checks above, then the inference routes or FastAPI (``app``)."""

    def __init__(
        self,
        app: ASGIApp,
        table: RouteTable,
        ids: RequestIds,
        *,
        max_body_bytes: int,
        admin_check: Callable[[str | None], None],
        authenticate: Callable[[str | None], Awaitable[object]],
        admin_paths: tuple[str, ...] = ("/admin/",),
    ) -> None:
        self.app = app
        self.table = table
        self.ids = ids
        self.max_body_bytes = max_body_bytes
        self.admin_check = admin_check
        self.authenticate = authenticate
        self.admin_paths = admin_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # the lifespan
            return
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        route = self.table.get(scope["path"])
        try:
            head = scan_headers(scope["headers"])
        except TollwayError as exc:
            rid = state["request_id"] = self.ids.new()
            api = route.api if route is not None else OPENAI
            await send_response(error_response(exc, rid, api), scope, receive, send)
            return
        rid = state["request_id"] = self.ids.of(head.single.get(HEADER))
        if route is not None:
            if scope["method"] != route.method:
                refusal = error_response(_not_allowed(route.method), rid, route.api)
                await send_response(refusal, scope, receive, send)
                return
            # The handler authenticates, then reads the body within the limit (413 for a
            # declared length over it before reading anything).
            response = await answer(route.handler, rid, scope, receive, route.api)
            if response is not None:  # None: the client left while it was handled
                await send_response(response, scope, receive, send)
            return
        await self._other(scope, receive, send, head, rid)

    async def _other(
        self, scope: Scope, receive: Receive, send: Send, head: Head, rid: str
    ) -> None:
        """Any route but an inference one: FastAPI, after the checks."""
        inner = receive
        path: str = scope["path"]
        has_body = head.chunked or (head.content_length or b"0").strip(b"0") != b""
        try:
            auth = head.single.get(b"authorization")
            credentials = auth.decode("latin-1") if auth is not None else None
            if path.startswith(self.admin_paths):
                self.admin_check(credentials)
            elif has_body and path.startswith(_TENANT):
                await self.authenticate(credentials)  # the route checks again; no body yet
            if has_body:  # 413 for a declared size over the limit before reading, or at it
                body = await read_body(Request(scope, receive), self.max_body_bytes)
                inner = _replay(body, receive)
        except TollwayError as exc:
            if has_body:  # refused before its body was read: the connection closes
                exc.headers.setdefault("connection", "close")
            await send_response(error_response(exc, rid), scope, receive, send)
            return
        started = False
        header = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [h for h in message.get("headers", ()) if h[0] != HEADER]
                headers.append(header)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, inner, send_with_id)
        except Exception:  # FastAPI's handler logged it and answered, unless it could not
            if started:
                return
            log.exception("request %s failed", rid)
            error = TollwayError("The server had an error while processing your request.")
            await send_response(error_response(error, rid), scope, receive, send)


def _not_allowed(method: str) -> MethodNotAllowed:
    return MethodNotAllowed(
        "Method not allowed for this URL.", code="method_not_allowed", headers={"allow": method}
    )


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` (read already, within the limit) once."""
    given = False

    async def inner() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner


async def answer(
    handler: Handler, rid: str, scope: Scope, receive: Receive, api: str = OPENAI
) -> Response | None:
    """Run an inference route's handler and turn any error into its API's shape; None
    when the client hung up after sending its body (the handler was cancelled, and its
    pipeline released and billed the request)."""
    departure = Departure(scope, receive)
    try:
        response = await handler(Request(scope, departure.receive))
    except asyncio.CancelledError:
        if not departure.fired:
            raise
        task = asyncio.current_task()
        assert task is not None
        task.uncancel()  # our own cancellation: the client is gone, nothing to send
        return None
    except TollwayError as exc:
        return error_response(exc, rid, api)
    except Exception:
        log.exception("request %s failed", rid)
        return error_response(
            TollwayError("The server had an error while processing your request."), rid, api
        )
    finally:
        departure.stop()
    response.raw_headers.append((HEADER, rid.encode("ascii")))  # errors name it themselves
    return response
