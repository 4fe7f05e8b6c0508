"""The one interface every backend implements (SGLang pools now, the hosted catalog later).

A backend takes an :class:`UpstreamRequest` (an OpenAI-shaped body, already
serialised, with the upstream's own model name) and returns an
:class:`UpstreamResponse`: a whole body, or a byte stream relayed as it
arrives. Failures raise :mod:`tollway.errors` classes, never foreign ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tollway.errors import TollwayError


@dataclass(slots=True)
class UpstreamRequest:
    """One call to an upstream: ``POST path`` with a JSON ``body``."""

    path: str
    body: bytes
    stream: bool
    request_id: str
    #: Routing hints: the affinity key (a session id, or a hash of the
    #: conversation's leading messages) that cache-aware picking keeps on one
    #: worker; the tenant and priority the admission queue orders by; and the KV
    #: tokens the request may occupy (prompt plus the output it may produce).
    affinity: str | None = None
    tenant: str = ""
    priority: int = 0
    kv_tokens: int = 0
    #: What a size refusal reads (see :mod:`backends.sglang.capacity`): the fewest
    #: prompt tokens the body plausibly holds, and the output the client asked for
    #: (its effective ``max_tokens`` times ``n``; 0 when it set no limit).
    least_prompt_tokens: int = 0
    max_output_tokens: int = 0
    #: Timeouts overriding the backend's own, per model or agent type (None: its own).
    first_byte_timeout_s: float | None = None
    total_timeout_s: float | None = None
    #: The same body as a dict, for backends that call a library rather than HTTP
    #: (the catalog's litellm); treat as read-only.
    payload: dict[str, Any] | None = None


async def _nothing() -> None:
    return None


def _unheard(exc: TollwayError) -> None:
    return None


class ShareMeter(Protocol):
    """Accrues each request's share of a worker's time (GPU-seconds), for metering."""

    def start(self, worker: str) -> Any:
        """A request starts on ``worker``; returns a handle for :meth:`finish`."""
        ...

    def finish(self, handle: Any) -> float:
        """The request's accrued seconds; call once per handle."""
        ...


class ShareClock:
    """One request's GPU share: started on dispatch, frozen at its first :meth:`stop`."""

    def __init__(self, meter: ShareMeter | None, worker: str) -> None:
        self._meter = meter
        self._handle = meter.start(worker) if meter is not None else None
        self._seconds: float | None = None if meter is not None else 0.0

    def stop(self) -> float:
        """Freeze and return the share (idempotent)."""
        if self._seconds is None:
            assert self._meter is not None
            self._seconds = self._meter.finish(self._handle)
        return self._seconds


@dataclass(slots=True)
class UpstreamResponse:
    """What an upstream answered (always 2xx; errors are raised instead).

    For a non-streaming call ``body`` holds the whole body and the connection is
    already released. For a streaming call iterate :meth:`chunks` (raw bytes as
    they arrive) and always call :meth:`aclose` at the end.
    """

    status: int
    route: str
    worker: str
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    #: The request's GPU share on its worker (stopped when the upstream is done).
    share: ShareClock | None = None
    _close: Callable[[], Awaitable[None]] = field(default=_nothing)
    _failed: Callable[[TollwayError], None] = field(default=_unheard)

    def gpu_seconds(self) -> float:
        """Stop the GPU-share clock (if still running) and return its seconds."""
        return self.share.stop() if self.share is not None else 0.0

    def chunks(self) -> AsyncIterator[bytes]:
        """The raw byte blocks of a streaming body, in order."""
        if self.stream is None:
            raise RuntimeError("not a streaming response")
        return self.stream

    def failed(self, exc: TollwayError) -> None:
        """The 2xx answer turned out to be a failure, ``exc`` (an error event inside
        the stream, an event over the size limit): the backend counts it as it would
        the same error answered up front (a pool's circuit breaker). Once; before
        :meth:`aclose`."""
        report, self._failed = self._failed, _unheard
        report(exc)

    async def aclose(self) -> None:
        """Release the upstream connection and the worker's in-flight slot."""
        close, self._close = self._close, _nothing
        await close()


class Backend(Protocol):
    """A routable upstream: a pool of workers or a hosted model."""

    #: Route label, e.g. ``pool:h100-small`` or ``catalog:gpt-4o-mini``.
    route: str
    #: The ``model`` value the upstream expects.
    upstream_model: str

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Send one request; raise a :class:`tollway.errors.TollwayError` on failure."""
        ...

    def is_ready(self) -> bool:
        """Whether at least one upstream can take a request now."""
        ...

    async def start(self) -> None:
        """Open connections and start background tasks (health checks)."""
        ...

    async def stop(self) -> None:
        """Stop background tasks and close connections."""
        ...
