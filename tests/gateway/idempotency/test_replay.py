"""Recording streams, replaying responses over HTTP, and a keyed endpoint end to end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.idempotency import (
    IdempotencyConfig,
    IdempotencyCoordinator,
    Lease,
    MemoryIdempotencyStore,
    Proceed,
    Replay,
    StoredResponse,
    StreamCapture,
    idempotency_key_of,
    recorded_stream,
    replay_response,
    replayable_headers,
    request_fingerprint,
    wait_preference,
)
from tests.waiting import until
from tollway.errors import TollwayError

CHUNKS = [b'data: {"a":1}\n\n', b'data: {"a":2}\n\n', b"data: [DONE]\n\n"]


def coordinator(**config: object) -> IdempotencyCoordinator:
    settings = {"poll_initial_s": 0.01, "poll_max_s": 0.02, **config}
    return IdempotencyCoordinator(
        MemoryIdempotencyStore(), IdempotencyConfig.model_validate(settings)
    )


async def lease_of(c: IdempotencyCoordinator, key: str = "k") -> Lease:
    outcome = await c.begin("t", key, "f" * 64)
    assert isinstance(outcome, Proceed)
    return outcome.lease


async def upstream(chunks: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, chunk in enumerate(chunks):
        if fail_after is not None and i == fail_after:
            raise TollwayError("broke")
        yield chunk


def test_capture_drops_everything_once_over_the_limit() -> None:
    capture = StreamCapture(10)
    capture.add(b"12345")
    capture.add(b"67890")
    assert not capture.overflowed
    capture.add(b"x")
    capture.add(b"y")
    stored = capture.response(200, {"Content-Type": "text/event-stream", "x-request-id": "r"})
    assert stored.chunks == () and not stored.kept and capture.size == 12
    assert stored.headers == {"content-type": "text/event-stream"}


async def test_a_finished_stream_is_stored_chunk_for_chunk() -> None:
    c = coordinator()
    lease = await lease_of(c)
    out = [
        chunk
        async for chunk in recorded_stream(
            upstream(CHUNKS), lease, succeeded=lambda: True, status=200, headers={}
        )
    ]
    assert out == CHUNKS
    replay = await c.begin("t", "k", "f" * 64)
    assert isinstance(replay, Replay) and replay.response.chunks == tuple(CHUNKS)


async def test_an_unfinished_stream_releases_the_key() -> None:
    c = coordinator()
    lease = await lease_of(c)
    out = [
        chunk
        async for chunk in recorded_stream(
            upstream(CHUNKS[:2]), lease, succeeded=lambda: False, status=200, headers={}
        )
    ]
    assert out == CHUNKS[:2]
    assert isinstance(await c.begin("t", "k", "f" * 64, wait_s=0), Proceed)


async def test_a_broken_or_abandoned_stream_releases_the_key() -> None:
    c = coordinator()
    lease = await lease_of(c, "broken")
    stream = recorded_stream(
        upstream(CHUNKS, fail_after=1), lease, succeeded=lambda: True, status=200, headers={}
    )
    got = []
    try:
        async for chunk in stream:
            got.append(chunk)
    except TollwayError:
        pass
    assert got == CHUNKS[:1]
    await c.aclose()
    assert isinstance(await c.begin("t", "broken", "f" * 64, wait_s=0), Proceed)

    lease = await lease_of(c, "client-left")
    gen = recorded_stream(upstream(CHUNKS), lease, succeeded=lambda: True, status=200, headers={})
    assert await anext(gen) == CHUNKS[0]
    await gen.aclose()  # the client disconnected
    await c.aclose()
    assert isinstance(await c.begin("t", "client-left", "f" * 64, wait_s=0), Proceed)


async def test_a_recorded_stream_closed_before_its_first_chunk_releases_the_key() -> None:
    # A client that left before the first chunk: aclose() on an async generator that
    # never started ran none of its code, so the key stayed held and the relay open.
    c = coordinator()
    lease = await lease_of(c, "never-started")
    closed: list[bool] = []

    async def inner() -> AsyncIterator[bytes]:
        try:
            yield CHUNKS[0]
        finally:
            closed.append(True)

    source = inner()
    await anext(source)  # started, so that its aclose() runs its finally
    stream = recorded_stream(source, lease, succeeded=lambda: True, status=200, headers={})
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert closed == [True]
    await c.aclose()
    assert isinstance(await c.begin("t", "never-started", "f" * 64, wait_s=0), Proceed)


def keyed_app(c: IdempotencyCoordinator, calls: list[int]) -> Starlette:
    """A miniature of the pipeline's wiring: begin → (replay | run → complete/abandon)."""

    async def chat(request: Request) -> Response:
        body = orjson.loads(await request.body())
        key = idempotency_key_of(request.headers, body)
        assert key is not None
        fp = request_fingerprint("/v1/chat/completions", body)
        try:
            outcome = await c.begin("tenant", key, fp, wait_s=wait_preference(request.headers))
        except TollwayError as exc:
            return Response(orjson.dumps(exc.to_body()), exc.status_code, exc.headers)
        if isinstance(outcome, Replay):
            return replay_response(outcome.response)
        lease = outcome.lease
        calls.append(1)
        await asyncio.sleep(0.05)  # the upstream call, billed here
        headers = {"content-type": "application/json", "x-tollway-route": "pool:p/w"}
        if body.get("stream"):
            headers["content-type"] = "text/event-stream"
            stream = recorded_stream(
                upstream(CHUNKS), lease, succeeded=lambda: True, status=200, headers=headers
            )
            return StreamingResponse(stream, headers=headers)
        content = orjson.dumps({"id": f"cmpl-{len(calls)}", "n": len(calls)})
        await lease.complete(
            StoredResponse(200, replayable_headers(headers), body=content, request_id="r1")
        )
        return Response(content, 200, headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


async def test_keyed_endpoint_runs_once_for_parallel_and_later_repeats() -> None:
    calls: list[int] = []
    app = keyed_app(coordinator(), calls)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        payload = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

        async def send(extra: dict[str, str] | None = None) -> httpx.Response:
            headers = {"idempotency-key": "step-7", **(extra or {})}
            return await client.post("/v1/chat/completions", json=payload, headers=headers)

        responses = await asyncio.gather(*(send() for _ in range(10)))
        assert len(calls) == 1
        assert len({r.content for r in responses}) == 1
        replayed = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
        assert len(replayed) == 9
        assert all(r.headers["x-tollway-original-request-id"] == "r1" for r in replayed)
        assert all(r.headers["content-type"] == "application/json" for r in replayed)

        later = await send()
        assert later.content == responses[0].content and len(calls) == 1

        other = await client.post(
            "/v1/chat/completions",
            json={**payload, "temperature": 0.5},
            headers={"idempotency-key": "step-7"},
        )
        assert other.status_code == 422

        streamed = {**payload, "stream": True}
        first = await client.post(
            "/v1/chat/completions", json=streamed, headers={"idempotency-key": "s"}
        )
        assert first.content == b"".join(CHUNKS)
        again = await client.post(
            "/v1/chat/completions", json=streamed, headers={"idempotency-key": "s"}
        )
        assert again.content == first.content
        assert again.headers["content-type"].startswith("text/event-stream")
        assert len(calls) == 2


async def test_busy_key_with_prefer_wait_0_is_409_over_http() -> None:
    calls: list[int] = []
    app = keyed_app(coordinator(), calls)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        payload = {"model": "m", "messages": []}
        slow = asyncio.create_task(
            client.post("/v1/chat/completions", json=payload, headers={"idempotency-key": "b"})
        )
        await until(lambda: calls == [1], what="the first request holds the key")
        busy = await client.post(
            "/v1/chat/completions",
            json=payload,
            headers={"idempotency-key": "b", "prefer": "wait=0"},
        )
        assert busy.status_code == 409
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "idempotency_in_progress"
        assert (await slow).status_code == 200
