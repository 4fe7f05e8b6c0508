"""Injected faults: errors, cut streams, hangs, death, runtime control."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from simulator.config import FaultConfig
from tests.simulator.conftest import ClientFactory
from tests.simulator.sse_parse import sse_payloads

MESSAGES = [{"role": "user", "content": "hello"}]


async def test_error_rate_one_answers_500_in_sglang_shape(make_client: ClientFactory) -> None:
    async with make_client(faults=FaultConfig(error_rate=1.0)) as client:
        r = await client.post("/v1/chat/completions", json={"messages": MESSAGES})
        assert r.status_code == 500
        body = r.json()
        assert body["object"] == "error" and body["code"] == 500
        assert body["type"] == "InternalServerError"
        assert (await client.get("/health")).status_code == 200


async def test_cut_stream_ends_without_done(make_client: ClientFactory) -> None:
    faults = FaultConfig(cut_stream_after=3)
    async with make_client(faults=faults, raise_app_exceptions=False) as client:
        body = {"messages": MESSAGES, "stream": True}
        r = await client.post("/v1/chat/completions", json=body)
        events, done = sse_payloads(r.text)
        assert len(events) == 3 and not done
        # The worker itself is fine afterwards (only that stream was cut).
        assert (await client.get("/metrics")).status_code == 200


async def test_runtime_fault_endpoint(client: httpx.AsyncClient) -> None:
    r = await client.post("/_emulator/faults", json={"error_rate": 1.0, "seed": 3})
    assert r.json()["error_rate"] == 1.0
    assert (await client.post("/generate", json={"text": "x"})).status_code == 500
    await client.post("/_emulator/faults", json={"error_rate": 0.0})
    assert (await client.post("/generate", json={"text": "x"})).status_code == 200
    bad = await client.post("/_emulator/faults", json={"nonsense": 1})
    assert bad.status_code == 400
    assert (await client.post("/_emulator/faults", json={"error_rate": 2})).status_code == 400


async def test_hang_never_answers(make_client: ClientFactory) -> None:
    async with make_client(faults=FaultConfig(hang=True)) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                client.post("/v1/chat/completions", json={"messages": MESSAGES}), 0.05
            )


async def test_die_after_stops_answering_in_process(make_client: ClientFactory) -> None:
    async with make_client(faults=FaultConfig(die_after=2)) as client:
        for _ in range(2):
            r = await client.post("/v1/chat/completions", json={"messages": MESSAGES})
            assert r.status_code == 200
        faults = (await client.get("/_emulator/faults")).json()
        assert faults["dead"] is True and faults["answered"] == 2
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get("/health"), 0.05)


async def test_added_latency(make_client: ClientFactory) -> None:
    async with make_client(faults=FaultConfig(added_latency_ms=30)) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        await client.post("/generate", json={"text": "x"})
        assert loop.time() - start >= 0.03
