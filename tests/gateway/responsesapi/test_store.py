"""Stored responses in SQL with the Redis copy in front (real Redis, SQLite and
PostgreSQL): per tenant, expiring, deleted everywhere, and read from SQL when the
Redis copy is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.database import migrate
from gateway.responsesapi.config import ResponsesConfig
from gateway.responsesapi.conversations import ConversationStore
from gateway.responsesapi.items import input_items
from gateway.responsesapi.store import MemoryBackend, ResponseStore, SqlBackend, Stored
from gateway.sharedstate import connect_redis
from tollway.database import create_engine
from tollway.errors import NotFound
from tollway.resp import RespClient

RETENTION = 3600


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RespClient]:
    client = connect_redis(redis_url, timeout_s=2.0)
    yield client
    await client.aclose()


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await migrate(engine)
    yield engine
    await engine.dispose()


def _record(text: str) -> Stored:
    output = [{"id": "msg_1", "type": "message", "role": "assistant", "content": text}]
    return Stored({"id": "resp_x", "output": output}, [], output, "resp_x")


async def _put(store: ResponseStore, tenant: str, rid: str, text: str, at: float) -> None:
    data = store.encode(tenant, _record(text))
    assert data is not None
    await store.put(tenant, rid, data, at)


async def test_sql_with_a_redis_copy(
    engine: AsyncEngine, redis: RespClient, redis_prefix: str
) -> None:
    backend = SqlBackend(engine, RETENTION, redis, redis_prefix, redis_ttl_s=60)
    store = ResponseStore(backend, max_bytes=10_000)
    await _put(store, "t1", "resp_a", "hello", time.time())
    found = await store.get("t1", "resp_a")
    assert found is not None and found.history[0]["content"] == "hello"
    # Another tenant, or an id that is not a response id: not found.
    assert await store.get("t2", "resp_a") is None
    assert await store.get("t1", "resp_a:x") is None
    assert not await store.delete("t2", "resp_a")
    # The Redis copy expires (or Redis restarts): SQL answers, and the copy is back.
    key = backend._key("t1", "resp_a")
    assert 0 < await redis.execute("TTL", key) <= 60
    await redis.execute("DEL", key)
    assert (await store.get("t1", "resp_a")) is not None
    assert await redis.execute("EXISTS", key)
    # Deleting removes the row and the copy.
    assert await store.delete("t1", "resp_a")
    assert not await redis.execute("EXISTS", key)
    assert await store.get("t1", "resp_a") is None
    # Past its retention a record is gone, though its row has not been purged yet.
    await _put(store, "t1", "resp_old", "old", time.time() - RETENTION - 1)
    await redis.execute("DEL", backend._key("t1", "resp_old"))
    assert await store.get("t1", "resp_old") is None


async def test_without_redis_sql_serves_alone(engine: AsyncEngine) -> None:
    store = ResponseStore(SqlBackend(engine, RETENTION), max_bytes=10_000)
    await _put(store, "t1", "resp_a", "hello", time.time())
    assert (await store.get("t1", "resp_a")) is not None
    assert await store.delete("t1", "resp_a") and await store.get("t1", "resp_a") is None


async def test_postgres(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    engine = create_engine(url, schema=schema)
    try:
        await migrate(engine)
        store = ResponseStore(SqlBackend(engine, RETENTION), max_bytes=10_000)
        await _put(store, "t1", "resp_a", "hello", time.time())
        assert (await store.get("t1", "resp_a")) is not None
        assert await store.get("t2", "resp_a") is None
        assert await store.delete("t1", "resp_a")
    finally:
        await engine.dispose()


async def test_memory_expires_and_is_per_tenant() -> None:
    store = ResponseStore(MemoryBackend(RETENTION), max_bytes=10_000)
    await _put(store, "t1", "resp_a", "hello", time.time())
    await _put(store, "t1", "resp_old", "old", time.time() - RETENTION - 1)
    assert await store.get("t1", "resp_a") is not None and await store.get("t2", "resp_a") is None
    assert await store.get("t1", "resp_old") is None


def test_a_record_over_the_size_limit_is_not_encoded(engine: AsyncEngine) -> None:
    store = ResponseStore.build(ResponsesConfig(max_stored_bytes=1024), engine, None, "p:")
    assert store.encode("t1", _record("x" * 2000)) is None
    assert store.encode("t1", _record("x")) is not None


async def _concurrent_additions(engine: AsyncEngine) -> None:
    conversations = ConversationStore(
        ResponseStore(SqlBackend(engine, RETENTION), max_bytes=100_000)
    )
    conversation = await conversations.create("t1", {}, [])
    notes = [[{"role": "user", "content": f"note {i}"}] for i in range(12)]
    await asyncio.gather(
        *(conversations.change("t1", conversation["id"], add=input_items(note)) for note in notes)
    )
    _, items = await conversations.get("t1", conversation["id"])
    texts = sorted(item["content"][0]["text"] for item in items)
    assert texts == sorted(f"note {i}" for i in range(12))
    with pytest.raises(NotFound):
        await conversations.get("t2", conversation["id"])


async def test_concurrent_additions_to_a_conversation_are_all_kept_on_sqlite(
    engine: AsyncEngine,
) -> None:
    await _concurrent_additions(engine)


async def test_concurrent_additions_to_a_conversation_are_all_kept_on_postgres(
    postgres_schema: tuple[str, str],
) -> None:
    url, schema = postgres_schema
    engine = create_engine(url, schema=schema)
    try:
        await migrate(engine)
        await _concurrent_additions(engine)
    finally:
        await engine.dispose()
