"""Batched appends to the usage buffer (what the usage journal ships each loop turn)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.buffer import BufferedIn, UsageBuffer
from billing.ledger import Ledger
from billing.spool import Spool
from billing.stream import FIELD, RedisStream
from billing.writer import LedgerWriter
from tests.billing.conftest import make_record
from tollway.resp import RespClient


@pytest.fixture
async def inspector(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's own, to look at what the product wrote."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def stream(
    redis_url: str, redis_prefix: str, inspector: aioredis.Redis
) -> AsyncIterator[RedisStream]:
    client = RespClient.from_url(redis_url, timeout_s=2.0)
    value = RedisStream(client, prefix=redis_prefix)
    yield value
    await value.close()
    await client.aclose()
    await inspector.delete(value.key, value.dead_key)


async def test_a_batch_lands_in_the_stream_in_order(
    tmp_path: Path, stream: RedisStream, inspector: aioredis.Redis
) -> None:
    buffer = UsageBuffer(Spool(tmp_path / "spool"), stream)
    await buffer.open()
    payloads = [make_record(f"b{i}").to_bytes() for i in range(50)]
    assert await buffer.append_payloads(payloads) is BufferedIn.STREAM
    entries = await inspector.xrange(stream.key)
    assert [fields[FIELD] for _, fields in entries] == payloads
    await buffer.close()


async def test_a_batch_goes_to_the_spool_when_redis_is_down(
    tmp_path: Path, sqlite_engine: AsyncEngine, redis_url: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = RespClient("127.0.0.1", port, timeout_s=0.5)
    buffer = UsageBuffer(Spool(tmp_path / "spool"), RedisStream(dead, prefix="x:"))
    await buffer.open()
    payloads = [make_record(f"s{i}").to_bytes() for i in range(30)]
    assert await buffer.append_payloads(payloads) is BufferedIn.SPOOL
    await buffer.close()
    await dead.aclose()
    ledger = Ledger(sqlite_engine)
    assert await LedgerWriter(ledger, spool=Spool(tmp_path / "spool")).run_once() == 30
    assert sorted(await ledger.request_ids()) == sorted(f"s{i}" for i in range(30))
