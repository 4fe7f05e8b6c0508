"""Catalog models through the gateway: listing, pricing, and fallbacks across kinds."""

from __future__ import annotations

from typing import Any

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]


def catalog_config(pool_worker: str, provider: str, **model: Any) -> dict[str, Any]:
    cfg = gateway_config([pool_worker])
    cfg["catalog"] = {
        "hosted": {
            "litellm_model": "openai/upstream-model",
            "api_base": f"{provider}/v1",
            "transport": "direct_openai",
            # 7 prompt + 3 completion tokens: 7 x 2.00/M + 3 x 4.00/M = 0.000026 USD.
            "price": {"input_per_million": "2.00", "output_per_million": "4.00"},
        }
    }
    cfg["models"] = {
        "m": {"route": "pool:p", "fallbacks": ["catalog:hosted"]},
        "hosted-model": {"route": "catalog:hosted", "fallbacks": ["pool:p"], **model},
    }
    return cfg


async def test_a_catalog_model_is_listed_served_and_priced() -> None:
    async with (
        serve_fake_worker() as pool,
        serve_fake_worker() as provider,
        running_gateway(catalog_config(pool.url, provider.url)) as (_, client),
    ):
        models = {m["id"]: m for m in (await client.get("/v1/models", headers=AUTH)).json()["data"]}
        assert models["hosted-model"]["owned_by"] == "openai"
        resp = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={"model": "hosted-model", "messages": MESSAGES},
        )
        assert resp.status_code == 200
        assert resp.headers["x-tollway-route"] == "catalog:hosted"
        assert resp.json()["model"] == "hosted-model"
        assert resp.headers["x-tollway-cost-usd"] == "0.000026"  # the provider's price
        assert provider.requests[-1]["model"] == "upstream-model"


async def test_a_dead_pool_falls_back_to_the_catalog() -> None:
    async with (
        serve_fake_worker() as provider,
        running_gateway(catalog_config(closed_port_url(), provider.url)) as (_, client),
    ):
        resp = await client.post(
            "/v1/chat/completions", headers=AUTH, json={"model": "m", "messages": MESSAGES}
        )
        assert resp.status_code == 200 and resp.headers["x-tollway-route"] == "catalog:hosted"


async def test_a_provider_at_its_rate_limit_falls_back_to_a_pool() -> None:
    async with (
        serve_fake_worker() as pool,
        serve_fake_worker(FakeWorker(mode="ratelimit")) as provider,
        running_gateway(catalog_config(pool.url, provider.url)) as (_, client),
    ):
        resp = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={"model": "hosted-model", "messages": MESSAGES, "stream": True},
        )
        assert resp.status_code == 200
        assert resp.headers["x-tollway-route"].startswith("pool:p/")
        assert b"[DONE]" in resp.content
