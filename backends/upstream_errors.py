"""An upstream's non-2xx HTTP answer as a Tollway error: the one status table for every backend.

Both backends that speak HTTP to an upstream use it: the SGLang pools
(:func:`backends.sglang.transport.error_from_upstream`, a worker's answer) and
the catalog's ``direct_openai`` transport
(:func:`backends.catalog.errors.error_from_status`, a provider's answer). Each
passes its own :class:`Wording` (a worker's URL is never shown; a provider's
route label is), so the two fail alike and read differently. One
``Retry-After`` parser (:func:`retry_after_of`) and one error-body parser
(:func:`parse_error_body`) serve both.

==========================  ============================  ===================  =========
upstream answered           error                         client sees          retryable
==========================  ============================  ===================  =========
400, other 4xx              ``UpstreamRejected``          400                  no
413 (414, 431)              ``UpstreamRejected``          413                  no
422                         ``UpstreamRejected``          422                  no
401, 402, 403, 407          ``UpstreamError``             502                  yes
404, 405                    ``UpstreamError``             502                  yes
429                         ``UpstreamRateLimited``       429, Retry-After     yes
408, 504                    ``UpstreamTimeout``           504                  yes
502                         ``UpstreamError``             502                  yes
503, 529 (overloaded)       ``UpstreamUnavailable``       503                  yes
500, 501, 505, other 5xx    ``UpstreamServerError``       502                  no
anything else (3xx)         ``UpstreamError``             502                  yes
==========================  ============================  ===================  =========

A rejection (the request's fault: no retry, no fallback, no breaker penalty)
is an ``invalid_request_error`` with the upstream's message, its ``param``
(or ``messages`` for ``context_length_exceeded``), and its ``code`` when that
is an OpenAI-style string (SGLang's numeric ``code`` is dropped); 413 is
``request_too_large`` unless the upstream named a code. The other rows are the
upstream's or the gateway's fault: the client sees the wording's message, never
the upstream's (which may quote a key or name a host).

A transport failure (:func:`error_for_exception`: aiohttp's and the
gateway's own HTTP/1.1 client's exceptions) goes through one table too:

=======================================  ============================  ===============
raised                                   error                         retryable
=======================================  ============================  ===============
cannot connect                           ``connect_failed`` (503)      yes
a timeout (read, pool, aiohttp's)        ``UpstreamTimeout`` (504)     yes
disconnected while streaming             ``UpstreamStreamBroken``      yes
disconnected before the answer ended     ``UpstreamError`` (502)       yes
a broken body or framing, streaming      ``UpstreamStreamBroken``      yes
a broken body, not streaming             ``UpstreamError`` (502)       yes
a body over the size limit               ``UpstreamResponseTooLarge``  no
a head over the limits, not HTTP         ``UpstreamBadResponse``       yes
any other client error                   ``UpstreamError`` (502)       yes
anything else                            not translated (re-raised)
=======================================  ============================  ===============

Where the pool's and the catalog's tables disagreed before they were merged,
this one keeps:

* 405 and 407 are the gateway's fault (502, retryable), as the pool had them:
  a method or a proxy login the upstream refuses says the gateway is set up
  wrongly, not that the client's request is bad (the catalog relayed them).
* The client sees a rejection as 400, 413 or 422 only, as the pool had it:
  414 and 431 become 413, any other 4xx 400. The catalog relayed the
  provider's status, which let a provider's 409 read like the gateway's own
  idempotency conflict.
* 529 (Anthropic's "overloaded") is ``UpstreamUnavailable`` (503, retryable),
  as the catalog had it; SGLang never sends it, so pools lose nothing.
* ``Retry-After`` also reads ``retry-after-ms`` (the catalog's), and ignores a
  negative value or one of a day or more (the pool's): such a value is a
  broken upstream, not advice worth relaying.
* A body aiohttp could not read (``ClientPayloadError``) when nothing was
  streamed yet is an ``UpstreamError`` "failed", as the catalog had it: no
  stream was broken. (The pool sends requests over :mod:`backends.http1`, so
  it never raised that one on its request path.)
* The error body gives ``param``, FastAPI's ``detail`` list and a top-level
  ``message`` (the pool's parser), so a provider's rejection keeps them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from backends import http1
from tollway.errors import (
    TollwayError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamResponseTooLarge,
    UpstreamServerError,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnavailable,
)

#: The longest upstream message relayed in a rejection.
MAX_MESSAGE_CHARS = 2000
#: A ``Retry-After`` at or over this many seconds is ignored.
MAX_RETRY_AFTER_S = 86400.0

#: Upstream 4xx that are the gateway's fault, not the request's: the error code each gets.
_GATEWAY_FAULT = {
    401: "upstream_auth_failed",
    402: "upstream_auth_failed",
    403: "upstream_auth_failed",
    407: "upstream_auth_failed",
    404: "upstream_model_not_found",
    405: "upstream_model_not_found",
}
#: A rejection's status as the client sees it (any other 4xx: 400).
_REJECTED_AS = {413: 413, 414: 413, 431: 413, 422: 422}


@dataclass(frozen=True, slots=True)
class Wording:
    """The messages a client reads for each row of the tables.

    ``{status}`` is the upstream's status and ``{name}`` the class name of the
    exception a transport failure raised.
    """

    rejected: str
    credentials: str
    model_missing: str
    rate_limited: str
    timed_out: str
    unavailable: str
    overloaded: str
    failed: str
    server_error: str
    # Transport failures (``{name}``: the exception's class name).
    unreachable: str
    stream_broken: str
    stream_closed: str
    connection_closed: str
    failed_with: str
    too_large: str
    bad_head: str
    not_http: str


@dataclass(frozen=True, slots=True)
class ErrorBody:
    """What an upstream's error body says: its message, and the ``param`` and ``code`` if any."""

    message: str
    param: str | None = None
    code: str | None = None


def is_rejection(status: int) -> bool:
    """Whether a ``status`` answer means the request itself was refused (the client's fault)."""
    return 400 <= status < 500 and status not in _GATEWAY_FAULT and status not in (408, 429)


def error_for_status(
    status: int,
    body: ErrorBody,
    wording: Wording,
    *,
    retry_after: float | None = None,
    rejection: type[UpstreamRejected] = UpstreamRejected,
) -> TollwayError:
    """The error for an upstream's non-2xx ``status`` answer (see the module's table).

    ``rejection`` is the class of a refused request's error (the catalog's
    :class:`~backends.catalog.errors.ProviderRejected`, say).
    """
    if is_rejection(status):
        shown = _REJECTED_AS.get(status, 400)
        code = body.code
        if shown == 413 and code is None:
            code = "request_too_large"
        param = body.param
        if param is None and code == "context_length_exceeded":
            param = "messages"
        return rejection(
            body.message or _say(wording.rejected, status),
            upstream_status=shown,
            error_type="invalid_request_error",
            param=param,
            code=code,
        )
    if status == 429:
        return UpstreamRateLimited(_say(wording.rate_limited, status), retry_after=retry_after)
    if status in _GATEWAY_FAULT:
        code = _GATEWAY_FAULT[status]
        why = wording.credentials if code == "upstream_auth_failed" else wording.model_missing
        return UpstreamError(_say(why, status), code=code)
    if status in (408, 504):
        return UpstreamTimeout(_say(wording.timed_out, status))
    if status == 503:
        return UpstreamUnavailable(_say(wording.unavailable, status))
    if status == 529:
        return UpstreamUnavailable(_say(wording.overloaded, status))
    if status == 502 or status < 500:
        return UpstreamError(_say(wording.failed, status))
    return UpstreamServerError(_say(wording.server_error, status))


def error_for_exception(
    exc: Exception,
    wording: Wording,
    *,
    streaming: bool = False,
    connect_failed: type[UpstreamUnavailable] = UpstreamUnavailable,
) -> TollwayError | None:
    """The error for an exception raised by aiohttp or :mod:`backends.http1`, else ``None``.

    ``streaming``: the exception came while relaying a body whose head already
    went to the client. ``connect_failed``: the class of "cannot connect" (the
    pool's :class:`~backends.sglang.transport.ConnectFailed`, say).
    """
    name = type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError | http1.ConnectError):
        return connect_failed(_say(wording.unreachable, name=name))
    if isinstance(exc, TimeoutError):  # http1.ReadTimeout and http1.PoolTimeout included
        return UpstreamTimeout(_say(wording.timed_out, name=name))
    if isinstance(exc, aiohttp.ServerDisconnectedError | http1.RemoteDisconnected):
        if streaming:
            return UpstreamStreamBroken(_say(wording.stream_closed, name=name))
        return UpstreamError(_say(wording.connection_closed, name=name))
    if isinstance(exc, aiohttp.ClientPayloadError) or (
        isinstance(exc, http1.ProtocolError) and streaming
    ):
        if streaming:
            return UpstreamStreamBroken(_say(wording.stream_broken, name=name))
        return UpstreamError(_say(wording.failed_with, name=name))
    if isinstance(exc, http1.BodyTooLarge):
        return UpstreamResponseTooLarge(_say(wording.too_large, name=name))
    if isinstance(exc, http1.HeadTooLarge):
        return UpstreamBadResponse(_say(wording.bad_head, name=name))
    if isinstance(exc, http1.ProtocolError):
        return UpstreamBadResponse(_say(wording.not_http, name=name))
    if isinstance(exc, aiohttp.ClientError | http1.Http1Error):
        return UpstreamError(_say(wording.failed_with, name=name))
    return None


def _say(template: str, status: int = 0, name: str = "") -> str:
    # Not str.format: a route label in the template may hold braces.
    return template.replace("{status}", str(status)).replace("{name}", name)


def retry_after_of(headers: Any) -> float | None:
    """Seconds from a ``retry-after-ms`` or ``Retry-After`` header, if usable.

    ``headers`` is any mapping with ``get`` (case-insensitive ones included); an
    HTTP date, a negative value or one of a day or more gives ``None``.
    """
    if headers is None:
        return None
    try:
        millis = headers.get("retry-after-ms")
        if millis is not None:
            return _sane(float(millis) / 1000)
        seconds = headers.get("retry-after")
        if seconds is not None:
            return _sane(float(seconds))
    except (TypeError, ValueError, AttributeError):
        return None
    return None


def _sane(seconds: float) -> float | None:
    return seconds if 0 <= seconds < MAX_RETRY_AFTER_S else None


def parse_error_body(body: bytes | None) -> ErrorBody:
    """Message, ``param`` and ``code`` of an OpenAI-, Anthropic-, SGLang- or FastAPI-shaped body.

    ``code`` only when it is a string (SGLang repeats the HTTP status there);
    FastAPI's 422 ``detail`` list gives its first entry's message and location;
    a body that is not JSON gives its first 500 bytes as the message.
    """
    if not body:
        return ErrorBody("")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ErrorBody(body[:500].decode("utf-8", "replace").strip())
    if not isinstance(data, dict):
        return ErrorBody("")
    nested = data.get("error")
    err: dict[str, Any] = nested if isinstance(nested, dict) else data
    message = err.get("message") or err.get("detail") or ""
    param = err.get("param")
    code = err.get("code")
    if isinstance(message, list) and message and isinstance(message[0], dict):
        first = message[0]  # FastAPI: [{"loc": ["body", "messages", 0], "msg": ...}, ...]
        message = first.get("msg") or ""
        loc = first.get("loc")
        if param is None and isinstance(loc, list):
            param = _param_path([part for part in loc if part != "body"])
    return ErrorBody(
        str(message)[:MAX_MESSAGE_CHARS],
        param if isinstance(param, str) and param else None,
        code if isinstance(code, str) and code else None,
    )


def _param_path(parts: list[Any]) -> str | None:
    """``["messages", 0, "content"]`` as ``messages[0].content``."""
    path = ""
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            path += f"[{part}]"
        elif isinstance(part, str):
            path += f".{part}" if path else part
    return path or None
