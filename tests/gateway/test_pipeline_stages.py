"""Limits, budgets, idempotency and compression through the whole gateway."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import gateway_config, running_gateway
from tests.gateway.test_metering import PRICES, ledger_rows

ADMIN = {"authorization": "Bearer tw-admin-stages-0123456789"}
MESSAGES = [{"role": "user", "content": "hi"}]


def config(worker: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    book = tmp_path / "pricing.yaml"
    book.write_text(PRICES)
    cfg = gateway_config([worker], admin_token=ADMIN["authorization"][7:], pricing=str(book))
    cfg.update(extra)
    return cfg


def tool_loop(turns: int, words: int) -> list[dict[str, Any]]:
    """A task and ``turns`` tool calls, each answered with a long result."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "task"}]
    for i in range(turns):
        call = {"id": f"c{i}", "type": "function", "function": {"name": "read", "arguments": "{}"}}
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": f"output {i} " * words},
        ]
    return messages


async def tenant_key(client: httpx.AsyncClient, **key: Any) -> str:
    tenant = (await client.post("/admin/v1/tenants", headers=ADMIN, json={"name": "t"})).json()
    resp = await client.post(f"/admin/v1/tenants/{tenant['id']}/keys", headers=ADMIN, json=key)
    assert resp.status_code == 201, resp.text
    return str(resp.json()["key"])


async def chat(
    client: httpx.AsyncClient, key: str, body: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    return await client.post(
        "/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", **headers},
        json=body or {"model": "m", "messages": MESSAGES, "max_tokens": 10},
    )


@pytest.mark.parametrize("with_redis", [False, True])
async def test_rate_limits_answer_429_with_openai_headers(
    tmp_path: Path, with_redis: bool, request: pytest.FixtureRequest
) -> None:
    settings = {"redis_url": request.getfixturevalue("redis_url")} if with_redis else {}
    prefix = request.getfixturevalue("redis_prefix")
    async with (
        serve_fake_worker() as worker,
        running_gateway(config(worker.url, tmp_path, limits={"key_prefix": prefix}), settings) as (
            _,
            client,
        ),
    ):
        key = await tenant_key(client, limits={"rpm": 3})
        oks = [await chat(client, key) for _ in range(3)]
        assert all(r.status_code == 200 for r in oks)
        assert oks[0].headers["x-ratelimit-limit-requests"] == "3"
        assert oks[-1].headers["x-ratelimit-remaining-requests"] == "0"
        refused = await chat(client, key)
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["x-ratelimit-limit-requests"] == "3"
        assert len(worker.requests) == 3  # the refused one never reached the upstream


async def test_budget_exhausted_is_insufficient_quota(tmp_path: Path) -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(config(worker.url, tmp_path)) as (
            _,
            client,
        ),
    ):
        # Each request reserves at most 10 output + ~8 prompt tokens' worth: ~0.000128 USD.
        key = await tenant_key(client, budgets={"daily_usd": "0.0003"})
        statuses = [(await chat(client, key)).status_code for _ in range(5)]
        assert statuses[:2] == [200, 200] and statuses[-1] == 429
        last = await chat(client, key)
        assert last.json()["error"]["code"] == "insufficient_quota"


async def test_a_repeat_with_the_same_idempotency_key_is_replayed_and_billed_once(
    tmp_path: Path,
) -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(config(worker.url, tmp_path)) as (
            app,
            client,
        ),
    ):
        key = await tenant_key(client)
        first = await chat(client, key, **{"idempotency-key": "step-7"})
        again = await asyncio.gather(
            *(chat(client, key, **{"idempotency-key": "step-7"}) for _ in range(5))
        )
        assert all(r.content == first.content for r in again)
        assert all(r.headers.get("idempotent-replayed") == "true" for r in again)
        assert len(worker.requests) == 1
        other = await chat(
            client,
            key,
            {"model": "m", "messages": [{"role": "user", "content": "else"}]},
            **{"idempotency-key": "step-7"},
        )
        assert other.status_code == 422
        stream_body = {"model": "m", "messages": MESSAGES, "stream": True}
        s1 = await chat(client, key, stream_body, **{"idempotency-key": "stream-1"})
        s2 = await chat(client, key, stream_body, **{"idempotency-key": "stream-1"})
        assert s1.content == s2.content and b"[DONE]" in s2.content
        rows = await ledger_rows(app)
    assert len(rows) == 1 + 1 + 1  # first call, the 422 (rejected), the stream


async def test_compression_masks_old_tool_results_and_stays_valid(tmp_path: Path) -> None:
    cfg = config("http://127.0.0.1:9", tmp_path)
    cfg["compression"] = {"agentic": {"mask_tool_results_after": 1}}
    cfg["agent_types"] = {"worker": {"model": "m", "compression": "agentic"}}
    messages = [{"role": "system", "content": "sys"}, *tool_loop(3, 200)]
    async with serve_fake_worker() as worker:
        cfg["pools"]["p"]["workers"] = [worker.url]
        async with running_gateway(cfg) as (app, client):
            key = await tenant_key(client)
            resp = await chat(
                client, key, {"model": "m", "messages": messages}, **{"x-agent-type": "worker"}
            )
            assert resp.status_code == 200
            header = resp.headers["x-tollway-compression"]
            assert header.startswith("policy=agentic")
            sent = worker.requests[-1]["messages"]
            tools = [m["content"] for m in sent if m["role"] == "tool"]
            assert tools[-1] == messages[-1]["content"]  # the last one verbatim
            assert all("masked" in t for t in tools[:-1])
            rows = await ledger_rows(app)
    (row,) = rows.values()
    assert row["tokens_before_compression"] > row["tokens_after_compression"]
    assert orjson.loads(resp.content)["usage"]["prompt_tokens"] == 7


async def test_an_agent_types_limits_hold_per_tenant_and_spare_other_agent_types(
    tmp_path: Path,
) -> None:
    cfg = config("http://127.0.0.1:9", tmp_path)
    cfg["agent_types"] = {
        "worker": {"model": "m", "limits": {"rpm": 2}},
        "coordinator": {"model": "m"},
    }
    async with serve_fake_worker() as worker:
        cfg["pools"]["p"]["workers"] = [worker.url]
        async with running_gateway(cfg) as (_, client):
            key = await tenant_key(client)
            as_worker = [
                (await chat(client, key, **{"x-agent-type": "worker"})).status_code
                for _ in range(4)
            ]
            assert as_worker == [200, 200, 429, 429]
            coordinator = await chat(client, key, **{"x-agent-type": "coordinator"})
            assert coordinator.status_code == 200  # another agent type is not starved
            other = await tenant_key(client)  # another tenant has its own allowance
            assert (await chat(client, other, **{"x-agent-type": "worker"})).status_code == 200


async def test_a_key_can_override_its_agent_types_compression(tmp_path: Path) -> None:
    cfg = config("http://127.0.0.1:9", tmp_path)
    cfg["compression"] = {"agentic": {"mask_tool_results_after": 1}}
    cfg["agent_types"] = {"worker": {"model": "m"}}  # no compression of its own
    messages = tool_loop(3, 100)
    async with serve_fake_worker() as worker:
        cfg["pools"]["p"]["workers"] = [worker.url]
        async with running_gateway(cfg) as (_, client):
            tenant = (
                await client.post("/admin/v1/tenants", headers=ADMIN, json={"name": "t"})
            ).json()
            bad = await client.post(
                f"/admin/v1/tenants/{tenant['id']}/keys",
                headers=ADMIN,
                json={"compression": "nope"},
            )
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "compression"
            key = await tenant_key(client, compression="agentic")
            resp = await chat(
                client, key, {"model": "m", "messages": messages}, **{"x-agent-type": "worker"}
            )
            assert resp.headers["x-tollway-compression"].startswith("policy=agentic")
            plain = await tenant_key(client)
            resp = await chat(
                client, plain, {"model": "m", "messages": messages}, **{"x-agent-type": "worker"}
            )
            assert "x-tollway-compression" not in resp.headers
