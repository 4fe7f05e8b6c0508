"""Batched appends to the usage buffer (what the usage journal ships each loop turn)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.buffer import BufferedIn, UsageBuffer
from billing.ledger import Ledger
from billing.spool import Spool
from billing.stream import FIELD, RedisStream
from billing.writer import LedgerWriter
from tests.billing.conftest import make_record
from tollway.resp import RespClient


@pytest.fixture(params=["resp", "redis-py"])
async def stream(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str
) -> AsyncIterator[RedisStream]:
    client = aioredis.Redis.from_url(redis_url)
    fast = RespClient.from_url(redis_url) if request.param == "resp" else None
    value = RedisStream(client, prefix=redis_prefix, fast=fast)
    yield value
    await value.close()
    await client.delete(value.key, value.dead_key)
    await client.aclose()
    if fast is not None:
        await fast.aclose()


async def test_a_batch_lands_in_the_stream_in_order(tmp_path: Path, stream: RedisStream) -> None:
    buffer = UsageBuffer(Spool(tmp_path / "spool"), stream)
    await buffer.open()
    payloads = [make_record(f"b{i}").to_bytes() for i in range(50)]
    assert await buffer.append_payloads(payloads) is BufferedIn.STREAM
    entries = await stream.client.xrange(stream.key)
    assert [fields[FIELD] for _, fields in entries] == payloads
    await buffer.close()


async def test_a_batch_goes_to_the_spool_when_redis_is_down(
    tmp_path: Path, sqlite_engine: AsyncEngine, redis_url: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = aioredis.Redis(
        host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    fast = RespClient("127.0.0.1", port, timeout_s=0.5)
    buffer = UsageBuffer(Spool(tmp_path / "spool"), RedisStream(dead, prefix="x:", fast=fast))
    await buffer.open()
    payloads = [make_record(f"s{i}").to_bytes() for i in range(30)]
    assert await buffer.append_payloads(payloads) is BufferedIn.SPOOL
    await buffer.close()
    await dead.aclose()
    await fast.aclose()
    ledger = Ledger(sqlite_engine)
    assert await LedgerWriter(ledger, spool=Spool(tmp_path / "spool")).run_once() == 30
    assert sorted(await ledger.request_ids()) == sorted(f"s{i}" for i in range(30))
