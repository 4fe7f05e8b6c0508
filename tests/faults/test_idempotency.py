"""Duplicate submissions with one idempotency key, in parallel, across two replicas.

Two gateway processes share a Redis (idempotency records, under a key prefix of
this test's own) and a PostgreSQL database (the ledger, a fresh database). For
each of a few keys, several identical requests are sent at once, spread over
both replicas, to a slow worker so that they overlap: exactly one runs, the
others wait and replay its response, and the ledger holds one row per key.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import openai
import pytest

from gateway.idempotency.record import ORIGINAL_REQUEST_ID
from tests.e2e.processes import API_KEY, emulator, pool, start_gateway, stop, write_config
from tests.faults.support import BODY, LoadResult, ledger_counts, record, summary

pytestmark = pytest.mark.e2e

KEYS = 5
DUPLICATES = 8


def test_parallel_duplicates_run_once_and_bill_once(
    tmp_path: Path, postgres_database: str, redis_url: str
) -> None:
    database = postgres_database  # a fresh database (tests/faults/conftest.py)
    prefix = f"faults-{uuid.uuid4().hex[:8]}:"
    with emulator("--instant", "--added-latency-ms", "500") as (worker, _):
        config = write_config(
            tmp_path,
            pools={"p": pool([worker])},
            models={"m": {"route": "pool:p"}},
            limits={"key_prefix": prefix},
            idempotency={"key_prefix": prefix, "wait_timeout_s": 20},
        )
        env = {"DATABASE_URL": database, "REDIS_URL": redis_url}
        replicas = [
            start_gateway(config, {**env, "TOLLWAY_DATA_DIR": str(tmp_path / f"d{i}")})
            for i in range(2)
        ]
        try:
            load, by_key = asyncio.run(_duplicates([url for url, _ in replicas]))
        finally:
            for _, proc in replicas:
                stop(proc)
    ids = sorted({rid for rids in by_key.values() for rid in rids})
    counts = asyncio.run(ledger_counts(database, ids))
    lost = sum(1 for rid in ids if counts.get(rid, 0) == 0)
    doubled = sum(1 for n in counts.values() if n > 1)
    record(
        f"{KEYS} keys x {DUPLICATES} parallel duplicates, 2 replicas",
        load,
        lost,
        doubled,
        ledger_rows=sum(counts.values()),
    )
    assert load.error_count == 0, summary(load)
    # Every duplicate got the response of the one request that ran, billed once.
    assert all(len(rids) == 1 for rids in by_key.values()), by_key
    assert sum(counts.values()) == KEYS and (lost, doubled) == (0, 0), counts


async def _duplicates(urls: list[str]) -> tuple[LoadResult, dict[str, set[str]]]:
    load = LoadResult()
    by_key: dict[str, set[str]] = {}
    bodies: dict[str, set[str]] = {}
    clients = [
        openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=API_KEY, max_retries=0, timeout=30)
        for url in urls
    ]

    async def one(key: str, i: int) -> None:
        load.sent += 1
        sdk = clients[i % len(clients)]
        try:
            raw = await sdk.chat.completions.with_raw_response.create(
                **{**BODY, "messages": [{"role": "user", "content": f"key {key}"}]},
                extra_headers={"Idempotency-Key": key},
            )
            reply = raw.parse()
        except openai.APIError as exc:
            load.error(type(exc).__name__)
            return
        # A replay names the request that ran (and was billed) in its own header.
        billed = raw.headers.get(ORIGINAL_REQUEST_ID) or raw.headers["x-request-id"]
        load.completed.append(billed)
        by_key.setdefault(key, set()).add(billed)
        bodies.setdefault(key, set()).add(reply.id)

    try:
        keys = [f"agent-step-{uuid.uuid4().hex[:8]}" for _ in range(KEYS)]
        await asyncio.gather(*(one(key, i) for key in keys for i in range(DUPLICATES)))
    finally:
        for sdk in clients:
            await sdk.close()
    assert all(len(ids) == 1 for ids in bodies.values()), bodies  # one completion per key
    return load, by_key
