"""Fallbacks between routes, before any byte reached the client."""

from __future__ import annotations

from typing import Any

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def two_pools(primary: list[str], backup: list[str], **model: Any) -> dict[str, Any]:
    cfg = gateway_config(primary)
    cfg["pools"]["backup"] = {**cfg["pools"]["p"], "workers": backup}
    cfg["models"] = {"m": {"route": "pool:p", "fallbacks": ["pool:backup"], **model}}
    return cfg


async def test_a_dead_pool_falls_back_and_the_route_shows_it() -> None:
    async with (
        serve_fake_worker() as backup,
        running_gateway(two_pools([closed_port_url()], [backup.url])) as (_, client),
    ):
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
        assert resp.status_code == 200
        assert resp.headers["x-tollway-route"] == "pool:backup/w0"
        assert resp.json()["model"] == "m"
        streamed = await client.post(
            "/v1/chat/completions", headers=AUTH, json={**BODY, "stream": True}
        )
        assert b"[DONE]" in streamed.content


async def test_a_failing_pool_falls_back_but_a_client_error_does_not() -> None:
    async with serve_fake_worker(FakeWorker(mode="error500")) as bad, serve_fake_worker() as good:
        async with running_gateway(two_pools([bad.url], [good.url])) as (_, client):
            resp = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
            assert resp.status_code == 200 and len(good.requests) == 1
            bad.mode = "reject400"  # the client's own mistake: the same elsewhere
            resp = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
            assert resp.status_code == 400 and len(good.requests) == 1


async def test_agent_type_fallbacks_apply() -> None:
    async with serve_fake_worker() as backup:
        cfg = two_pools([closed_port_url()], [backup.url])
        cfg["models"]["m"]["fallbacks"] = []
        cfg["agent_types"] = {"worker": {"model": "m", "fallbacks": ["pool:backup"]}}
        async with running_gateway(cfg) as (_, client):
            plain = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
            assert plain.status_code == 503
            resp = await client.post(
                "/v1/chat/completions", headers={**AUTH, "x-agent-type": "worker"}, json=BODY
            )
            assert resp.status_code == 200
            assert resp.headers["x-tollway-route"].startswith("pool:backup/")


async def test_a_pool_at_its_request_rate_queues_briefly_then_falls_back() -> None:
    async with serve_fake_worker() as main, serve_fake_worker() as backup:
        cfg = two_pools([main.url], [backup.url])
        cfg["pools"]["p"]["max_requests_per_s"] = 1
        cfg["pools"]["p"]["max_wait_s"] = 0
        async with running_gateway(cfg) as (_, client):
            routes = [
                (await client.post("/v1/chat/completions", headers=AUTH, json=BODY)).headers[
                    "x-tollway-route"
                ]
                for _ in range(3)
            ]
    assert routes[0].startswith("pool:p/")
    assert all(r.startswith("pool:backup/") for r in routes[1:])
