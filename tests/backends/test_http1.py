"""The HTTP/1.1 upstream client against real loopback servers, on asyncio and uvloop.

The canned upstream (``bench.upstream``) serves the ordinary cases; small asyncio
stream servers play the misbehaving ones (stalls, early closes, tiny pieces).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType

import orjson
import pytest
import uvloop

from backends.http1 import (
    BodyTooLarge,
    ConnectError,
    HeadTooLarge,
    Http1Error,
    Http1Pool,
    Http1Response,
    PoolClosed,
    PoolTimeout,
    ProtocolError,
    ReadTimeout,
    RemoteDisconnected,
)
from backends.sglang.transport import ConnectFailed, translate_errors
from bench.upstream import serve
from tollway.errors import (
    TollwayError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamResponseTooLarge,
    UpstreamStreamBroken,
    UpstreamTimeout,
)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
JSON = [(b"content-type", b"application/json")]
Scenario = Callable[[], Awaitable[None]]


def on_both_loops(scenario: Scenario) -> Callable[[str], None]:
    """A test that runs ``scenario`` once on each event loop, with a 10 s bound."""

    @pytest.mark.parametrize("loop_name", list(LOOPS))
    def test(loop_name: str) -> None:
        with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
            runner.run(asyncio.wait_for(scenario(), 10))

    test.__name__ = scenario.__name__
    test.__doc__ = scenario.__doc__
    return test


def response(
    status: int = 200,
    body: bytes = b"",
    *,
    chunked: bool = False,
    close: bool = False,
    headers: Sequence[bytes] = (),
) -> bytes:
    """An HTTP/1.1 response, Content-Length or chunked framing."""
    lines = [b"HTTP/1.1 %d X" % status, *headers]
    if chunked:
        lines.append(b"transfer-encoding: chunked")
        payload = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(b"content-length: %d" % len(body))
        payload = body
    if close:
        lines.append(b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + payload


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# (writer, index of the request on its connection, request head, request body) -> keep open?
Respond = Callable[[asyncio.StreamWriter, int, bytes, bytes], Awaitable[bool]]


class Server:
    """A loopback HTTP/1.1 server whose answers a test scripts; counts connections."""

    def __init__(self, respond: Respond) -> None:
        self._respond = respond
        self.connections = 0
        self.requests = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            index = 0
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests += 1
                if not await self._respond(writer, index, head, body):
                    break
                index += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def fixed(data: bytes, keep: bool = True) -> Respond:
    """Answer every request with ``data``."""

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        w.write(data)
        await w.drain()
        return keep

    return respond


async def get(pool: Http1Pool, path: str = "/", timeout: float = 2.0) -> Http1Response:
    return await pool.request("GET", path, [], b"", first_byte_timeout_s=timeout)


@contextlib.asynccontextmanager
async def upstream() -> AsyncIterator[str]:
    """bench.upstream in this process; yields its URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ready = asyncio.Event()
    task = asyncio.create_task(serve("127.0.0.1", port, ready))
    await ready.wait()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- ordinary responses (the canned upstream) ----------------------------------------------


@on_both_loops
async def test_content_length_and_chunked_bodies() -> None:
    async with upstream() as url:
        pool = Http1Pool(url, max_connections=4)
        body = b'{"model":"m","messages":[]}'
        resp = await pool.request(
            "POST", "/v1/chat/completions", JSON, body, first_byte_timeout_s=2
        )
        assert resp.status == 200
        assert resp.header(b"Content-Type") == b"application/json"
        completion = orjson.loads(await resp.read())
        assert completion["object"] == "chat.completion"

        stream = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
        resp = await pool.request(
            "POST", "/v1/chat/completions", JSON, stream, first_byte_timeout_s=2
        )
        assert resp.header(b"transfer-encoding") == b"chunked"
        data = b"".join([block async for block in resp.chunks()])
        events = [e for e in data.split(b"\n\n") if e]
        assert events[-1] == b"data: [DONE]"
        assert orjson.loads(events[-2][6:])["usage"]["completion_tokens"] == 6
        assert b"\r\n" not in data  # de-chunked

        resp = await pool.request(
            "POST", "/v1/chat/completions", JSON, stream, first_byte_timeout_s=2
        )
        assert await resp.read() == data  # chunked, read whole
        assert (pool.open_connections, pool.idle_connections) == (1, 1)
        await pool.close()


@on_both_loops
async def test_keep_alive_reuses_one_connection_lifo() -> None:
    async with Server(fixed(response(body=b"ok"))) as server:
        pool = Http1Pool(server.url, max_connections=8)
        for _ in range(50):
            assert await (await get(pool)).read() == b"ok"
        assert server.connections == 1

        async def hold() -> bytes:
            resp = await get(pool)
            await asyncio.sleep(0.02)
            return await resp.read()

        assert await asyncio.gather(*(hold() for _ in range(5))) == [b"ok"] * 5
        assert server.connections == 5
        assert pool.idle_connections == 5
        await pool.close()
        assert pool.open_connections == 0


@on_both_loops
async def test_error_statuses_keep_their_bodies() -> None:
    answers = {
        b"/404": response(404, b'{"error":{"message":"no such model"}}'),
        b"/500": response(500, b"boom", chunked=True),
        b"/429": response(429, b"slow down", headers=[b"Retry-After: 3"]),
    }

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        w.write(answers[head.split(b" ")[1]])
        return True

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        resp = await get(pool, "/404")
        assert (resp.status, await resp.read()) == (404, b'{"error":{"message":"no such model"}}')
        resp = await get(pool, "/500")
        assert (resp.status, await resp.read()) == (500, b"boom")
        resp = await get(pool, "/429")
        assert resp.header_map()["retry-after"] == "3"
        assert await resp.read() == b"slow down"
        assert server.connections == 1
        await pool.close()


@on_both_loops
async def test_request_bytes_and_large_bodies() -> None:
    big = bytes(range(256)) * (3 * 4096)  # 3 MiB

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /prefix/echo HTTP/1.1"
        names = [line.split(b":")[0].lower() for line in lines[1:] if line]
        assert names.count(b"host") == 1 and names.count(b"content-length") == 1
        assert b"connection: keep-alive" in lines and b"x-request-id: r1" in lines
        w.write(response(body=body[::-1], chunked=i % 2 == 1))
        await w.drain()
        return True

    async with Server(respond) as server:
        pool = Http1Pool(server.url + "/prefix/")
        for _ in range(2):  # Content-Length, then chunked
            resp = await pool.request(
                "POST", "/echo", [(b"x-request-id", b"r1")], big, first_byte_timeout_s=2
            )
            assert await resp.read() == big[::-1]
        with pytest.raises(ValueError):
            await pool.request("GET", "/", [(b"x", b"a\r\nevil: 1")], b"", first_byte_timeout_s=1)
        with pytest.raises(ValueError):
            await pool.request("GET", "/a b", [], b"", first_byte_timeout_s=1)
        assert server.connections == 1
        await pool.close()


@on_both_loops
async def test_response_in_tiny_pieces() -> None:
    sse = b"".join(chunk(b"data: %d\n\n" % n) for n in range(5)) + b"0\r\n\r\n"
    cl = response(body=b"hello, world", headers=[b"x-a: 1"])
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + sse

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        for n in range(len(data := cl if i % 2 == 0 else chunked)):
            w.write(data[n : n + 1])
            await w.drain()
            await asyncio.sleep(0)
        return True

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        for _ in range(2):
            resp = await get(pool)
            assert resp.headers == [(b"x-a", b"1"), (b"content-length", b"12")]
            assert await resp.read() == b"hello, world"
            resp = await get(pool)
            blocks = [block async for block in resp.chunks()]
            assert b"".join(blocks) == b"".join(b"data: %d\n\n" % n for n in range(5))
        assert server.connections == 1
        await pool.close()


@on_both_loops
async def test_interim_response_is_skipped() -> None:
    early = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"
    async with Server(fixed(early + response(body=b"final"))) as server:
        pool = Http1Pool(server.url)
        for _ in range(2):
            resp = await get(pool)
            assert (resp.status, await resp.read()) == (200, b"final")
        assert server.connections == 1
        await pool.close()


# -- connections the server closes ---------------------------------------------------------


@on_both_loops
async def test_connection_close_and_read_until_eof() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        if b"/eof" in head:
            w.write(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 100_000)  # framed by the close
        else:
            w.write(response(body=b"bye", close=True))
        await w.drain()
        return False

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        for _ in range(3):
            assert await (await get(pool)).read() == b"bye"
        resp = await get(pool, "/eof")
        assert await resp.read() == b"x" * 100_000
        assert server.connections == 4
        assert pool.open_connections == 0
        await pool.close()


@on_both_loops
async def test_stale_keep_alive_connection_is_retried_once() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        if i == 0:  # first request on a connection: answer and keep it open
            w.write(response(body=b"ok"))
            return True
        return False  # later ones: close without a byte, as a server timing out idle ones does

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        for n in range(1, 4):
            assert await (await get(pool)).read() == b"ok"
            assert server.connections == n
        await pool.close()

    async def always_close(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        return False

    async with Server(always_close) as server:  # a fresh connection is never retried
        pool = Http1Pool(server.url)
        with pytest.raises(RemoteDisconnected):
            await get(pool)
        assert server.connections == 1
        await pool.close()


@on_both_loops
async def test_idle_connection_closed_by_server_is_dropped() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        w.write(response(body=b"ok"))
        await w.drain()
        await asyncio.sleep(0.05)
        return False  # keep-alive promised, then closed while idle

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        assert await (await get(pool)).read() == b"ok"
        assert pool.idle_connections == 1
        await asyncio.sleep(0.2)
        assert (pool.open_connections, pool.idle_connections) == (0, 0)
        assert await (await get(pool)).read() == b"ok"
        assert server.connections == 2
        await pool.close()


@on_both_loops
async def test_idle_timeout_closes_old_connections() -> None:
    async with Server(fixed(response(body=b"ok"))) as server:
        pool = Http1Pool(server.url, idle_timeout_s=0.1)

        async def hold() -> bytes:
            resp = await get(pool)
            await asyncio.sleep(0.01)
            return await resp.read()

        await asyncio.gather(hold(), hold())
        assert pool.idle_connections == 2
        await asyncio.sleep(0.3)
        assert (pool.open_connections, pool.idle_connections) == (0, 0)
        await pool.close()


@on_both_loops
async def test_partial_read_then_release_closes_the_connection() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(50):
            w.write(chunk(b"y" * 1000))
            await w.drain()
            await asyncio.sleep(0.001)
        w.write(b"0\r\n\r\n")
        return True

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        resp = await get(pool)
        iterator = resp.chunks()
        assert (await anext(iterator)).startswith(b"y")
        await iterator.aclose()  # releases: the body had not all arrived
        assert pool.open_connections == 0
        resp = await get(pool)
        assert len(await resp.read()) == 50_000
        assert server.connections == 2
        assert pool.idle_connections == 1
        await pool.close()


# -- timeouts and failures -----------------------------------------------------------------


@on_both_loops
async def test_first_byte_and_idle_chunk_timeouts() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        if b"/stall-body" in head:
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"one"))
        elif b"/trickle" in head:
            w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for _ in range(100):
                w.write(chunk(b"."))
                await w.drain()
                await asyncio.sleep(0.03)
        await asyncio.sleep(5)
        return False

    async with Server(respond) as server:
        pool = Http1Pool(server.url)
        start = time.perf_counter()
        with pytest.raises(ReadTimeout, match="first-byte"):
            await get(pool, "/stall-head", timeout=0.15)
        assert 0.1 < time.perf_counter() - start < 1.0
        assert pool.open_connections == 0

        resp = await get(pool, "/stall-body", timeout=0.15)
        seen: list[bytes] = []
        start = time.perf_counter()
        with pytest.raises(ReadTimeout, match="read timeout"):
            async for block in resp.chunks():
                seen.append(block)
        assert seen == [b"one"] and 0.1 < time.perf_counter() - start < 1.0

        resp = await get(pool, "/stall-body", timeout=0.15)
        with pytest.raises(ReadTimeout):
            await resp.read()

        # Bytes keep arriving within the read timeout, but the total deadline ends it.
        start = time.perf_counter()
        with pytest.raises(ReadTimeout, match="total"):
            resp = await pool.request(
                "GET", "/trickle", [], b"", first_byte_timeout_s=0.2, total_timeout_s=0.4
            )
            await resp.read()
        assert 0.3 < time.perf_counter() - start < 1.2
        assert pool.open_connections == 0
        await pool.close()


@on_both_loops
async def test_connect_refused_fails_fast() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pool = Http1Pool(f"http://127.0.0.1:{port}", connect_timeout_s=2)
    start = time.perf_counter()
    with pytest.raises(ConnectError):
        await get(pool)
    assert time.perf_counter() - start < 0.5
    assert pool.open_connections == 0
    await pool.close()


@on_both_loops
async def test_garbage_is_a_protocol_error() -> None:
    async with Server(fixed(b"NOT HTTP AT ALL\r\n\r\n", keep=False)) as server:
        pool = Http1Pool(server.url)
        with pytest.raises(ProtocolError):
            await get(pool)
        assert pool.open_connections == 0
        await pool.close()

    extra = response(body=b"ok") + b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
    async with Server(fixed(extra)) as server:  # bytes after the response: not reused
        pool = Http1Pool(server.url)
        for _ in range(2):
            assert await (await get(pool)).read() == b"ok"
        assert server.connections == 2
        await pool.close()


@on_both_loops
async def test_body_cut_short_is_remote_disconnected() -> None:
    async with Server(fixed(response(body=b"x" * 100)[:-40], keep=False)) as server:
        pool = Http1Pool(server.url)
        resp = await get(pool)
        with pytest.raises(RemoteDisconnected, match="during the body"):
            await resp.read()
        assert pool.open_connections == 0
        await pool.close()


# -- the pool's bound ------------------------------------------------------------------------


@on_both_loops
async def test_pool_limit_queues_waiters() -> None:
    active = 0
    peak = 0

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        w.write(response(body=b"ok"))
        return True

    async with Server(respond) as server:
        pool = Http1Pool(server.url, max_connections=3)
        bodies = await asyncio.gather(*((await_read(pool)) for _ in range(30)))
        assert bodies == [b"ok"] * 30
        assert server.connections == 3 and peak == 3
        assert pool.open_connections == 3

        held = [await get(pool) for _ in range(3)]  # every connection busy
        with pytest.raises(PoolTimeout):
            await pool.request("GET", "/", [], b"", first_byte_timeout_s=1, total_timeout_s=0.1)
        waiter = asyncio.create_task(await_read(pool))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        held[0].release()  # handed straight to the waiter
        assert await waiter == b"ok"

        held[0] = await get(pool)  # every connection busy again
        queued = [asyncio.create_task(await_read(pool)) for _ in range(2)]
        await asyncio.sleep(0.01)
        queued[0].cancel()  # leaves the line without taking a connection
        with contextlib.suppress(asyncio.CancelledError):
            await queued[0]
        for resp in held:
            await resp.read()
        assert await queued[1] == b"ok"
        assert pool.open_connections == 3 and pool.idle_connections == 3
        await pool.close()


async def await_read(pool: Http1Pool) -> bytes:
    return await (await get(pool)).read()


@on_both_loops
async def test_cancel_while_waiting_for_the_head_frees_the_slot() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        if b"/slow" in head:
            await asyncio.sleep(5)
        w.write(response(body=b"ok"))
        return True

    async with Server(respond) as server:
        pool = Http1Pool(server.url, max_connections=1)
        task = asyncio.create_task(get(pool, "/slow"))
        await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert pool.open_connections == 0
        assert await await_read(pool) == b"ok"
        await pool.close()


@on_both_loops
async def test_close_fails_requests_in_flight() -> None:
    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        await asyncio.sleep(5)
        return False

    async with Server(respond) as server:
        pool = Http1Pool(server.url, max_connections=1)
        first = asyncio.create_task(get(pool))
        second = asyncio.create_task(get(pool))
        await asyncio.sleep(0.05)
        await pool.close()
        for task in (first, second):
            with pytest.raises(PoolClosed):
                await task
        with pytest.raises(PoolClosed):
            await get(pool)


# -- flow control --------------------------------------------------------------------------


@on_both_loops
async def test_slow_consumer_of_a_fast_stream_keeps_memory_bounded() -> None:
    total = 24 * 1024 * 1024
    piece = b"z" * 65536

    async def respond(w: asyncio.StreamWriter, i: int, head: bytes, body: bytes) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(total // len(piece)):
            w.write(chunk(piece))
            await w.drain()
        w.write(b"0\r\n\r\n")
        await w.drain()
        return True

    async with Server(respond) as server:
        limit = 256 * 1024
        pool = Http1Pool(server.url, buffer_limit=limit)
        resp = await get(pool)
        received = 0
        peak = 0
        slow_steps = 0
        async for block in resp.chunks():
            received += len(block)
            if slow_steps < 30:  # a slow client for a while: the upstream gets ahead
                slow_steps += 1
                await asyncio.sleep(0.01)
                peak = max(peak, resp.buffered)
        assert received == total
        # Reading stops once the buffer passes the limit: at most one more socket read.
        assert limit <= peak < limit + 1024 * 1024, peak
        assert pool.idle_connections == 1
        await pool.close()


# -- translation into Tollway's errors --------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "streaming", "expected", "retryable"),
    [
        (ConnectError("refused"), False, ConnectFailed, True),
        (ReadTimeout("slow"), False, UpstreamTimeout, True),
        (ReadTimeout("slow"), True, UpstreamTimeout, True),
        (PoolTimeout("busy"), False, UpstreamTimeout, True),
        (RemoteDisconnected("gone"), False, UpstreamError, True),
        (RemoteDisconnected("gone"), True, UpstreamStreamBroken, True),
        (ProtocolError("junk"), False, UpstreamBadResponse, True),
        (ProtocolError("junk"), True, UpstreamStreamBroken, True),
        (HeadTooLarge("2,000 headers"), False, UpstreamBadResponse, True),
        (BodyTooLarge("150 MB"), False, UpstreamResponseTooLarge, False),
        (PoolClosed("closed"), False, UpstreamError, True),
    ],
)
def test_errors_translate_at_the_transport_boundary(
    error: Exception, streaming: bool, expected: type[TollwayError], retryable: bool
) -> None:
    worker = "http://10.0.0.9:30000"
    with pytest.raises(expected) as caught, translate_errors(worker, streaming=streaming):
        raise error
    assert type(caught.value) is expected and caught.value.__cause__ is error
    assert isinstance(caught.value, UpstreamError) and caught.value.retryable is retryable
    assert "10.0.0.9" not in caught.value.message  # the worker is in the log, not the message


@on_both_loops
async def test_iterating_after_release_fails() -> None:
    async with Server(fixed(response(body=b"abc", chunked=True))) as server:
        pool = Http1Pool(server.url)
        resp = await get(pool)
        iterator = resp.chunks()
        resp.release()  # the whole response had arrived: the connection is reused
        with pytest.raises(Http1Error, match="released"):
            await anext(iterator)
        assert await await_read(pool) == b"abc"
        assert server.connections == 1
        await pool.close()
