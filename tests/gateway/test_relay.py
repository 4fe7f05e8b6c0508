"""The SSE relay, for every way the upstream may split its bytes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import UpstreamResponse
from gateway.relay import StreamOutcome, StreamRelay, read_opening
from gateway.shapes import checked_usage
from gateway.sseframing import EventFramer
from tests.gateway.fake_worker import chunk, sglang_stream_error, usage_chunk
from tollway.errors import TollwayError, UpstreamRejected, UpstreamUnusableAnswer

EVENTS = [chunk("a"), chunk("b"), chunk(finish="stop"), usage_chunk(), b"data: [DONE]\n\n"]
BLOB = b"".join(EVENTS)


def split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(blob) + 1) for c in cuts} | {0, len(blob)})
    return [blob[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


async def run(
    blocks: list[bytes], include_usage: bool, **options: int
) -> tuple[bytes, StreamRelay]:
    async def gen() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    relay = StreamRelay(
        UpstreamResponse(status=200, route="r", worker="w", stream=gen()),
        include_usage=include_usage,
        rewrite=(b'"model":"upstream-model"', b'"model":"public"'),
        **options,
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


class Watched:
    """An upstream stream that counts its releases and failure reports, and the
    relay's ``on_close`` calls."""

    def __init__(self, blocks: list[bytes], *, endless: bool = False) -> None:
        self.blocks = blocks
        self.endless = endless
        self.released = 0
        self.failures: list[TollwayError] = []
        self.closes: list[tuple[StreamOutcome, bool]] = []

    async def gen(self) -> AsyncIterator[bytes]:
        for block in self.blocks:
            yield block
        while self.endless:
            await asyncio.Event().wait()

    async def release(self) -> None:
        self.released += 1

    def upstream(self) -> UpstreamResponse:
        return UpstreamResponse(
            status=200,
            route="r",
            worker="w",
            stream=self.gen(),
            _close=self.release,
            _failed=self.failures.append,
        )

    def relay(self, **options: Any) -> StreamRelay:
        return StreamRelay(
            self.upstream(),
            include_usage=True,
            on_close=lambda outcome, cancelled: self.closes.append((outcome, cancelled)),
            **options,
        )


async def test_a_relay_closed_before_it_started_releases_once_as_cancelled() -> None:
    # The client hung up before the first chunk: the sender only calls aclose().
    w = Watched(EVENTS)
    relay = w.relay()
    await relay.aclose()
    await relay.aclose()
    assert w.released == 1
    assert [cancelled for _, cancelled in w.closes] == [True]
    assert [b async for b in relay] == []


async def test_a_relay_left_mid_stream_or_cancelled_releases_once() -> None:
    w = Watched(EVENTS[:2], endless=True)
    relay = w.relay()
    assert b'"a"' in await anext(aiter(relay))
    await relay.aclose()
    assert (w.released, [c for _, c in w.closes]) == (1, [True])

    w = Watched(EVENTS[:1], endless=True)
    relay = w.relay()
    chunks = aiter(relay)
    await anext(chunks)
    task = asyncio.ensure_future(anext(chunks))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await relay.aclose()
    assert (w.released, [c for _, c in w.closes]) == (1, [True])


async def test_a_finished_relay_releases_once_not_cancelled() -> None:
    w = Watched(EVENTS)
    relay = w.relay()
    out = [b async for b in relay]
    await relay.aclose()
    assert out[-1] == b"data: [DONE]\n\n"
    assert w.released == 1 and [c for _, c in w.closes] == [False]
    assert w.failures == []


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=300), min_size=1, max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    limit=st.integers(min_value=50, max_value=400),
)
def test_the_framer_cuts_any_split_into_the_same_events(
    sizes: list[int], cuts: list[int], limit: int
) -> None:
    events = [b"data: " + b"x" * size for size in sizes]
    blob = b"".join(e + b"\n\n" for e in events)
    framer = EventFramer(limit)
    out = b""
    try:
        for block in split(blob, cuts):
            out += framer.feed(block)
    except UpstreamUnusableAnswer:
        assert max(len(e) for e in events) > limit
        return
    assert max(len(e) for e in events) <= limit
    assert out == blob and framer.rest() == b""


async def test_framing_a_giant_event_takes_linear_time() -> None:
    # 8 MB without a blank line in 4 KiB blocks: appending to bytes and searching the
    # whole buffer per block copied gigabytes (the old relay spent seconds of CPU).
    size, block = 8 * 1024 * 1024, 4096
    blob = b"data: " + b"z" * size + b"\n\n" + b"data: [DONE]\n\n"
    blocks = [blob[i : i + block] for i in range(0, len(blob), block)]
    started = time.process_time()
    out, relay = await run(blocks, include_usage=True, max_event_bytes=2 * size)
    assert time.process_time() - started < 1.0
    assert relay.outcome.finished and len(out) == len(blob)


async def test_an_event_over_the_limit_fails_the_stream_and_tells_the_upstream() -> None:
    w = Watched([chunk("a"), b"data: " + b"x" * 5000])
    relay = w.relay(max_event_bytes=1024)
    out = [b async for b in relay]
    error = orjson.loads(out[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "bad_upstream_response"
    assert [type(e) for e in w.failures] == [UpstreamUnusableAnswer]
    assert w.released == 1 and [c for _, c in w.closes] == [False]


async def test_an_error_as_the_first_event_is_raised_before_anything_is_sent() -> None:
    w = Watched([sglang_stream_error("prompt too long"), b"data: [DONE]\n\n"])
    with pytest.raises(UpstreamRejected) as raised:
        await read_opening(w.upstream(), 1024)
    assert raised.value.status_code == 400 and raised.value.message == "prompt too long"
    assert w.released == 1 and w.failures == [raised.value]


async def test_the_opening_is_relayed_once() -> None:
    w = Watched(EVENTS)
    upstream = w.upstream()
    opening = await read_opening(upstream, 1024)
    assert opening.data and opening.first_byte_at is not None
    relay = StreamRelay(upstream, include_usage=True, opening=opening)
    out = b"".join([b async for b in relay])
    assert events(out) == [e.rstrip(b"\n") for e in EVENTS]


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {"prompt_tokens": 0, "completion_tokens": 0},
        {
            "prompt_tokens": 7,
            "completion_tokens": 3,
            "total_tokens": 10,
            "prompt_tokens_details": {"cached_tokens": 7},
            "completion_tokens_details": None,
            "reasoning_tokens": 0,
            "cost": 0.5,
        },
    ],
)
def test_good_usages_pass_unchanged(usage: object) -> None:
    assert checked_usage(usage) is usage


def sglang_chunk(finish: str | None = None, **delta: Any) -> bytes:
    """A chunk as SGLang 0.5.6 streams it (``ChatCompletionStreamResponse``, compact
    JSON): every ``DeltaMessage`` key, unset ones null, and ``"usage": null``."""
    data = {
        "id": "5c1bd5a0c4b54d7a9e1c2f8d3b6a7e90",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": None,
                    "content": None,
                    "reasoning_content": None,
                    "tool_calls": None,
                    **delta,
                },
                "logprobs": None,
                "finish_reason": finish,
                "matched_stop": None,
            }
        ],
        "usage": None,
    }
    return b"data: " + orjson.dumps(data) + b"\n\n"


def sglang_call(index: int, call_id: str | None, name: str | None, arguments: str) -> Any:
    """One streamed tool-call delta as SGLang sends it: the header carries the id and
    name, argument deltas null ones, and every delta ``"type": "function"``."""
    function = {"name": name, "arguments": arguments}
    return [{"id": call_id, "index": index, "type": "function", "function": function}]


def deltas(out: bytes) -> list[dict[str, Any]]:
    chunks = [orjson.loads(e.removeprefix(b"data: ")) for e in events(out)[:-1]]
    return [c["choices"][0]["delta"] for c in chunks if c["choices"]]


async def test_sglang_null_delta_fields_are_dropped() -> None:
    blob = b"".join(
        [
            sglang_chunk(role="assistant", content=""),
            sglang_chunk(content="Hi"),
            sglang_chunk(reasoning_content="hmm"),
            sglang_chunk(tool_calls=sglang_call(0, "call_1", "f", "")),
            sglang_chunk(finish="stop"),
            b"data: [DONE]\n\n",
        ]
    )
    out, relay = await run(split(blob, [150, 700]), include_usage=False)
    assert deltas(out) == [
        {"role": "assistant", "content": ""},
        {"content": "Hi"},
        {"reasoning_content": "hmm"},
        {"tool_calls": sglang_call(0, "call_1", "f", "")},
        {},
    ]
    assert relay.outcome.finished and relay.outcome.content_events == 1


@pytest.mark.parametrize("blocks", ["one", "per event"])
async def test_streamed_tool_calls_count_distinct_calls(blocks: str) -> None:
    text = '{"note": "\\"type\\":\\"function\\", \\"index\\":7", "x": "\\"type\\":\\"function\\""}'
    stream = [
        sglang_chunk(role="assistant", content=""),
        sglang_chunk(tool_calls=sglang_call(0, "call_a", "lookup", "")),
        *(sglang_chunk(tool_calls=sglang_call(0, None, None, part)) for part in text),
        sglang_chunk(tool_calls=sglang_call(1, "call_b", "lookup", "")),
        sglang_chunk(tool_calls=sglang_call(1, None, None, '{"type":"function"}')),
        sglang_chunk(finish="tool_calls"),
        b"data: [DONE]\n\n",
    ]
    out, relay = await run([b"".join(stream)] if blocks == "one" else stream, False)
    assert relay.outcome.finished
    assert relay.outcome.tool_calls == 2
    arguments = "".join(
        call["function"]["arguments"]
        for delta in deltas(out)
        for call in delta.get("tool_calls", ())
        if call["index"] == 0
    )
    assert arguments == text
