"""The two ways a generation request is answered: a stream, or once every choice finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from simulator.engine import GenerationHandle
from simulator.sse import SSEResponse
from simulator.state import WorkerState


def stream_reply(state: WorkerState, events: AsyncIterator[bytes]) -> SSEResponse:
    """An SSE response that honours the cut-stream fault and counts the request."""
    return SSEResponse(
        events,
        cut_after=state.faults.config.cut_stream_after,
        on_complete=state.faults.request_answered,
    )


async def wait_all(state: WorkerState, handles: Sequence[GenerationHandle]) -> None:
    """Wait for every choice; abort whatever is left if the caller goes away."""
    try:
        await asyncio.gather(*(h.wait() for h in handles))
    finally:
        for handle in handles:
            state.engine.abort(handle)
