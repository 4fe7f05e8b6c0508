"""Recording a response for later repeats, and sending a stored one again.

A non-streaming response is recorded by the pipeline directly
(``lease.complete(StoredResponse(...))``). A stream is recorded by
:class:`RecordedStream`, which passes the relay's chunks to the client
untouched while keeping a copy (up to ``max_record_bytes``), and at the end
completes the lease only if the stream finished cleanly; otherwise (the
upstream broke, the client went away, even before the first chunk) it
releases the key and closes the relay.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping

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


class RecordedStream:
    """Passes ``stream``'s chunks on; then completes ``lease`` if ``succeeded()``, else
    releases it. An explicit async iterator: :meth:`aclose` releases the key and
    closes ``stream`` whether or not iteration began (an async generator that never
    started would skip both)."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        lease: Lease,
        *,
        succeeded: Callable[[], bool],
        status: int,
        headers: Mapping[str, str],
        request_id: str = "",
    ) -> None:
        self._stream = stream
        self._chunks = aiter(stream)
        self._lease = lease
        self._succeeded = succeeded
        self._status = status
        self._headers = headers
        self._request_id = request_id
        self._capture = StreamCapture(lease.max_record_bytes)
        self._settled = False

    def __aiter__(self) -> RecordedStream:
        return self

    async def __anext__(self) -> bytes:
        if self._settled:
            raise StopAsyncIteration
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._settled = True
            if self._succeeded():
                await self._lease.complete(
                    self._capture.response(self._status, self._headers, self._request_id)
                )
            else:
                await self._lease.abandon()
            raise
        except BaseException:
            self._settled = True
            self._lease.abandon_soon()  # cancelled or broken: awaiting here is not safe
            raise
        if self._lease.tracked:
            self._capture.add(chunk)
        return chunk

    async def aclose(self) -> None:
        """Release the key (unless settled already) and close ``stream`` (idempotent)."""
        if not self._settled:
            self._settled = True
            self._lease.abandon_soon()
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


def recorded_stream(
    stream: AsyncIterable[bytes],
    lease: Lease,
    *,
    succeeded: Callable[[], bool],
    status: int,
    headers: Mapping[str, str],
    request_id: str = "",
) -> RecordedStream:
    """A :class:`RecordedStream` of ``stream`` (``succeeded`` is asked after the last
    chunk; for the relay: ``outcome.finished and outcome.error is None``)."""
    return RecordedStream(
        stream, lease, succeeded=succeeded, status=status, headers=headers, request_id=request_id
    )


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
