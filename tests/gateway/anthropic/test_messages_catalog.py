"""``/v1/messages`` on catalog models (the same chat translation, served through the
catalog's provider double), and a pool's fallback to the catalog."""

from __future__ import annotations

from typing import Any

import orjson
from anthropic.types import Message

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, running_gateway
from tests.gateway.test_catalog_routes import catalog_config

HEADERS = {"x-api-key": API_KEY}
ASK = [{"role": "user", "content": "hi"}]


async def test_a_catalog_model_answers_a_message_priced_by_its_provider() -> None:
    async with (
        serve_fake_worker() as pool,
        serve_fake_worker() as provider,
        running_gateway(catalog_config(pool.url, provider.url)) as (_, client),
    ):
        body: dict[str, Any] = {"model": "hosted-model", "max_tokens": 5, "messages": ASK}
        answer = await client.post("/v1/messages", headers=HEADERS, json=body)
        assert answer.status_code == 200, answer.text
        message = Message.model_validate(answer.json())
        assert message.model == "hosted-model" and message.content[0].type == "text"
        assert answer.headers["x-tollway-route"] == "catalog:hosted"
        assert answer.headers["x-tollway-cost-usd"] == "0.000026"
        assert provider.requests[-1]["messages"] == ASK
        streamed = await client.post("/v1/messages", headers=HEADERS, json={**body, "stream": True})
        kinds = [
            orjson.loads(b.split(b"\ndata: ", 1)[1])["type"]
            for b in streamed.content.split(b"\n\n")
            if b
        ]
        assert kinds[0] == "message_start" and kinds[-1] == "message_stop"


async def test_a_dead_pool_falls_back_to_the_catalog() -> None:
    async with (
        serve_fake_worker() as provider,
        running_gateway(catalog_config(closed_port_url(), provider.url)) as (_, client),
    ):
        answer = await client.post(
            "/v1/messages", headers=HEADERS, json={"model": "m", "max_tokens": 5, "messages": ASK}
        )
        assert answer.status_code == 200
        assert answer.headers["x-tollway-route"] == "catalog:hosted"
        Message.model_validate(answer.json())
