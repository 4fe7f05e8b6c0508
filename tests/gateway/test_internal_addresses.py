"""Internal addresses stay internal: clients see a pool and a worker id (its place in
the configured list), never a worker's URL, in ``x-tollway-route`` or in errors."""

from __future__ import annotations

import pytest

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_the_route_header_names_the_worker_by_its_place() -> None:
    dead = closed_port_url()
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([dead, worker.url])) as (_, client),
    ):
        for stream in (False, True):
            resp = await client.post(
                "/v1/chat/completions", headers=AUTH, json={**BODY, "stream": stream}
            )
            assert resp.status_code == 200
            assert resp.headers["x-tollway-route"] == "pool:p/w1"
            assert worker.url not in resp.text


@pytest.mark.parametrize("mode", ["error500", "ratelimit", "timeout"])
async def test_upstream_errors_name_no_worker_url(mode: str) -> None:
    fake = FakeWorker(mode="ok" if mode == "timeout" else mode)
    if mode == "timeout":
        fake.delay_s = 3.0
    async with serve_fake_worker(fake) as worker:
        config = gateway_config([worker.url])
        pool = config["pools"]["p"]
        pool["timeouts"] = {"connect_s": 1, "first_byte_s": 0.3, "total_s": 0.5}
        async with running_gateway(config) as (_, client):
            resp = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
            assert resp.status_code >= 429, resp.text
            message = resp.json()["error"]["message"]
            # Which worker failed is in the gateway's log and the route header, not here.
            host = worker.url.removeprefix("http://")
            assert host not in resp.text and host.split(":")[1] not in message
