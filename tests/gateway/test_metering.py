"""Metering: every request is priced, shown its cost, and lands in the ledger once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from billing.tables import usage_ledger
from gateway.outcome import RequestRecord
from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}
MESSAGES = [{"role": "user", "content": "hi"}]
PRICES = """
books:
  - name: test
    effective_from: 2020-01-01T00:00:00Z
    rates:
      - {id: default, input_per_million: "1.00", output_per_million: "2.00",
         per_request: "0.0001"}
"""
# The fake worker reports 7 prompt and 3 completion tokens:
# 7 x 1.00 / 1e6 + 3 x 2.00 / 1e6 + 0.0001 = 0.000113 USD = 113 micro-USD.
EXPECTED_MICROS = 113


def priced_config(tmp_path: Path, worker: str) -> dict[str, Any]:
    book = tmp_path / "pricing.yaml"
    book.write_text(PRICES)
    cfg = gateway_config([worker], pricing=str(book))
    cfg["pools"]["p"]["gpu_hour_usd"] = "3.60"
    return cfg


async def ledger_rows(app: FastAPI) -> dict[str, Any]:
    metering = app.state.metering
    if metering.journal is not None:
        await metering.journal.flush()
    await metering.buffer.drain_submitted()
    assert metering.writer is not None
    await metering.writer.run_once()
    async with app.state.store.engine.connect() as conn:
        rows = (await conn.execute(select(usage_ledger))).all()
    return {r.request_id: r._mapping for r in rows}


@pytest.mark.parametrize("journal", [False, True], ids=["buffer", "journal"])
async def test_cost_in_the_response_and_one_ledger_record_per_request(
    tmp_path: Path, journal: bool
) -> None:
    async with serve_fake_worker() as worker:
        config = priced_config(tmp_path, worker.url)
        config["metering"] = {"journal": journal}
        async with running_gateway(config) as (app, client):
            await _one_of_each(app, client, worker)


async def _one_of_each(app: FastAPI, client: httpx.AsyncClient, worker: FakeWorker) -> None:
    """A request of every kind; each lands in the ledger once, priced."""
    resp = await client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": "m", "messages": MESSAGES}
    )
    assert resp.headers["x-tollway-cost-usd"] == "0.000113"
    assert resp.json()["usage"]["cost"] == pytest.approx(0.000113)
    plain_id = resp.headers["x-request-id"]

    resp = await client.post(
        "/v1/chat/completions",
        headers=AUTH,
        json={
            "model": "m",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = [e for e in resp.content.split(b"\n\n") if e and e != b"data: [DONE]"]
    assert orjson.loads(events[-1][6:])["usage"]["cost"] == pytest.approx(0.000113)
    stream_id = resp.headers["x-request-id"]

    resp = await client.post(
        "/v1/chat/completions",
        headers=AUTH,
        json={"model": "m", "messages": MESSAGES, "stream": True},
    )
    quiet_id = resp.headers["x-request-id"]
    assert b'"cost"' not in resp.content  # no usage chunk asked for, none sent

    worker.mode = "error500"
    resp = await client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": "m", "messages": MESSAGES}
    )
    assert resp.status_code == 502
    error_id = resp.headers["x-request-id"]

    worker.mode = "ok"
    resp = await client.post(
        "/v1/chat/completions", headers=AUTH, json={"model": "nope", "messages": MESSAGES}
    )
    rejected_id = resp.headers["x-request-id"]
    unauth = await client.post("/v1/chat/completions", json={"model": "m"})
    assert unauth.status_code == 401

    rows = await ledger_rows(app)
    assert set(rows) == {plain_id, stream_id, quiet_id, error_id, rejected_id}
    for rid in (plain_id, stream_id, quiet_id):
        row = rows[rid]
        assert row["cost_micros"] == EXPECTED_MICROS, rid
        assert (row["status"], row["usage_source"]) == ("ok", "upstream")
        assert (row["prompt_tokens"], row["completion_tokens"]) == (7, 3)
        assert row["pool"] == "p" and row["worker"] == worker.url
        assert row["rate_id"] == "test/default" and row["tenant_id"] == "t1"
        assert row["gpu_seconds"] >= 0
    assert rows[error_id]["status"] == "upstream_error" and rows[error_id]["cost_micros"] == 0
    assert rows[rejected_id]["status"] == "rejected" and rows[rejected_id]["cost_micros"] == 0


async def test_an_upstream_without_usage_is_estimated(tmp_path: Path) -> None:
    class NoUsage(FakeWorker):
        async def chat(self, request):  # type: ignore[no-untyped-def]
            resp = await super().chat(request)
            if resp.content_type == "application/json":
                data = orjson.loads(resp.body)  # type: ignore[attr-defined]
                data.pop("usage", None)
                resp.body = orjson.dumps(data)  # type: ignore[attr-defined]
            return resp

    async with (
        serve_fake_worker(NoUsage()) as worker,
        running_gateway(priced_config(tmp_path, worker.url)) as (app, client),
    ):
        resp = await client.post(
            "/v1/chat/completions", headers=AUTH, json={"model": "m", "messages": MESSAGES}
        )
        assert resp.status_code == 200
        rows = await ledger_rows(app)
    (row,) = rows.values()
    assert row["usage_source"] == "estimated" and row["prompt_tokens"] > 0


async def test_usage_api_for_admins_and_tenants(tmp_path: Path) -> None:
    cfg = priced_config(tmp_path, "http://127.0.0.1:9")
    cfg["admin_token"] = "tw-admin-usage-0123456789"
    async with serve_fake_worker() as worker:
        cfg["pools"]["p"]["workers"] = [worker.url]
        async with running_gateway(cfg) as (app, client):
            for _ in range(3):
                await client.post(
                    "/v1/chat/completions", headers=AUTH, json={"model": "m", "messages": MESSAGES}
                )
            await ledger_rows(app)
            admin = {"authorization": "Bearer tw-admin-usage-0123456789"}
            report = (await client.get("/admin/v1/usage?group_by=model", headers=admin)).json()
            assert report["object"] == "list"
            (row,) = report["data"]
            assert row["group"] == "m" and row["requests"] == 3
            assert row["prompt_tokens"] == 21 and row["cost_usd"] == "0.000339"
            mine = (await client.get("/v1/usage?group_by=tenant", headers=AUTH)).json()
            assert mine["data"][0]["requests"] == 3
            other = await client.get("/admin/v1/usage?tenant_id=someone-else", headers=admin)
            assert other.json()["data"] == []
            assert (await client.get("/admin/v1/usage", headers=AUTH)).status_code == 401
            bad = await client.get("/admin/v1/usage?group_by=week", headers=admin)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    prompt=st.integers(0, 2_000_000),
    output=st.integers(0, 200_000),
    tenant=st.sampled_from(["t1", "t2", None]),
    model=st.sampled_from(["m", "other", None]),
    route=st.sampled_from([None, "pool:p/http://w", "catalog:gpt-x"]),
)
def test_the_budget_reservation_prices_like_a_successful_request(
    priced_metering: Any,
    prompt: int,
    output: int,
    tenant: str | None,
    model: str | None,
    route: str | None,
) -> None:
    """``max_cost`` (the reservation, on the request path) equals quoting a copy of the
    record as a successful request with those tokens."""
    record = RequestRecord("r1", "chat", tenant_id=tenant, model=model, route=route)
    probe = dataclasses.replace(
        record, status="ok", usage={"prompt_tokens": prompt, "completion_tokens": output}
    )
    expected = priced_metering.quote(probe, 0.0).cost_micros
    assert priced_metering.max_cost(record, prompt, output) == expected


@pytest.fixture(scope="module")
def priced_metering(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A metering object with the test price book (and a catalog price for one model)."""
    tmp = tmp_path_factory.mktemp("max-cost")

    async def start() -> Any:
        async with running_gateway(priced_config(tmp, "http://127.0.0.1:9")) as (app, _):
            metering = app.state.metering
            assert metering.book is not None  # priced by the book, not all zeros
            metering.provider_cost = lambda route, usage: (
                7 * int(usage["prompt_tokens"]) if route == "catalog:gpt-x" and usage else None
            )
            return metering

    return asyncio.run(start())
