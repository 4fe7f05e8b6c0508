"""What an upstream may send the HTTP/1.1 client: head size, header count, whole-body size.

Each misbehaving answer fails with its own error, closes its connection (the
pool's count goes back to zero) and leaves the pool fit for the next request.
"""

from __future__ import annotations

import asyncio

import pytest

from backends.http1 import BodyTooLarge, HeadTooLarge, Http1Pool, ProtocolError
from tests.backends.test_http1 import Server, fixed, get, on_both_loops, response

HEAD_LIMIT = 4096


def limited(url: str, **limits: int) -> Http1Pool:
    return Http1Pool(url, **{"max_head_bytes": HEAD_LIMIT, "max_headers": 20, **limits})


async def fails_then_recovers(answer: bytes, error: type[Exception], **limits: int) -> None:
    """The first request gets ``answer`` and fails with ``error``; the next one succeeds."""
    good = response(body=b"fine")

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        first = b"x-attempt: bad" in head
        w.write(answer if first else good)
        await w.drain()
        return not first

    async with Server(respond) as server:
        pool = limited(server.url, **limits)
        with pytest.raises(error):
            resp = await pool.request(
                "GET", "/", [(b"x-attempt", b"bad")], b"", first_byte_timeout_s=2
            )
            await resp.read()
        assert pool.open_connections == 0 and pool.idle_connections == 0
        assert await (await get(pool)).read() == b"fine"
        assert pool.open_connections == 1 and server.connections == 2
        await pool.close()


@on_both_loops
async def test_too_many_header_lines() -> None:
    many = [b"x-h%d: v" % i for i in range(21)]
    await fails_then_recovers(response(body=b"{}", headers=many), HeadTooLarge)


@on_both_loops
async def test_exactly_the_header_limit_passes() -> None:
    # 20 lines in all: content-length is one of them.
    lines = [b"x-h%d: v" % i for i in range(19)]
    async with Server(fixed(response(body=b"ok", headers=lines))) as server:
        pool = limited(server.url)
        assert await (await get(pool)).read() == b"ok"
        await pool.close()


@on_both_loops
async def test_one_huge_header_in_one_piece() -> None:
    await fails_then_recovers(
        response(body=b"{}", headers=[b"x-big: " + b"a" * HEAD_LIMIT]), HeadTooLarge
    )


@on_both_loops
async def test_a_head_that_never_ends() -> None:
    """A header value that keeps coming (8 MB without a line end): cut at the limit."""

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nx-big: ")
        sent = 0
        try:
            while sent < 8 * 1024 * 1024:
                w.write(b"a" * 65536)
                await w.drain()
                sent += 65536
        except ConnectionError:
            pass
        return False

    async with Server(respond) as server:
        pool = limited(server.url)
        with pytest.raises(HeadTooLarge):
            await get(pool)
        assert pool.open_connections == 0
        await pool.close()


@on_both_loops
async def test_interim_heads_count_towards_the_limit() -> None:
    interim = b"HTTP/1.1 100 Continue\r\nx-pad: " + b"p" * 1000 + b"\r\n\r\n"
    await fails_then_recovers(interim * 5 + response(body=b"{}"), HeadTooLarge)


@on_both_loops
async def test_a_body_over_the_limit_declared_by_content_length() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 150000000\r\n\r\n" + b"x" * 1000
    await fails_then_recovers(head, BodyTooLarge, max_body_bytes=1_000_000)


@on_both_loops
async def test_a_chunked_body_over_the_limit() -> None:
    await fails_then_recovers(
        response(body=b"y" * 300_000, chunked=True), BodyTooLarge, max_body_bytes=100_000
    )


@on_both_loops
async def test_a_body_read_as_a_stream_is_not_bound_by_the_whole_body_limit() -> None:
    async with Server(fixed(response(body=b"z" * 300_000, chunked=True))) as server:
        pool = limited(server.url, max_body_bytes=100_000)
        resp = await get(pool)
        assert sum([len(part) async for part in resp.chunks()]) == 300_000
        await pool.close()


@on_both_loops
async def test_a_body_at_the_limit_passes() -> None:
    async with Server(fixed(response(body=b"k" * 100_000))) as server:
        pool = limited(server.url, max_body_bytes=100_000)
        assert len(await (await get(pool)).read()) == 100_000
        await pool.close()


@on_both_loops
async def test_garbage_instead_of_http() -> None:
    await fails_then_recovers(b"\x00\x01\x02 garbage \xff\r\n\r\n" * 10, ProtocolError)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limits"):
        Http1Pool("http://127.0.0.1:1", max_body_bytes=0)
