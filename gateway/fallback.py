"""The fallback chain: a request's routes, tried in order until one answers.

A model's route comes first, then its agent type's (or the model's) fallbacks
(:meth:`gateway.registry.ModelRegistry.routes_for`). Each attempt names the
route's upstream model in the body, always asks a stream for its usage, and
sends. A stream's first event is read here, before anything is committed to
the client, so an error the upstream reports as its first event falls back
like an error answered up front.

The next route is tried only before any byte reached the client, and never
for the client's own mistake (the upstream's 4xx, :class:`UpstreamRejected`)
or a tenant's limit (a :class:`RateLimited` other than a saturated route);
the last route's error is the request's. A pool's refusal of a request no
worker of its can hold (:class:`ContextLengthExceeded`, raised before
anything is sent) does fall back: the next route may have larger workers or
a hosted model's longer context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson

from backends.base import Backend, UpstreamRequest, UpstreamResponse
from gateway.relay import Opening, read_opening
from tollway.errors import (
    ContextLengthExceeded,
    RateLimited,
    TollwayError,
    UpstreamError,
    UpstreamRejected,
)

log = logging.getLogger("tollway.request")

#: 429 codes that mean a route is saturated (fall back), not that a tenant is limited.
SATURATED = frozenset({"pool_saturated", "upstream_saturated"})

#: Builds one attempt's request from its encoded body.
RequestFor = Callable[[bytes], UpstreamRequest]
#: The tracer's ``span(name, **attributes)``.
SpanFor = Callable[..., AbstractContextManager[Any]]


def prepare_upstream_body(body: dict[str, Any], stream: bool, upstream_model: str) -> None:
    """Name the upstream's model and always ask a stream for its usage."""
    body["model"] = upstream_model
    if stream:
        options = body.get("stream_options")
        merged = dict(options) if isinstance(options, dict) else {}
        merged["include_usage"] = True
        body["stream_options"] = merged


def falls_back(exc: TollwayError) -> bool:
    """Whether a route's failure lets the next route try (see the module docstring)."""
    if isinstance(exc, ContextLengthExceeded):
        return True  # too large for this route's workers; the next may hold it
    if isinstance(exc, UpstreamRejected):
        return False
    return not isinstance(exc, RateLimited) or exc.code in SATURATED


async def send_along(
    chain: Sequence[Backend],
    body: dict[str, Any],
    stream: bool,
    request_for: RequestFor,
    span: SpanFor,
    max_event_bytes: int,
) -> tuple[Backend, UpstreamResponse, Opening | None]:
    """The first route that answers, its response, and a stream's first event."""
    last = len(chain) - 1
    for attempt, backend in enumerate(chain):
        prepare_upstream_body(body, stream, backend.upstream_model)
        try:
            with span("tollway.upstream", route=backend.route, attempt=attempt):
                upstream = await backend.send(request_for(orjson.dumps(body)))
                opening = await read_opening(upstream, max_event_bytes) if stream else None
            return backend, upstream, opening
        except (UpstreamError, RateLimited, ContextLengthExceeded) as exc:
            if attempt == last or not falls_back(exc):
                raise
            log.warning("route %s failed (%s); falling back", backend.route, exc.code)
    raise AssertionError("a model has at least one route")
