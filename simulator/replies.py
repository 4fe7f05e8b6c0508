"""The two ways a generation request is answered: a stream, or once every choice finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request

from simulator.engine import GenerationHandle, merge_progress
from simulator.errors import GenerationError
from simulator.sse import DONE, SSEResponse
from simulator.state import WorkerState


def stream_reply(state: WorkerState, events: AsyncIterator[bytes]) -> SSEResponse:
    """An SSE response that honours the cut-stream fault and counts the request."""
    return SSEResponse(
        events,
        cut_after=state.faults.config.cut_stream_after,
        on_complete=state.faults.request_answered,
    )


def error_stream(state: WorkerState, event: bytes) -> SSEResponse:
    """A 200 stream that carries only an error ``event`` and ``data: [DONE]``.

    What SGLang answers a streamed request whose tokenizer-manager checks
    fail (see :class:`~simulator.errors.GenerationError`).
    """

    async def events() -> AsyncIterator[bytes]:
        yield event
        yield DONE

    return stream_reply(state, events())


def disconnected(rid: str, kind: int) -> GenerationError:
    """SGLang's error for a non-streamed request whose client left (nobody reads it)."""
    return GenerationError(
        f"Request is disconnected from the client side (type {kind}). Abort request {rid=}"
    )


async def wait_all(
    state: WorkerState, request: Request, handles: Sequence[GenerationHandle]
) -> None:
    """Wait for every choice; abort them all when the client has left, as SGLang notices it.

    ``tokenizer_manager.py`` ``_wait_one_response`` checks the client of a
    non-streamed request when no output came for ``wait_timeout_s`` (4 s,
    "type 1") and at each output (type 3), which the scheduler sends every
    ``force_output_interval`` (50) tokens. A client that left is noticed at the
    first of those; its request is then aborted (its slot and KV freed) and
    the 400 raised (nobody reads it).
    """
    timings = state.config.timings
    rid = handles[0].seq.rid.partition("#")[0]
    outputs = merge_progress(handles)
    seen = [0] * len(handles)
    pending = asyncio.ensure_future(anext(outputs, None))
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=timings.wait_timeout_s)
            if not done:
                if await request.is_disconnected():
                    raise disconnected(rid, 1)
                continue
            item = pending.result()
            if item is None:
                return
            index, count = item
            interval = timings.force_output_interval
            crossed = count // interval > seen[index] // interval
            seen[index] = count
            pending = asyncio.ensure_future(anext(outputs, None))
            if crossed and count < len(handles[index].plan) and await request.is_disconnected():
                raise disconnected(rid, 3)
    finally:
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)
        aclose = getattr(outputs, "aclose", None)
        if aclose is not None:
            await aclose()
        for handle in handles:
            state.engine.abort(handle)
