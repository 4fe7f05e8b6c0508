"""Upstream timeouts per model and per agent type, over the pool's own."""

from __future__ import annotations

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_model_and_agent_type_timeouts_override_the_pools() -> None:
    async with serve_fake_worker(FakeWorker(delay_s=0.6)) as slow:
        cfg = gateway_config([slow.url])  # the pool waits 5 s for a first byte
        cfg["pools"]["p"]["retry"] = {"max_attempts": 1}
        cfg["models"]["m"]["timeouts"] = {"first_byte_s": 0.2}
        cfg["agent_types"] = {"patient": {"model": "m", "timeouts": {"first_byte_s": 3}}}
        async with running_gateway(cfg) as (_, client):
            quick = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
            assert quick.status_code == 504
            assert quick.json()["error"]["code"] == "upstream_timeout"
            patient = await client.post(
                "/v1/chat/completions", headers={**AUTH, "x-agent-type": "patient"}, json=BODY
            )
            assert patient.status_code == 200
