"""A request's verdict on its worker: the outcome one admitted request reports to
the worker's :class:`~backends.sglang.circuit.CircuitBreaker`, exactly once.

The pool gives the verdict when an attempt ends before the response headers
(or with a whole body); a streaming response's verdict comes from how its
stream ends (:func:`watched`): a broken stream is a failure, a finished one a
success, and a stream the client abandons gives none (it only frees a
half-open probe slot). A failure the gateway finds inside a 200 stream (an
error event, an event over the size limit) is given through
:meth:`Verdict.error`, as the same error answered up front would be.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from backends.sglang.circuit import CircuitBreaker
from tollway.errors import TollwayError, UpstreamError, UpstreamRejected


class Verdict:
    """Reports one admitted request's outcome to its worker's breaker, exactly once."""

    __slots__ = ("_breaker", "_given")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._given = False

    def _give(self) -> bool:
        given, self._given = self._given, True
        return not given

    def success(self) -> None:
        """The worker served the request (its own 4xx included)."""
        if self._give():
            self._breaker.record_success()

    def failure(self) -> None:
        """The worker failed the request."""
        if self._give():
            self._breaker.record_failure()

    def error(self, exc: TollwayError) -> None:
        """The answer turned out to be ``exc`` (found in the body after the headers):
        the worker's own refusal (a 4xx) is a success, anything else a failure."""
        if isinstance(exc, UpstreamRejected):
            self.success()
        else:
            self.failure()

    def release(self) -> None:
        """No verdict (the client went away): only free a half-open probe slot."""
        if self._give():
            self._breaker.release()


async def watched(stream: AsyncIterator[bytes], verdict: Verdict) -> AsyncIterator[bytes]:
    """Relay ``stream``; how it ends is the verdict on its worker."""
    try:
        async for block in stream:
            yield block
    except UpstreamError:
        verdict.failure()
        raise
    else:
        verdict.success()
    finally:
        verdict.release()
