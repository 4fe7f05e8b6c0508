"""Recording a response for later repeats, and sending a stored one again.

A non-streaming response is recorded by the pipeline directly
(``lease.complete(StoredResponse(...))``). A stream is recorded by
:func:`recorded_stream`, which passes the relay's chunks to the client
untouched while keeping a copy (up to ``max_record_bytes``), and at the end
completes the lease only if the stream finished cleanly; otherwise (the
upstream broke, the client went away) it releases the key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable, Mapping

from starlette.responses import Response, StreamingResponse

from gateway.idempotency.coordinator import Lease
from gateway.idempotency.record import StoredResponse, replayable_headers


class StreamCapture:
    """The chunks of a stream, kept until they exceed ``max_bytes`` (then dropped)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.overflowed = False
        self._chunks: list[bytes] = []

    def add(self, chunk: bytes) -> None:
        """Keep ``chunk`` (or note that the stream is too large to keep)."""
        self.size += len(chunk)
        if self.overflowed:
            return
        if self.size > self.max_bytes:
            self.overflowed = True
            self._chunks.clear()
            return
        self._chunks.append(chunk)

    def response(
        self, status: int, headers: Mapping[str, str], request_id: str = ""
    ) -> StoredResponse:
        """The stored form of the captured stream."""
        return StoredResponse(
            status=status,
            headers=replayable_headers(headers),
            chunks=tuple(self._chunks),
            request_id=request_id,
            kept=not self.overflowed,
        )


async def recorded_stream(
    stream: AsyncIterable[bytes],
    lease: Lease,
    *,
    succeeded: Callable[[], bool],
    status: int,
    headers: Mapping[str, str],
    request_id: str = "",
) -> AsyncGenerator[bytes, None]:
    """Yield ``stream``'s chunks; then complete ``lease`` if ``succeeded()``, else release it.

    ``succeeded`` is asked after the last chunk (for the relay:
    ``outcome.finished and outcome.error is None``).
    """
    capture = StreamCapture(lease.max_record_bytes)
    try:
        async for chunk in stream:
            if lease.tracked:
                capture.add(chunk)
            yield chunk
    except BaseException:
        lease.abandon_soon()  # cancelled or closed early: awaiting here is not safe
        raise
    if succeeded():
        await lease.complete(capture.response(status, headers, request_id))
    else:
        await lease.abandon()


async def _replay_chunks(chunks: tuple[bytes, ...]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def replay_response(stored: StoredResponse) -> Response:
    """The HTTP response that repeats ``stored`` byte for byte (with
    ``Idempotent-Replayed: true``)."""
    headers = stored.replay_headers()
    if stored.chunks is not None:
        return StreamingResponse(
            _replay_chunks(stored.chunks), status_code=stored.status, headers=headers
        )
    return Response(stored.body, status_code=stored.status, headers=headers)
