"""Agent types, sessions and cache-aware routing through the gateway."""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}


def agent_config(small: list[str], large: list[str], **routing: Any) -> dict[str, Any]:
    cfg = gateway_config(small)
    pool = cfg["pools"]["p"]
    cfg["pools"] = {
        "small": pool,
        "large": {**pool, "workers": large, "priority_scheduling": True},
    }
    cfg["models"] = {"agent-small": {"route": "pool:small"}, "agent-large": {"route": "pool:large"}}
    cfg["agent_types"] = {
        "coordinator": {"model": "agent-small", "priority": 10, "max_tokens": 100},
        "worker": {"model": "agent-large", "priority": 1, "default_max_tokens": 64},
    }
    if routing:
        cfg["routing"] = routing
    return cfg


async def post(client: httpx.AsyncClient, body: dict[str, Any], **headers: str) -> httpx.Response:
    return await client.post("/v1/chat/completions", headers={**AUTH, **headers}, json=body)


MSG = [{"role": "user", "content": "hi"}]


async def test_the_agent_type_decides_the_route() -> None:
    async with (
        serve_fake_worker() as small,
        serve_fake_worker() as large,
        running_gateway(agent_config([small.url], [large.url])) as (_, client),
    ):
        resp = await post(
            client, {"model": "agent-small", "messages": MSG}, **{"x-agent-type": "worker"}
        )
        assert resp.status_code == 200
        assert resp.headers["x-tollway-route"].startswith("pool:large/")
        assert resp.headers["x-tollway-agent-type"] == "worker"
        sent = large.requests[-1]
        assert sent["max_tokens"] == 64  # the profile's default
        assert sent["priority"] == 1  # passed to a pool with priority scheduling

        resp = await post(
            client,
            {
                "model": "x",
                "messages": MSG,
                "max_tokens": 5000,
                "metadata": {"agent_type": "coordinator", "session_id": "s1", "user": "u"},
            },
        )
        assert resp.headers["x-tollway-route"].startswith("pool:small/")
        sent = small.requests[-1]
        assert sent["max_tokens"] == 100  # clamped to the profile's maximum
        assert sent["metadata"] == {"user": "u"}  # Tollway's keys never reach the upstream
        assert "priority" not in sent  # this pool does not schedule by priority

        resp = await post(client, {"model": "coordinator", "messages": MSG})  # an alias
        assert resp.headers["x-tollway-agent-type"] == "coordinator"
        resp = await post(client, {"model": "agent-large", "messages": MSG})  # no agent type
        assert resp.headers["x-tollway-route"].startswith("pool:large/")
        assert "x-tollway-agent-type" not in resp.headers


async def test_unknown_agent_type_is_400_naming_it_or_the_default() -> None:
    async with (
        serve_fake_worker() as w,
        running_gateway(agent_config([w.url], [w.url])) as (
            _,
            client,
        ),
    ):
        resp = await post(
            client, {"model": "agent-small", "messages": MSG}, **{"x-agent-type": "ghost"}
        )
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert err["code"] == "unknown_agent_type" and "ghost" in err["message"]
    async with (
        serve_fake_worker() as w,
        running_gateway(
            agent_config(
                [w.url], [w.url], default_agent_type="worker", unknown_agent_type="default"
            )
        ) as (_, client),
    ):
        resp = await post(
            client, {"model": "agent-small", "messages": MSG}, **{"x-agent-type": "ghost"}
        )
        assert resp.status_code == 200 and resp.headers["x-tollway-agent-type"] == "worker"
        resp = await post(client, {"model": "no-such-model", "messages": MSG})
        assert resp.status_code == 404  # see test_unknown_models.py


@pytest.mark.parametrize("bad", [{"agent_type": 5}, {"session_id": ""}])
async def test_bad_metadata_is_400(bad: dict[str, Any]) -> None:
    async with running_gateway(agent_config(["http://127.0.0.1:9"], ["http://127.0.0.1:9"])) as (
        _,
        client,
    ):
        resp = await post(client, {"model": "agent-small", "messages": MSG, "metadata": bad})
        assert resp.status_code == 400 and resp.json()["error"]["param"].startswith("metadata.")


async def test_a_session_stays_on_one_worker_across_three_replicas() -> None:
    async with AsyncExitStack() as stack:
        ws = [await stack.enter_async_context(serve_fake_worker(FakeWorker())) for _ in range(4)]
        urls = [w.url for w in ws]
        clients = [
            (await stack.enter_async_context(running_gateway(gateway_config(urls))))[1]
            for _ in range(3)
        ]
        for session in ("alpha", "beta", "gamma", "delta"):
            routes = set()
            messages: list[dict[str, Any]] = [{"role": "user", "content": f"task {session}"}]
            for turn in range(6):
                client = clients[turn % 3]  # a round-robin load balancer in front
                resp = await post(
                    client, {"model": "m", "messages": messages}, **{"x-session-id": session}
                )
                routes.add(resp.headers["x-tollway-route"])
                messages += [
                    {"role": "assistant", "content": "ok"},
                    {"role": "user", "content": "more"},
                ]
            assert len(routes) == 1, (session, routes)
        # Without a session id, the conversation's leading messages are the key.
        routes = set()
        for turn in range(6):
            body = {
                "model": "m",
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": "same task"},
                    {"role": "assistant", "content": "x" * turn},
                ],
            }
            routes.add((await post(clients[turn % 3], body)).headers["x-tollway-route"])
        assert len(routes) == 1
