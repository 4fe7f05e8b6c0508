"""The gateway's Redis client, against real Redis and scripted stand-ins."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import hiredis
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollway.resp import (
    IMMEDIATE_BELOW,
    RespClient,
    RespConnectionError,
    RespError,
    RespTimeout,
    _Connection,
)
from tollway.resp_script import Script

Handler = Callable[[list[bytes], asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RespClient]:
    resp = RespClient.from_url(redis_url, timeout_s=2.0)
    yield resp
    await resp.aclose()


@pytest.fixture
def key(redis_prefix: str) -> str:
    return f"{redis_prefix}resp:{secrets.token_hex(4)}"


@asynccontextmanager
async def scripted_server(handler: Handler) -> AsyncIterator[tuple[str, list[list[bytes]]]]:
    """A loopback RESP server whose answers ``handler`` writes; yields its URL and
    every command it received."""
    received: list[list[bytes]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = hiredis.Reader()
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    received.append(command)
                    await handler(command, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}", received
    finally:
        server.close()
        await server.wait_closed()


async def test_commands_and_types_round_trip(client: RespClient, key: str) -> None:
    assert await client.execute("SET", key, b"\x00\xffbinary", "PX", 60_000) == b"OK"
    assert await client.execute("GET", key) == b"\x00\xffbinary"
    assert await client.execute("DEL", key) == 1
    assert await client.execute("INCRBY", key, 41) == 41
    assert await client.execute("INCRBYFLOAT", key, 0.5) == b"41.5"
    assert await client.execute("GET", f"{key}:missing") is None
    await client.execute("DEL", key)


async def test_error_replies_raise_and_keep_the_connection(client: RespClient, key: str) -> None:
    with pytest.raises(RespError) as info:
        await client.execute("EVALSHA", "0" * 40, 0)
    assert info.value.kind == "NOSCRIPT"
    await client.execute("SET", key, "text", "PX", 60_000)
    with pytest.raises(RespError) as wrong:
        await client.execute("INCR", key)
    assert wrong.value.kind == "ERR"
    assert await client.execute("PING") == b"PONG"  # same connection, still in step
    await client.execute("DEL", key)


async def test_pipeline_returns_replies_in_order_with_errors_as_values(
    client: RespClient, key: str
) -> None:
    replies = await client.pipeline(
        [("SET", key, 1, "PX", 60_000), ("INCR", key), ("HGET", key, "f"), ("GET", key)]
    )
    assert replies[0] == b"OK" and replies[1] == 2 and replies[3] == b"2"
    assert isinstance(replies[2], RespError) and replies[2].kind == "WRONGTYPE"
    assert await client.pipeline([]) == []
    await client.execute("DEL", key)


async def test_concurrent_callers_each_get_their_own_reply(client: RespClient, key: str) -> None:
    results = await asyncio.gather(*(client.execute("INCR", key) for _ in range(500)))
    assert sorted(results) == list(range(1, 501))
    # replies are matched in order: each caller's value is distinct and all arrive
    echoes = await asyncio.gather(*(client.execute("ECHO", str(i)) for i in range(300)))
    assert echoes == [str(i).encode() for i in range(300)]
    await client.execute("DEL", key)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.binary(max_size=4096))
async def test_any_bytes_survive_a_round_trip(client: RespClient, key: str, value: bytes) -> None:
    await client.execute("SET", key, value, "PX", 60_000)
    assert await client.execute("GET", key) == value


async def test_a_cancelled_caller_does_not_shift_the_replies(client: RespClient) -> None:
    await client.execute("PING")
    slow = asyncio.ensure_future(client.execute("ECHO", "first"))
    await asyncio.sleep(0)
    slow.cancel()
    assert await client.execute("ECHO", "second") == b"second"
    assert slow.cancelled()


async def test_a_killed_connection_fails_callers_and_the_next_call_reconnects(
    client: RespClient, redis_url: str
) -> None:
    name = f"resp-test-{secrets.token_hex(4)}"
    await client.execute("CLIENT", "SETNAME", name)
    other = RespClient.from_url(redis_url, timeout_s=2.0)
    try:
        listing = (await other.execute("CLIENT", "LIST")).decode()
        ids = [
            line.split(" ", 1)[0].split("=")[1]
            for line in listing.splitlines()
            if f"name={name}" in line
        ]
        assert len(ids) == 1
        blocked = asyncio.ensure_future(client.execute("BLPOP", f"resp:never:{name}", 5))
        await asyncio.sleep(0.05)
        assert await other.execute("CLIENT", "KILL", "ID", ids[0]) == 1
        with pytest.raises(RespConnectionError):
            await blocked
    finally:
        await other.aclose()
    assert await client.execute("PING") == b"PONG"


async def test_no_answer_times_out_every_waiting_caller_then_recovers() -> None:
    answer = asyncio.Event()

    async def handler(command: list[bytes], writer: asyncio.StreamWriter) -> None:
        if answer.is_set():
            writer.write(b"+PONG\r\n")
            await writer.drain()

    async with scripted_server(handler) as (url, _):
        resp = RespClient.from_url(url, timeout_s=0.2)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(resp.execute("PING") for _ in range(3)), return_exceptions=True
            )
            elapsed = time.monotonic() - started
            assert all(isinstance(r, RespTimeout) for r in results)
            assert isinstance(results[0], TimeoutError) and isinstance(results[0], OSError)
            assert 0.15 <= elapsed < 1.5
            answer.set()
            assert await resp.execute("PING") == b"PONG"  # a fresh connection
        finally:
            await resp.aclose()


async def test_set_up_sends_auth_and_select_from_the_url() -> None:
    async def handler(command: list[bytes], writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK\r\n" if command[0] in (b"AUTH", b"SELECT") else b":7\r\n")
        await writer.drain()

    async with scripted_server(handler) as (url, received):
        address = url.removeprefix("redis://")
        resp = RespClient.from_url(f"redis://svc:p%40ss@{address}/3")
        try:
            assert await resp.execute("INCR", "k") == 7
        finally:
            await resp.aclose()
    assert received[:2] == [[b"AUTH", b"svc", b"p@ss"], [b"SELECT", b"3"]]


async def test_refused_set_up_and_refused_connections_are_connection_errors() -> None:
    async def handler(command: list[bytes], writer: asyncio.StreamWriter) -> None:
        writer.write(b"-WRONGPASS invalid username-password pair\r\n")
        await writer.drain()

    async with scripted_server(handler) as (url, _):
        resp = RespClient.from_url(url.replace("redis://", "redis://:bad@"))
        with pytest.raises(RespConnectionError, match="WRONGPASS"):
            await resp.execute("PING")
        await resp.aclose()
    closed = RespClient.from_url(url, timeout_s=0.5)  # the server is gone now
    with pytest.raises(RespConnectionError):
        await closed.execute("PING")
    await closed.aclose()


async def test_closed_client_refuses_calls_and_urls_are_checked(client: RespClient) -> None:
    assert await client.execute("PING") == b"PONG"
    await client.aclose()
    with pytest.raises(RespConnectionError):
        await client.execute("PING")
    with pytest.raises(ValueError, match="scheme"):
        RespClient.from_url("unix:///tmp/redis.sock")
    tls = RespClient.from_url("rediss://cache.internal:6380/2")
    assert (tls.host, tls.port, tls.db) == ("cache.internal", 6380, 2)


def test_works_on_uvloop_as_the_gateway_runs_it(redis_url: str, redis_prefix: str) -> None:
    async def main() -> tuple[list[int], list[object]]:
        resp = RespClient.from_url(redis_url, timeout_s=2.0)
        key = f"{redis_prefix}resp:uvloop"
        try:
            counts = await asyncio.gather(*(resp.execute("INCR", key) for _ in range(50)))
            return list(counts), await resp.pipeline([("GET", key), ("DEL", key)])
        finally:
            await resp.aclose()

    counts, tail = uvloop.run(main())
    assert sorted(counts) == list(range(1, 51))
    assert tail == [b"50", 1]


async def test_a_deferred_command_leaves_with_the_next_one_or_after_its_delay(
    client: RespClient, key: str
) -> None:
    await client.execute("PING")
    started = time.monotonic()
    await client.execute("SET", key, 1, "PX", 60_000, defer_s=0.15)
    assert time.monotonic() - started >= 0.12  # nothing else was sent: it waited

    started = time.monotonic()
    deferred = asyncio.ensure_future(client.execute("INCR", key, defer_s=5.0))
    await asyncio.sleep(0.05)
    assert not deferred.done()
    # the next command carries it along, and Redis runs it first
    assert await client.execute("GET", key) == b"2"
    assert await deferred == 2
    assert time.monotonic() - started < 2.0
    await client.execute("DEL", key)


async def test_a_deferred_command_is_not_timed_out_while_it_waits(redis_url: str) -> None:
    resp = RespClient.from_url(redis_url, timeout_s=0.1)
    try:
        assert await resp.execute("PING", defer_s=0.3) == b"PONG"
    finally:
        await resp.aclose()


async def test_a_pipeline_cut_midway_raises_and_leaves_no_stray_futures(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = 0

    async def handler(command: list[bytes], writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        sent += 1
        if sent == 1:
            writer.write(b"+PONG\r\n")  # the first reply, then the connection dies
            await writer.drain()
        elif sent == 2:
            writer.close()

    made: list[asyncio.Future[object]] = []
    original = _Connection.send

    def recording_send(self: _Connection, *args: Any, **kwargs: Any) -> list[Any]:
        futures = original(self, *args, **kwargs)
        made.extend(futures)
        return futures

    monkeypatch.setattr(_Connection, "send", recording_send)
    async with scripted_server(handler) as (url, _):
        resp = RespClient.from_url(url, timeout_s=1.0)
        try:
            with pytest.raises(RespConnectionError):
                await resp.pipeline([("PING",), ("PING",), ("PING",)])
        finally:
            await resp.aclose()
    assert len(made) == 3 and all(f.done() for f in made)
    # Each failed future's exception was retrieved: none would be logged as lost at GC.
    assert not any(getattr(f, "_log_traceback", False) for f in made)


class _CountingTransport(asyncio.Transport):
    """Stands in for a connection's transport and records each ``write``."""

    def __init__(self, real: Any) -> None:
        super().__init__()
        self.real = real
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.real.write(data)

    def abort(self) -> None:
        self.real.abort()


async def test_urgent_commands_leave_at_once_at_low_concurrency_others_at_the_turn_end(
    client: RespClient, key: str
) -> None:
    await client.execute("PING")
    conn = client._conn
    assert conn is not None
    transport = _CountingTransport(conn._transport)
    conn._transport = transport

    def incr(**how: Any) -> asyncio.Future[Any]:
        return conn.send(hiredis.pack_command(("INCR", key)), **how)[0]

    # Not urgent: queued until the end of this loop iteration, then one write.
    futures = [incr(), incr()]
    assert transport.writes == []
    await asyncio.sleep(0)
    assert len(transport.writes) == 1 and transport.writes[0].count(b"INCR") == 2
    # Urgent with nothing outstanding: written before send() returns, with what was
    # queued (a deferred command rides along).
    futures.append(incr(defer_s=5.0))
    futures.append(incr(urgent=True))
    assert len(transport.writes) == 2 and transport.writes[1].count(b"INCR") == 2
    # From IMMEDIATE_BELOW outstanding replies on, urgent ones wait for the turn end too.
    assert IMMEDIATE_BELOW <= len(futures)
    futures.append(incr(urgent=True))
    futures.append(incr(urgent=True))
    assert len(transport.writes) == 2
    await asyncio.sleep(0)
    assert len(transport.writes) == 3 and transport.writes[2].count(b"INCR") == 2
    replies = [await f for f in futures]
    assert replies == list(range(1, len(replies) + 1))  # Redis ran them in order
    await client.execute("DEL", key)


async def test_a_script_is_loaded_when_the_server_lacks_it(client: RespClient, key: str) -> None:
    script = Script(f"-- {key}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
    assert await script(client, (key,), (5,)) == 5  # NOSCRIPT: loaded, run again
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    assert await script(client, (key,), (2,), urgent=True) == 7
    await client.execute("DEL", key)


async def test_a_script_error_is_raised_not_retried(client: RespClient, key: str) -> None:
    script = Script(f"-- {key}\nreturn redis.error_reply('WRONG ' .. ARGV[1])")
    with pytest.raises(RespError) as info:
        await script(client, (key,), ("x",))
    assert info.value.kind == "WRONG"


async def test_a_blocking_read_on_a_dedicated_client_outlives_the_timeout_and_stalls_nobody(
    redis_url: str, key: str
) -> None:
    shared = RespClient.from_url(redis_url, timeout_s=0.2, client_name=f"shared-{key[-8:]}")
    blocking = shared.dedicated()
    try:
        assert blocking.client_name == shared.client_name and blocking is not shared
        read = asyncio.ensure_future(
            blocking.execute("BLPOP", key, 0.5, wait_s=0.5)  # held longer than timeout_s
        )
        for _ in range(5):  # the shared connection answers meanwhile
            assert await shared.execute("PING") == b"PONG"
        assert await read is None  # BLPOP's timeout reply, not RespTimeout
        listing: bytes = await shared.execute("CLIENT", "LIST")
        assert listing.count(f"name={shared.client_name} ".encode()) == 2
    finally:
        await blocking.aclose()
        await shared.aclose()
