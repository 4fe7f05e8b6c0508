"""HTTP to the workers: pooled keep-alive connections (aiohttp) and error translation.

aiohttp was chosen over httpx by measurement (docs/benchmarks.md). Every aiohttp
exception, and every :mod:`backends.http1` exception (the gateway's own client),
is translated into :mod:`tollway.errors` here, in :func:`translate_errors`, and
nowhere else; a worker's non-2xx answer likewise, in :func:`error_from_upstream`.
Messages meant for clients never name a worker: its URL goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
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

log = logging.getLogger("tollway.pool")


class ConnectFailed(UpstreamUnavailable):
    """The worker could not be reached at all; the request never left the gateway."""


@contextmanager
def translate_errors(worker: str, *, streaming: bool = False) -> Iterator[None]:
    """Translate aiohttp, HTTP/1.1 client and timeout errors raised inside into Tollway's.

    The messages a client may read never name the worker (``worker``, its URL,
    goes to the log with the cause).
    """
    try:
        yield
    except TollwayError:
        raise
    except Exception as exc:
        error = _translated(exc, streaming)
        if error is None:
            raise
        log.warning("worker %s: %s (%s: %s)", worker, error.message, type(exc).__name__, exc)
        raise error from exc


def _translated(exc: Exception, streaming: bool) -> TollwayError | None:
    """The Tollway error for a foreign ``exc``, or ``None`` when it is not one of ours."""
    if isinstance(exc, aiohttp.ClientConnectorError | http1.ConnectError):
        return ConnectFailed("cannot connect to the worker")
    if isinstance(exc, TimeoutError):  # http1.ReadTimeout and http1.PoolTimeout included
        return UpstreamTimeout("the worker timed out")
    if isinstance(exc, aiohttp.ClientPayloadError):
        return UpstreamStreamBroken("the worker broke the stream")
    if isinstance(exc, aiohttp.ServerDisconnectedError | http1.RemoteDisconnected):
        if streaming:
            return UpstreamStreamBroken("the worker closed the stream")
        return UpstreamError("the worker closed the connection before its answer was complete")
    if isinstance(exc, http1.ProtocolError) and streaming:
        return UpstreamStreamBroken("the worker broke the stream")
    if isinstance(exc, http1.BodyTooLarge):
        return UpstreamResponseTooLarge("the worker's answer is over the pool's size limit")
    if isinstance(exc, http1.HeadTooLarge):
        return UpstreamBadResponse("the worker's response head is over the pool's limits")
    if isinstance(exc, http1.ProtocolError):
        return UpstreamBadResponse("the worker's answer is not valid HTTP")
    if isinstance(exc, aiohttp.ClientError | http1.Http1Error):
        return UpstreamError(f"the worker failed: {type(exc).__name__}")
    return None


#: A worker's 4xx that the request caused: the status the client sees.
_CLIENT_FAULT = {413: 413, 414: 413, 431: 413, 422: 422}


def error_from_upstream(
    status: int, body: bytes, worker: str, headers: Mapping[str, str] | None = None
) -> TollwayError:
    """The error to raise for a non-2xx answer from a worker (``headers``: the answer's).

    ==========================  ============================  ===================  =========
    worker answered             error                         client sees          retryable
    ==========================  ============================  ===================  =========
    400, other 4xx              ``UpstreamRejected``          400                  no
    413 (414, 431)              ``UpstreamRejected``          413                  no
    422                         ``UpstreamRejected``          422                  no
    401, 402, 403, 407          ``UpstreamError``             502                  yes
    404, 405                    ``UpstreamError``             502                  yes
    429                         ``UpstreamRateLimited``       429, Retry-After     yes
    408, 504                    ``UpstreamTimeout``           504                  yes
    502                         ``UpstreamError``             502                  yes
    503                         ``UpstreamUnavailable``       503                  yes
    500, 501, 505, other 5xx    ``UpstreamServerError``       502                  no
    anything else (3xx)         ``UpstreamError``             502                  yes
    ==========================  ============================  ===================  =========

    A rejection (the request's fault: no retry, no fallback, no breaker
    penalty) is an ``invalid_request_error`` with the worker's message, its
    ``param``, and its ``code`` when that is an OpenAI-style string (SGLang's
    numeric ``code`` and CamelCase ``type`` are dropped); 413 is
    ``request_too_large``. The other rows are the worker's or the gateway's
    fault, so the client sees neither the worker's URL nor its message (both
    are logged).
    """
    message, param, code = _parse_error_body(body)
    shown = _CLIENT_FAULT.get(status, 400)
    if 400 <= status < 500 and status not in (401, 402, 403, 404, 405, 407, 408, 429):
        log.info("worker %s refused a request with %d: %s", worker, status, message)
        if shown == 413 and code is None:
            code = "request_too_large"
        return UpstreamRejected(
            message or f"the model server refused the request ({status})",
            upstream_status=shown,
            error_type="invalid_request_error",
            param=param,
            code=code,
        )
    log.warning("worker %s answered %d: %s", worker, status, message)
    if status == 429:
        return UpstreamRateLimited("the worker is rate limiting", retry_after=_retry_after(headers))
    if status in (401, 402, 403, 407):
        return UpstreamError(
            f"the worker refused the gateway's request ({status})", code="upstream_auth_failed"
        )
    if status in (404, 405):
        return UpstreamError(
            f"the worker does not serve this route or model ({status})",
            code="upstream_model_not_found",
        )
    if status == 503:
        return UpstreamUnavailable("the worker is unavailable")
    if status in (408, 504):
        return UpstreamTimeout("the worker timed out")
    if status == 502 or status < 500:
        return UpstreamError(f"the worker answered {status}")
    return UpstreamServerError(f"the worker failed with {status}")


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from a ``Retry-After`` header in seconds (an HTTP date is ignored)."""
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds < 86400 else None


def _parse_error_body(body: bytes) -> tuple[str, str | None, str | None]:
    """(message, param, code) from an OpenAI-, SGLang- or FastAPI-shaped error body.

    ``code`` only when it is a string (SGLang repeats the HTTP status there);
    FastAPI's 422 ``detail`` list gives its first entry's message and location.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip(), None, None
    if not isinstance(data, dict):
        return "", None, None
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
    return (
        str(message)[:2000],
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


async def iter_chunks(response: http1.Http1Response, worker: str) -> AsyncIterator[bytes]:
    """A streaming :class:`backends.http1.Http1Response`'s body, errors translated."""
    with translate_errors(worker, streaming=True):
        async for block in response.chunks():
            yield block


def make_session(limit_per_host: int) -> aiohttp.ClientSession:
    """A pooled keep-alive session for one pool's workers."""
    connector = aiohttp.TCPConnector(
        limit=0,
        limit_per_host=limit_per_host,
        keepalive_timeout=60,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        json_serialize=lambda obj: orjson.dumps(obj).decode(),
    )
