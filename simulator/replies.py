"""The two ways a generation request is answered: a stream, or once every choice finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from starlette.requests import Request

from simulator.engine import GenerationHandle
from simulator.errors import bad_request
from simulator.sse import SSEResponse
from simulator.state import WorkerState

#: How often (wall seconds) a non-streamed request checks that its client is still there.
#: SGLang's tokenizer manager checks about every 4 s; a shorter poll frees the slot sooner
#: and keeps the tests fast, and costs nothing when the answer comes first.
DISCONNECT_POLL_SECONDS = 0.25


def stream_reply(state: WorkerState, events: AsyncIterator[bytes]) -> SSEResponse:
    """An SSE response that honours the cut-stream fault and counts the request."""
    return SSEResponse(
        events,
        cut_after=state.faults.config.cut_stream_after,
        on_complete=state.faults.request_answered,
    )


async def wait_all(
    state: WorkerState, request: Request, handles: Sequence[GenerationHandle]
) -> None:
    """Wait for every choice; abort whatever is left if the client goes away.

    As in SGLang, a client that hangs up on a non-streamed request is noticed
    within one poll (:data:`DISCONNECT_POLL_SECONDS`) and its request aborted,
    freeing its running slot and KV; this then raises SGLang's 400
    (which nobody reads).
    """
    finished = asyncio.ensure_future(asyncio.gather(*(h.wait() for h in handles)))
    try:
        while not finished.done():
            await asyncio.wait({finished}, timeout=DISCONNECT_POLL_SECONDS)
            if not finished.done() and await request.is_disconnected():
                rid = handles[0].seq.rid.partition("#")[0]
                raise bad_request(
                    f"Request is disconnected from the client side. Abort request {rid}"
                )
        finished.result()
    finally:
        finished.cancel()
        for handle in handles:
            state.engine.abort(handle)
