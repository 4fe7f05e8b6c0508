"""Idempotency's Redis keys carry ``limits.key_prefix`` unless given their own."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway.config import parse_config
from gateway.idempotency import IdempotencyConfig
from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway


def test_the_prefix_follows_limits_unless_set() -> None:
    base = gateway_config(["http://127.0.0.1:9"])
    shared = parse_config({**base, "limits": {"key_prefix": "blue:"}})
    assert shared.idempotency.key_prefix == "blue:" and shared.idempotency.prefix == "blue:"
    own = parse_config(
        {**base, "limits": {"key_prefix": "blue:"}, "idempotency": {"key_prefix": "tollway:"}}
    )
    assert own.idempotency.prefix == "tollway:"  # the old default, kept on purpose
    assert parse_config(base).idempotency.prefix == "tollway:"  # the default of both
    assert IdempotencyConfig().prefix == "tollway:"


async def test_a_claimed_key_lives_under_the_limits_prefix(
    redis_url: str, redis_prefix: str
) -> None:
    client = Redis.from_url(redis_url)
    try:
        async with serve_fake_worker() as worker:
            config = gateway_config([worker.url], limits={"key_prefix": redis_prefix})
            async with running_gateway(config, {"redis_url": redis_url}) as (_, http):
                resp = await http.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {API_KEY}", "idempotency-key": "k-1"},
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert resp.status_code == 200
        ours = [k async for k in client.scan_iter(match=f"{redis_prefix}*:i:*")]
        assert len(ours) == 1
    finally:
        await client.delete(*[k async for k in client.scan_iter(match=f"{redis_prefix}*")])
        await client.aclose()
