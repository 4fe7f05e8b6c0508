"""Redis and PostgreSQL stopped and started again under load (private instances).

The gateway's configured degradation policy: with Redis down, rate limits fail
open to per-replica limits (``limits.on_redis_outage: fail_open``) and usage
records go to the local spool instead of the Redis stream; with the database
down, requests are still served (static keys, cached principals) and usage
records wait in the buffer until the ledger writer can write them. Each phase
of load (before, during, after the outage) must end without a hang, and after
recovery every response a client saw complete is in the ledger exactly once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.processes import emulator, pool, start_gateway, stop, write_config
from tests.faults.support import (
    LoadResult,
    lost_and_doubled,
    private_postgres,
    private_redis,
    record,
    run_load,
    sqlite_ledger,
    summary,
)

pytestmark = pytest.mark.e2e

PHASE = 30
CLIENTS = 4


def _phases(
    url: str, stop_service: Callable[[], None], start_service: Callable[[], None]
) -> list[LoadResult]:
    """Load before, during and after an outage of a backing service."""
    loads = [asyncio.run(run_load(url, requests=PHASE, clients=CLIENTS, timeout_s=10))]
    stop_service()
    loads.append(asyncio.run(run_load(url, requests=PHASE, clients=CLIENTS, timeout_s=10)))
    start_service()
    loads.append(asyncio.run(run_load(url, requests=PHASE, clients=CLIENTS, timeout_s=10)))
    return loads


def _merge(loads: list[LoadResult]) -> LoadResult:
    merged = LoadResult()
    for load in loads:
        merged.sent += load.sent
        merged.completed += load.completed
        merged.latencies_s += load.latencies_s
        for kind, n in load.errors.items():
            merged.errors[kind] = merged.errors.get(kind, 0) + n
    return merged


def test_redis_stopped_and_started(tmp_path: Path) -> None:
    with private_redis() as redis, emulator("--instant") as (worker, _):
        config = write_config(
            tmp_path,
            pools={"p": pool([worker])},
            models={"m": {"route": "pool:p"}},
            limits={"redis_timeout_s": 0.25, "outage_retry_s": 0.5},
            metering={"claim_idle_ms": 500},
        )
        data = tmp_path / "data"
        url, proc = start_gateway(config, {"TOLLWAY_DATA_DIR": str(data), "REDIS_URL": redis.url})
        try:
            loads = _phases(url, redis.stop, redis.start)
            load = _merge(loads)
            lost, doubled = asyncio.run(lost_and_doubled(sqlite_ledger(data), load.completed))
        finally:
            stop(proc)
    during = loads[1]
    record(
        "Redis stopped, then started",
        load,
        lost,
        doubled,
        errors_during_outage=during.error_count,
        max_latency_during_s=round(max(during.latencies_s, default=0), 2),
    )
    assert load.sent == 3 * PHASE
    assert load.error_count == 0, [summary(x) for x in loads]  # fail_open: served throughout
    assert max(load.latencies_s) < 5, [summary(x) for x in loads]  # never a hang
    assert (lost, doubled) == (0, 0)


def test_postgres_stopped_and_started(tmp_path: Path) -> None:
    with private_postgres() as pg, emulator("--instant") as (worker, _):
        config = write_config(
            tmp_path, pools={"p": pool([worker])}, models={"m": {"route": "pool:p"}}
        )
        data = tmp_path / "data"
        url, proc = start_gateway(config, {"TOLLWAY_DATA_DIR": str(data), "DATABASE_URL": pg.url})
        try:
            loads = _phases(url, pg.stop, pg.start)
            load = _merge(loads)
            lost, doubled = asyncio.run(lost_and_doubled(pg.url, load.completed, timeout_s=30))
        finally:
            stop(proc)
    during = loads[1]
    record(
        "PostgreSQL stopped, then started",
        load,
        lost,
        doubled,
        errors_during_outage=during.error_count,
        max_latency_during_s=round(max(during.latencies_s, default=0), 2),
    )
    assert load.sent == 3 * PHASE
    assert load.error_count == 0, [summary(x) for x in loads]
    assert max(load.latencies_s) < 5, [summary(x) for x in loads]
    assert (lost, doubled) == (0, 0)
