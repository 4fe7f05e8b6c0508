"""The SSE relay, for every way the upstream may split its bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import UpstreamResponse
from gateway.relay import StreamRelay
from tests.gateway.fake_worker import chunk, usage_chunk

EVENTS = [chunk("a"), chunk("b"), chunk(finish="stop"), usage_chunk(), b"data: [DONE]\n\n"]
BLOB = b"".join(EVENTS)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(blob) + 1) for c in cuts} | {0, len(blob)})
    return [blob[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


async def run(blocks: list[bytes], include_usage: bool) -> tuple[bytes, StreamRelay]:
    async def gen() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    relay = StreamRelay(
        UpstreamResponse(status=200, route="r", worker="w", stream=gen()),
        include_usage=include_usage,
        rewrite=(b'"model":"upstream-model"', b'"model":"public"'),
    )
    out = b"".join([b async for b in relay])
    return out, relay


def events(out: bytes) -> list[bytes]:
    return [e for e in out.split(b"\n\n") if e]


@settings(max_examples=200, deadline=None)
@given(
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
    include_usage=st.booleans(),
)
async def test_any_split_relays_the_same_events(cuts: list[int], include_usage: bool) -> None:
    out, relay = await run(split(BLOB, cuts), include_usage)
    expected = [e.replace(b"upstream-model", b"public") for e in EVENTS]
    if not include_usage:
        expected.remove(usage_chunk().replace(b"upstream-model", b"public"))
    assert events(out) == [e.rstrip(b"\n") for e in expected]
    assert relay.outcome.finished
    assert relay.outcome.usage == orjson.loads(usage_chunk()[6:])["usage"]


@settings(max_examples=100, deadline=None)
@given(cut_at=st.integers(min_value=0, max_value=len(BLOB) - len(b"data: [DONE]\n\n")))
async def test_any_truncation_ends_with_an_error_event(cut_at: int) -> None:
    out, relay = await run([BLOB[:cut_at]], include_usage=True)
    assert b"[DONE]" not in out
    last = orjson.loads(events(out)[-1].removeprefix(b"data: "))
    assert last["error"]["code"] == "upstream_stream_broken"
    assert not relay.outcome.finished


async def test_usage_on_a_content_chunk_is_stripped_when_not_asked_for() -> None:
    data = orjson.loads(chunk("x")[6:])
    data["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    blob = b"data: " + orjson.dumps(data) + b"\n\n" + b"data: [DONE]\n\n"
    out, relay = await run([blob], include_usage=False)
    first = orjson.loads(events(out)[0].removeprefix(b"data: "))
    assert first["usage"] is None and first["choices"][0]["delta"]["content"] == "x"
    assert relay.outcome.usage == data["usage"]
