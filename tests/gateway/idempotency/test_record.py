"""The stored response and its encoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.idempotency import StoredResponse, replayable_headers
from gateway.idempotency.record import CorruptRecord

headers = st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=4)


@given(
    status=st.integers(100, 599),
    headers=headers,
    body=st.binary(max_size=200),
    rid=st.text(max_size=10),
    kept=st.booleans(),
)
def test_body_round_trip(
    status: int, headers: dict[str, str], body: bytes, rid: str, kept: bool
) -> None:
    stored = StoredResponse(status, headers, body=body, request_id=rid, kept=kept)
    assert StoredResponse.decode(stored.encode()) == stored


@given(chunks=st.lists(st.binary(max_size=50), max_size=12))
def test_chunks_round_trip_byte_for_byte(chunks: list[bytes]) -> None:
    stored = StoredResponse(200, {"content-type": "text/event-stream"}, chunks=tuple(chunks))
    back = StoredResponse.decode(stored.encode())
    assert back.chunks == tuple(chunks)
    assert back.streaming and back.payload_size == sum(map(len, chunks))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no newline",
        b'{"v":2}\n',
        b'{"v":1,"status":200,"headers":{},"rid":"","kept":true,"stream":false,"sizes":[5]}\nabc',
        b"[1]\n",
        b"{bad json\n",
    ],
)
def test_corrupt_records_are_refused(data: bytes) -> None:
    with pytest.raises(CorruptRecord):
        StoredResponse.decode(data)


def test_tombstone_keeps_metadata_only() -> None:
    stored = StoredResponse(200, {"a": "b"}, chunks=(b"x", b"y"), request_id="r")
    tomb = stored.tombstone()
    assert (tomb.kept, tomb.chunks, tomb.request_id, tomb.streaming) == (False, (), "r", True)
    assert StoredResponse(200, body=b"zz").tombstone().body == b""


def test_only_replayable_headers_are_kept() -> None:
    kept = replayable_headers(
        {
            "Content-Type": "application/json",
            "x-request-id": "r1",
            "x-ratelimit-remaining-requests": "9",
            "X-Tollway-Route": "pool:a/w",
            "x-tollway-cost-usd": "0.0001",
        }
    )
    assert kept == {
        "content-type": "application/json",
        "x-tollway-route": "pool:a/w",
        "x-tollway-cost-usd": "0.0001",
    }
