"""A model that is not a public model: 404 model_not_found unless a profile opts in."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import running_gateway
from tests.gateway.test_agents import MSG, agent_config, post


@pytest.mark.parametrize("default_from", ["routing", "unknown-agent-type-default"])
async def test_a_typo_is_404_even_with_a_default_agent_type(default_from: str) -> None:
    async with serve_fake_worker() as small, serve_fake_worker() as large:
        routing: dict[str, Any] = {"default_agent_type": "worker"}
        if default_from == "unknown-agent-type-default":
            routing["unknown_agent_type"] = "default"
        async with running_gateway(agent_config([small.url], [large.url], **routing)) as (
            _,
            client,
        ):
            resp = await post(client, {"model": "no-such-model", "messages": MSG})
            assert resp.status_code == 404
            error = resp.json()["error"]
            assert error["code"] == "model_not_found" and error["param"] == "model"
            assert error["type"] == "invalid_request_error" and "no-such-model" in error["message"]
            # A known model is still served, as the default agent type.
            resp = await post(client, {"model": "agent-small", "messages": MSG})
            assert resp.status_code == 200 and resp.headers["x-tollway-agent-type"] == "worker"
        assert large.requests == [] and len(small.requests) == 1


async def test_a_profile_that_opts_in_serves_unknown_names_with_its_model() -> None:
    async with serve_fake_worker() as small, serve_fake_worker() as large:
        cfg = agent_config([small.url], [large.url], default_agent_type="worker")
        cfg["agent_types"]["worker"]["serve_unknown_models"] = True
        async with running_gateway(cfg) as (_, client):
            resp = await post(client, {"model": "gpt-4o", "messages": MSG})
            assert resp.status_code == 200
            assert resp.headers["x-tollway-route"].startswith("pool:large/")
            assert resp.headers["x-tollway-agent-type"] == "worker"
            # The opt-in is the default profile's: naming another type does not inherit it.
            resp = await post(
                client, {"model": "gpt-4o", "messages": MSG}, **{"x-agent-type": "coordinator"}
            )
            assert resp.status_code == 200  # a named agent type's profile decides the route
            assert resp.headers["x-tollway-route"].startswith("pool:small/")
        assert len(large.requests) == 1


async def test_without_any_agent_type_an_unknown_model_is_404() -> None:
    async with serve_fake_worker() as small, serve_fake_worker() as large:
        async with running_gateway(agent_config([small.url], [large.url])) as (_, client):
            resp = await post(client, {"model": "no-such-model", "messages": MSG})
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "model_not_found"
