"""Faulty SGLang workers under load: killed, hanging, answering 500s, cutting streams.

One gateway process (embedded SQLite ledger) in front of emulated workers: a
healthy one shared by every pool, and per fault a pool that pairs it with a
faulty one. Each test sends a bounded load from several concurrent openai SDK
clients and checks that no request hangs past its timeouts and that every
response a client saw complete is in the ledger exactly once.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.processes import (
    emulator,
    metric_samples,
    pool,
    start_gateway,
    stop,
    write_config,
)
from tests.faults.support import (
    BODY,
    LoadResult,
    lost_and_doubled,
    record,
    run_load,
    sqlite_ledger,
    summary,
)
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

REQUESTS = 60
CLIENTS = 4
FIRST_BYTE_S = 1.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("workers")
    with (
        emulator("--instant") as (healthy, _),
        emulator("--instant", "--added-latency-ms", "20") as (victim, victim_proc),
        emulator("--instant") as (hanging, hanging_proc),
        emulator("--instant", "--error-rate", "0.5") as (failing, _),
        emulator("--instant", "--cut-stream-after", "2") as (cutting, _),
    ):
        hang_pool = pool([healthy, hanging])
        hang_pool["timeouts"] = {"connect_s": 1, "first_byte_s": FIRST_BYTE_S, "total_s": 10}
        config = write_config(
            tmp,
            pools={
                "kill": pool([healthy, victim]),
                "hang": hang_pool,
                "err": pool([healthy, failing]),
                "cut": pool([healthy, cutting]),
            },
            models={name: {"route": f"pool:{name}"} for name in ("kill", "hang", "err", "cut")},
        )
        data = tmp / "data"
        url, proc = start_gateway(config, {"TOLLWAY_DATA_DIR": str(data)})
        try:
            yield {
                "url": url,
                "ledger": sqlite_ledger(data),
                "victim": victim_proc,
                "hanging": hanging,
                "hanging_proc": hanging_proc,
            }
        finally:
            stop(proc)


def _check(stack: dict[str, Any], fault: str, load: LoadResult, **extra: Any) -> None:
    lost, doubled = asyncio.run(lost_and_doubled(stack["ledger"], load.completed))
    record(fault, load, lost, doubled, **extra)
    assert load.sent == REQUESTS, summary(load)
    assert (lost, doubled) == (0, 0), summary(load)


def test_a_worker_killed_under_load(stack: dict[str, Any]) -> None:
    async def scenario() -> LoadResult:
        task = asyncio.create_task(
            run_load(
                stack["url"], requests=REQUESTS, clients=CLIENTS, body={**BODY, "model": "kill"}
            )
        )
        # Kill it once the load is under way: requests done and some in flight.
        await asyncio.to_thread(
            until_sync,
            lambda: (
                sum(metric_samples(stack["url"], "tollway_requests_total")) >= CLIENTS
                and sum(metric_samples(stack["url"], "tollway_worker_in_flight")) >= 1
            ),
            what="load under way",
        )
        stack["victim"].send_signal(signal.SIGKILL)
        return await task

    load = asyncio.run(scenario())
    _check(stack, "worker SIGKILLed under load", load)
    # Only requests in flight on the victim may fail (before retries land, all of them).
    assert load.error_count <= CLIENTS, summary(load)


def test_a_worker_that_hangs(stack: dict[str, Any]) -> None:
    httpx.post(f"{stack['hanging']}/_emulator/faults", json={"hang": True}).raise_for_status()
    started = time.monotonic()
    load = asyncio.run(
        run_load(
            stack["url"],
            requests=REQUESTS,
            clients=CLIENTS,
            body={**BODY, "model": "hang"},
            timeout_s=15,
        )
    )
    took = time.monotonic() - started
    # Its hung requests would hold its own graceful shutdown for ever.
    stack["hanging_proc"].send_signal(signal.SIGKILL)
    _check(stack, "worker hangs (no answer)", load, wall_s=round(took, 1))
    # Never a hang: each request ends within the pool's first-byte timeout, plus retries.
    assert max(load.latencies_s, default=0) < 3 * FIRST_BYTE_S + 2, summary(load)
    assert set(load.errors) <= {"504 upstream_timeout"}, summary(load)
    assert len(load.completed) >= REQUESTS // 2, summary(load)


def test_a_worker_answering_500s(stack: dict[str, Any]) -> None:
    load = asyncio.run(
        run_load(stack["url"], requests=REQUESTS, clients=CLIENTS, body={**BODY, "model": "err"})
    )
    _check(stack, "worker answers 500 (error rate 0.5)", load)
    assert set(load.errors) <= {"502 upstream_server_error"}, summary(load)
    assert len(load.completed) >= REQUESTS // 2, summary(load)


def test_a_stream_cut_midway(stack: dict[str, Any]) -> None:
    load = asyncio.run(
        run_load(
            stack["url"],
            requests=REQUESTS,
            clients=CLIENTS,
            body={**BODY, "model": "cut"},
            stream_every=1,
        )
    )
    _check(stack, "stream cut after 2 chunks", load)
    # A cut stream ends with an error event; the SDK raises, nothing is taken for complete.
    assert set(load.errors) <= {"APIError"}, summary(load)
    assert load.completed, summary(load)


def test_the_gateway_still_serves_after_the_faults(stack: dict[str, Any], tmp_path: Path) -> None:
    resp = httpx.get(f"{stack['url']}/readyz", timeout=5)
    assert resp.status_code == 200
