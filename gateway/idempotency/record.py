"""The stored response of a finished request, and its byte encoding.

Encoding: one line of JSON metadata, a newline, then the payload (the body, or
the stream's chunks back to back; their sizes are in the metadata). JSON
output never holds a raw newline, so the first one ends the metadata, and the
payload is kept byte for byte: a replay is identical to the original.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

_VERSION = 1

#: Response headers worth replaying (lower case); others (request ids, rate-limit
#: state, dates) describe the moment of the first request, not its result.
REPLAYED_HEADERS = frozenset(
    {
        "content-type",
        "cache-control",
        "x-accel-buffering",
        "x-tollway-route",
        "x-tollway-agent-type",
        "x-tollway-cost-usd",
        "x-tollway-compression",
    }
)

#: Set on every replayed response.
REPLAYED = "idempotent-replayed"
#: The ``x-request-id`` of the request whose response is replayed.
ORIGINAL_REQUEST_ID = "x-tollway-original-request-id"


def replayable_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The subset of ``headers`` to store, names in lower case."""
    return {k.lower(): v for k, v in headers.items() if k.lower() in REPLAYED_HEADERS}


class CorruptRecord(ValueError):
    """Stored bytes that are not a record this code wrote."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """What a repeat gets: status, headers, and the body or the stream's chunks.

    ``kept`` is False for a tombstone: the request finished but its response was
    too large to keep (``idempotency.on_oversize: tombstone``).
    """

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: tuple[bytes, ...] | None = None
    request_id: str = ""
    kept: bool = True

    @property
    def streaming(self) -> bool:
        """Whether the response was a stream (replayed chunk by chunk)."""
        return self.chunks is not None

    @property
    def payload_size(self) -> int:
        """Bytes of body or chunks."""
        if self.chunks is not None:
            return sum(len(c) for c in self.chunks)
        return len(self.body)

    def tombstone(self) -> StoredResponse:
        """This response without its payload."""
        return StoredResponse(
            status=self.status,
            headers=self.headers,
            chunks=() if self.streaming else None,
            request_id=self.request_id,
            kept=False,
        )

    def replay_headers(self) -> dict[str, str]:
        """Headers of the replayed response."""
        out = dict(self.headers)
        out[REPLAYED] = "true"
        if self.request_id:
            out[ORIGINAL_REQUEST_ID] = self.request_id
        return out

    def encode(self) -> bytes:
        """The bytes to store."""
        parts = self.chunks if self.chunks is not None else (self.body,)
        meta: dict[str, Any] = {
            "v": _VERSION,
            "status": self.status,
            "headers": dict(self.headers),
            "rid": self.request_id,
            "kept": self.kept,
            "stream": self.chunks is not None,
            "sizes": [len(p) for p in parts],
        }
        return b"".join((orjson.dumps(meta), b"\n", *parts))

    @classmethod
    def decode(cls, data: bytes) -> StoredResponse:
        """The response :meth:`encode` wrote; :class:`CorruptRecord` otherwise."""
        head, newline, payload = data.partition(b"\n")
        try:
            if not newline:
                raise ValueError("no metadata line")
            meta = orjson.loads(head)
            if not isinstance(meta, dict) or meta.get("v") != _VERSION:
                raise ValueError("unknown record version")
            sizes = [int(s) for s in meta["sizes"]]
            if sum(sizes) != len(payload) or any(s < 0 for s in sizes):
                raise ValueError("payload size mismatch")
            pieces: list[bytes] = []
            at = 0
            for size in sizes:
                pieces.append(payload[at : at + size])
                at += size
            headers = {str(k): str(v) for k, v in dict(meta["headers"]).items()}
            streaming = bool(meta["stream"])
            return cls(
                status=int(meta["status"]),
                headers=headers,
                body=b"" if streaming else b"".join(pieces),
                chunks=tuple(pieces) if streaming else None,
                request_id=str(meta["rid"]),
                kept=bool(meta["kept"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptRecord(f"unreadable idempotency record: {exc}") from exc
