"""HTTP to the workers: the pool's clients and error translation.

One HTTP client, :class:`backends.http1.Http1Pool` (keep-alive connections to
one origin), carries everything a pool sends a worker: requests over
:func:`request_client`, health probes, load scrapes and capacity discovery over
:func:`probe_client` (a second, small connection pool of the same client, so
probes never queue behind busy request connections). Every
:mod:`backends.http1` exception a request meets is translated into
:mod:`tollway.errors` here, in :func:`translate_errors`, and nowhere else; a
worker's non-2xx answer likewise, in :func:`error_from_upstream`.
The tables both use are :mod:`backends.upstream_errors`' (shared with the
catalog); this module gives them the worker's wording and logs the worker's URL.
Messages meant for clients never name a worker: its URL goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager

from backends import http1
from backends.sglang.config import PoolConfig
from backends.upstream_errors import (
    Wording,
    error_for_exception,
    error_for_status,
    is_rejection,
    parse_error_body,
    retry_after_of,
)
from tollway.errors import TollwayError, UpstreamUnavailable

log = logging.getLogger("tollway.pool")


class ConnectFailed(UpstreamUnavailable):
    """The worker could not be reached at all; the request never left the gateway."""


#: What a client reads for a worker's answer: never the worker's URL or message.
WORKER_WORDING = Wording(
    rejected="the model server refused the request ({status})",
    credentials="the worker refused the gateway's request ({status})",
    model_missing="the worker does not serve this route or model ({status})",
    rate_limited="the worker is rate limiting",
    timed_out="the worker timed out",
    unavailable="the worker is unavailable",
    overloaded="the worker is overloaded",
    failed="the worker answered {status}",
    server_error="the worker failed with {status}",
    unreachable="cannot connect to the worker",
    stream_broken="the worker broke the stream",
    stream_closed="the worker closed the stream",
    connection_closed="the worker closed the connection before its answer was complete",
    failed_with="the worker failed: {name}",
    too_large="the worker's answer is over the pool's size limit",
    bad_head="the worker's response head is over the pool's limits",
    not_http="the worker's answer is not valid HTTP",
)


@contextmanager
def translate_errors(worker: str, *, streaming: bool = False) -> Iterator[None]:
    """Translate HTTP/1.1 client and timeout errors raised inside into Tollway's.

    The messages a client may read never name the worker (``worker``, its URL,
    goes to the log with the cause).
    """
    try:
        yield
    except TollwayError:
        raise
    except Exception as exc:
        error = error_for_exception(
            exc, WORKER_WORDING, streaming=streaming, connect_failed=ConnectFailed
        )
        if error is None:
            raise
        log.warning("worker %s: %s (%s: %s)", worker, error.message, type(exc).__name__, exc)
        raise error from exc


def error_from_upstream(
    status: int, body: bytes, worker: str, headers: Mapping[str, str] | None = None
) -> TollwayError:
    """The error to raise for a non-2xx answer from a worker (``headers``: the answer's).

    The status table is :mod:`backends.upstream_errors`' (shared with the
    catalog); here the worker's message and URL go to the log (a rejection at
    ``info``, anything else at ``warning``), never to the client.
    """
    parsed = parse_error_body(body)
    if is_rejection(status):
        log.info("worker %s refused a request with %d: %s", worker, status, parsed.message)
    else:
        log.warning("worker %s answered %d: %s", worker, status, parsed.message)
    return error_for_status(status, parsed, WORKER_WORDING, retry_after=retry_after_of(headers))


async def iter_chunks(response: http1.Http1Response, worker: str) -> AsyncIterator[bytes]:
    """A streaming :class:`backends.http1.Http1Response`'s body, errors translated."""
    with translate_errors(worker, streaming=True):
        async for block in response.chunks():
            yield block


#: Connections a worker's probe client may open: a health probe and a load scrape run at once.
PROBE_CONNECTIONS = 2


def request_client(url: str, config: PoolConfig) -> http1.Http1Pool:
    """The keep-alive connections a pool's requests to one worker go over."""
    limits = config.response_limits
    return http1.Http1Pool(
        url,
        max_connections=config.max_connections_per_worker,
        connect_timeout_s=config.timeouts.connect_s,
        max_head_bytes=limits.max_head_bytes,
        max_headers=limits.max_headers,
        max_body_bytes=limits.max_body_bytes,
    )


def probe_client(url: str, config: PoolConfig) -> http1.Http1Pool:
    """The connections a pool's health checks of one worker go over (see the docstring).

    A probe's connect is bounded by its own timeout (``health.timeout_s``),
    as the whole probe is.
    """
    limits = config.response_limits
    return http1.Http1Pool(
        url,
        max_connections=PROBE_CONNECTIONS,
        connect_timeout_s=config.health.timeout_s,
        max_head_bytes=limits.max_head_bytes,
        max_headers=limits.max_headers,
        max_body_bytes=limits.max_body_bytes,
    )
