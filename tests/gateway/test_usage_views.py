"""What a tenant sees of its usage, what the operator sees, and what counts as a request."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import API_KEY, running_gateway, sdk
from tests.gateway.test_metering import MESSAGES, ledger_rows, priced_config

ADMIN_TOKEN = "tw-admin-views-0123456789"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
TENANT = {"authorization": f"Bearer {API_KEY}"}
OPERATOR_ONLY = ("internal_cost_usd", "margin_usd", "gpu_seconds", "failed")
SERVED, REFUSED = 12, 7


def limited_config(tmp_path: Path, worker: str) -> dict[str, Any]:
    """The test price book, a priced pool, and an agent type allowed 12 requests a minute."""
    config = priced_config(tmp_path, worker)
    config["admin_token"] = ADMIN_TOKEN
    config["agent_types"] = {"coordinator": {"model": "m", "limits": {"rpm": SERVED}}}
    return config


def names_in(value: Any) -> set[str]:
    """Every key of every object nested in ``value``."""
    if isinstance(value, dict):
        return set(value).union(*(names_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(names_in(v) for v in value))
    return set()


async def test_rate_limited_requests_are_not_billable_requests(tmp_path: Path) -> None:
    """12 served and 7 rate-limited requests: 12 requests and 7 rejected, for the
    tenant and the operator alike (the ledger holds all 19)."""
    async with (
        serve_fake_worker() as worker,
        running_gateway(limited_config(tmp_path, worker.url)) as (app, client),
    ):
        api = sdk(client)
        statuses = []
        for _ in range(SERVED + REFUSED):
            try:
                await api.chat.completions.create(
                    model="m", messages=MESSAGES, extra_headers={"x-agent-type": "coordinator"}
                )
                statuses.append(200)
            except openai.RateLimitError:
                statuses.append(429)
        assert statuses.count(200) == SERVED and statuses.count(429) == REFUSED
        rows = await ledger_rows(app)
        assert len(rows) == SERVED + REFUSED

        (mine,) = (await client.get("/v1/usage", headers=TENANT)).json()["data"]
        assert mine["requests"] == SERVED  # was 19: refused requests counted as requests
        assert mine["rejected"] == REFUSED
        assert mine["prompt_tokens"] == 7 * SERVED and mine["completion_tokens"] == 3 * SERVED
        (theirs,) = (await client.get("/admin/v1/usage", headers=ADMIN)).json()["data"]
        assert (theirs["requests"], theirs["rejected"], theirs["failed"]) == (SERVED, REFUSED, 0)
        assert theirs["cost_usd"] == mine["cost_usd"] == f"{0.000113 * SERVED:.6f}"


async def test_a_tenant_never_sees_the_operators_numbers(tmp_path: Path) -> None:
    """Tenant views (``/v1/usage`` in every grouping, inference responses and their
    headers) carry no internal cost, margin, GPU time or worker address; the admin's
    usage view does carry the operator's numbers."""
    async with (
        serve_fake_worker() as worker,
        running_gateway(limited_config(tmp_path, worker.url)) as (app, client),
    ):
        api = sdk(client)
        raw = await api.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        completion = raw.parse()
        stream = await api.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        await ledger_rows(app)

        seen = names_in(completion.model_dump()) | set().union(
            *(names_in(chunk.model_dump()) for chunk in chunks)
        )
        assert not seen & {"internal_cost_usd", "margin_usd", "gpu_seconds", "internal_cost"}
        for name, value in raw.headers.items():
            assert "internal" not in name and "margin" not in name and "gpu" not in name
            if name != "x-tollway-route":  # its worker naming is the pool's (issue 17)
                assert worker.url not in value, (name, value)
        assert raw.headers["x-tollway-cost-usd"] == "0.000113"  # the tenant's own cost

        for group_by in ("day", "hour", "model", "agent_type", "pool", "key", "tenant"):
            resp = await client.get(f"/v1/usage?group_by={group_by}", headers=TENANT)
            assert resp.status_code == 200
            assert worker.url not in resp.text
            for row in resp.json()["data"]:
                assert not set(row) & set(OPERATOR_ONLY), (group_by, row)
                assert set(row) == {
                    "group", "requests", "rejected", "prompt_tokens", "cached_tokens",
                    "completion_tokens", "cost_usd",
                }  # fmt: skip
        (row,) = (await client.get("/admin/v1/usage", headers=ADMIN)).json()["data"]
        assert set(OPERATOR_ONLY) <= set(row)
        assert row["gpu_seconds"] > 0 and row["internal_cost_usd"] != "0.000000"
        assert row["requests"] == 2


@pytest.mark.parametrize("path", ["/v1/usage", "/admin/v1/usage"])
async def test_usage_needs_credentials(tmp_path: Path, path: str) -> None:
    async with running_gateway(limited_config(tmp_path, "http://127.0.0.1:9")) as (_, client):
        assert (await client.get(path)).status_code == 401
