"""HTTP to the workers: pooled keep-alive connections (aiohttp) and error translation.

aiohttp was chosen over httpx by measurement (docs/benchmarks.md). Every aiohttp
exception, and every :mod:`backends.http1` exception (the gateway's own client),
is translated into :mod:`tollway.errors` here, in :func:`translate_errors`, and
nowhere else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import aiohttp
import orjson

from backends import http1
from tollway.errors import (
    TollwayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnavailable,
)


class ConnectFailed(UpstreamUnavailable):
    """The worker could not be reached at all; the request never left the gateway."""


@contextmanager
def translate_errors(worker: str, *, streaming: bool = False) -> Iterator[None]:
    """Translate aiohttp and timeout errors raised inside into Tollway's errors."""
    try:
        yield
    except TollwayError:
        raise
    except (aiohttp.ClientConnectorError, http1.ConnectError) as exc:
        raise ConnectFailed(f"cannot connect to worker {worker}") from exc
    except TimeoutError as exc:  # http1.ReadTimeout and http1.PoolTimeout included
        raise UpstreamTimeout(f"worker {worker} timed out") from exc
    except aiohttp.ClientPayloadError as exc:
        raise UpstreamStreamBroken(f"worker {worker} broke the stream") from exc
    except (aiohttp.ServerDisconnectedError, http1.RemoteDisconnected) as exc:
        if streaming:
            raise UpstreamStreamBroken(f"worker {worker} closed the stream") from exc
        raise UpstreamError(f"worker {worker} closed the connection") from exc
    except http1.ProtocolError as exc:
        if streaming:
            raise UpstreamStreamBroken(f"worker {worker} broke the stream") from exc
        raise UpstreamError(f"worker {worker} sent an invalid response") from exc
    except (aiohttp.ClientError, http1.Http1Error) as exc:
        raise UpstreamError(f"worker {worker} failed: {type(exc).__name__}") from exc


def error_from_upstream(
    status: int, body: bytes, worker: str, headers: Mapping[str, str] | None = None
) -> TollwayError:
    """The error to raise for a non-2xx answer from a worker (``headers``: the answer's).

    =========================  =======================  ================  =========
    worker answered            error                    client sees       retryable
    =========================  =======================  ================  =========
    4xx except 408 and 429     ``UpstreamRejected``     its 4xx, relayed  no
    429                        ``UpstreamRateLimited``  429, Retry-After  yes
    408, 504                   ``UpstreamTimeout``      504               yes
    502                        ``UpstreamError``        502               yes
    503                        ``UpstreamUnavailable``  503               yes
    500, 501, 505, other 5xx   ``UpstreamServerError``  502               no
    anything else (3xx)        ``UpstreamError``        502               yes
    =========================  =======================  ================  =========
    """
    message, err_type, param, code = _parse_error_body(body)
    if 400 <= status < 500 and status not in (408, 429):
        return UpstreamRejected(
            message or f"upstream refused the request ({status})",
            upstream_status=status,
            error_type=err_type or "invalid_request_error",
            param=param,
            code=code,
        )
    detail = f": {message}" if message else ""
    if status == 429:
        return UpstreamRateLimited(
            f"worker {worker} is rate limiting{detail}", retry_after=_retry_after(headers)
        )
    if status == 503:
        return UpstreamUnavailable(f"worker {worker} is unavailable{detail}")
    if status in (408, 504):
        return UpstreamTimeout(f"worker {worker} timed out{detail}")
    if status == 502 or status < 500:
        return UpstreamError(f"worker {worker} answered {status}{detail}")
    return UpstreamServerError(f"worker {worker} failed with {status}{detail}")


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


def _parse_error_body(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    """(message, type, param, code) from an OpenAI- or SGLang-shaped error body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:500].decode("utf-8", "replace").strip(), None, None, None
    if not isinstance(data, dict):
        return "", None, None, None
    nested = data.get("error")
    err: dict[str, Any] = nested if isinstance(nested, dict) else data
    message = err.get("message") or err.get("detail") or ""
    err_type = err.get("type")
    param = err.get("param")
    code = err.get("code")
    return (
        str(message),
        err_type if isinstance(err_type, str) else None,
        param if isinstance(param, str) else None,
        str(code) if isinstance(code, str) else None,
    )


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
