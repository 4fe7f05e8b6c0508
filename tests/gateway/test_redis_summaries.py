"""The Redis summary store (injected into the compression policies) against a real Redis."""

from __future__ import annotations

import redis.asyncio as aioredis

from gateway.redis_summaries import RedisSummaryStore
from gateway.sharedstate import connect_redis
from policies.summary import RollingSummary
from tests.policies.conftest import run_steps
from tests.policies.test_summary import FakeSummarizer, conversation


async def test_round_trip_ttl_and_prefix(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)  # to look at what the store wrote
    shared = connect_redis(redis_url, timeout_s=2.0)
    try:
        store = RedisSummaryStore(shared, prefix=redis_prefix)
        key = "summary:{abc}:p:0123"
        assert await store.get(key) is None
        await store.set(key, "résumé", ttl_seconds=60)
        assert await store.get(key) == "résumé"
        assert await client.exists(redis_prefix + key) == 1
        assert 0 < await client.ttl(redis_prefix + key) <= 60
    finally:
        await shared.aclose()
        await client.aclose()


async def test_summary_reused_across_policy_instances(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)  # to look at what the store wrote
    shared = connect_redis(redis_url, timeout_s=2.0)
    try:
        summarizer = FakeSummarizer()
        options = {"trigger_tokens": 1000, "keep_recent_tokens": 400, "chunk_tokens": 500}
        messages = conversation(8)
        outputs = []
        for _ in range(2):  # two replicas, one Redis
            store = RedisSummaryStore(shared, prefix=redis_prefix)
            rolling = RollingSummary(summarizer=summarizer, store=store, namespace="a", **options)  # type: ignore[arg-type]
            outputs.append((await run_steps(messages, rolling, scope="tenant:session")).messages)
        assert len(summarizer.calls) == 1
        assert outputs[0] == outputs[1]
        keys = [key async for key in client.scan_iter(match=redis_prefix + "*")]
        assert len(keys) == 1 and b"{" in keys[0]
    finally:
        await shared.aclose()
        await client.aclose()


async def test_unreachable_redis_leaves_the_conversation(redis_prefix: str) -> None:
    client = connect_redis("redis://127.0.0.1:1/0", timeout_s=0.2)
    try:
        store = RedisSummaryStore(client, prefix=redis_prefix)
        rolling = RollingSummary(
            summarizer=FakeSummarizer(),
            store=store,
            namespace="a",
            trigger_tokens=1000,
            keep_recent_tokens=400,
            chunk_tokens=500,
        )
        messages = conversation(8)
        result = await run_steps(messages, rolling)
        assert result.messages is messages
        assert "ServiceUnavailable" in result.steps[0].note
    finally:
        await client.aclose()
