"""Idempotency keys: a repeated request gets the first one's response, billed once.

A client (typically an agent resuming a chain from its last successful step)
sends ``Idempotency-Key: <key>`` (or ``metadata.idempotency_key``). Keys are
scoped to the tenant. The first request with a key runs; a repeat while it
runs waits for it (``Prefer: wait=0``: 409 with Retry-After at once), a repeat
after it finished gets the same status, headers and body, or the same stream
chunks, with ``Idempotent-Replayed: true``; a repeat with a different request
gets 422. See :mod:`gateway.idempotency.coordinator` for the flow and what is
final, :mod:`gateway.idempotency.keys` for the header conventions.

Stores: :class:`RedisIdempotencyStore` (shared by all replicas) or
:class:`MemoryIdempotencyStore` (one process, the embedded default).
"""

from gateway.idempotency.config import IdempotencyConfig
from gateway.idempotency.coordinator import (
    EventHook,
    IdempotencyCoordinator,
    Lease,
    Outcome,
    Proceed,
    Replay,
    build_idempotency,
)
from gateway.idempotency.keys import (
    idempotency_key_of,
    request_fingerprint,
    storage_key,
    wait_preference,
)
from gateway.idempotency.memory import MemoryIdempotencyStore
from gateway.idempotency.record import (
    ORIGINAL_REQUEST_ID,
    REPLAYED,
    REPLAYED_HEADERS,
    StoredResponse,
    replayable_headers,
)
from gateway.idempotency.redis_store import RedisIdempotencyStore
from gateway.idempotency.replay import StreamCapture, recorded_stream, replay_response
from gateway.idempotency.store import Claimed, ClaimResult, Done, IdempotencyStore, Running

__all__ = [
    "ORIGINAL_REQUEST_ID",
    "REPLAYED",
    "REPLAYED_HEADERS",
    "ClaimResult",
    "Claimed",
    "Done",
    "EventHook",
    "IdempotencyConfig",
    "IdempotencyCoordinator",
    "IdempotencyStore",
    "Lease",
    "MemoryIdempotencyStore",
    "Outcome",
    "Proceed",
    "RedisIdempotencyStore",
    "Replay",
    "Running",
    "StoredResponse",
    "StreamCapture",
    "build_idempotency",
    "idempotency_key_of",
    "recorded_stream",
    "replay_response",
    "replayable_headers",
    "request_fingerprint",
    "storage_key",
    "wait_preference",
]
