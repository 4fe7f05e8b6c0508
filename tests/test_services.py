"""The backing services the suite relies on are reachable (fails in CI when they are not)."""

from __future__ import annotations

import asyncpg
import redis.asyncio as redis


async def test_redis_answers(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        await client.set(redis_prefix + "k", "v", ex=5)
        assert await client.get(redis_prefix + "k") == b"v"
    finally:
        await client.aclose()


async def test_postgres_schema_is_isolated(postgres_schema: tuple[str, str]) -> None:
    url, schema = postgres_schema
    conn = await asyncpg.connect(
        url.replace("postgresql+asyncpg://", "postgresql://"),
        server_settings={"search_path": schema},
    )
    try:
        await conn.execute("CREATE TABLE probe (id int primary key)")
        await conn.execute("INSERT INTO probe VALUES (1)")
        assert await conn.fetchval("SELECT count(*) FROM probe") == 1
    finally:
        await conn.close()
