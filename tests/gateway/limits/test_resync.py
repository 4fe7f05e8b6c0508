"""Budget spend restored from the usage ledger after Redis (or the process) lost it."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.database import create_engine
from billing.ledger import Ledger
from billing.usage import UsageRecord
from gateway.limits import (
    AdmissionRequest,
    BudgetResync,
    BudgetSpec,
    LimitsConfig,
    ManualClock,
    MemoryAdmission,
    RedisAdmission,
)
from gateway.limits.resync import ProcessSentinel, RedisSentinel, spend_windows
from gateway.sharedstate import connect_redis
from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import running_gateway
from tests.gateway.limits.test_budgets import request as budget_request
from tests.gateway.limits.test_floors import refuses
from tests.gateway.test_metering import ledger_rows
from tests.gateway.test_pipeline_stages import chat, config, tenant_key
from tollway.resp import RespClient

#: 2024-04-15 12:00 UTC.
NOW_MS = 1_713_182_400_000
DAILY = BudgetSpec(daily_micro_usd=1_000)


def usage(request_id: str, cost: int, at_ms: int = NOW_MS, key_id: str = "k1") -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        tenant_id="acme",
        key_id=key_id,
        model="m",
        created_at=datetime.fromtimestamp(at_ms / 1000, tz=UTC),
        latency_ms=1.0,
        cost_micros=cost,
    )


def request(n: int, reserve: int = 0) -> AdmissionRequest:
    return budget_request(n, key=DAILY, tenant=DAILY, reserve=reserve)


def test_ledger_windows_match_the_budget_periods() -> None:
    windows = spend_windows(NOW_MS)
    assert windows.day_start_us == 1_713_139_200_000_000  # 2024-04-15 00:00
    assert windows.day_end_us == 1_713_225_600_000_000  # 2024-04-16 00:00
    assert windows.month_start_us == 1_711_929_600_000_000  # 2024-04-01 00:00
    assert windows.month_end_us == 1_714_521_600_000_000  # 2024-05-01 00:00


async def test_a_round_restores_the_ledgers_spend_once(sqlite_engine: AsyncEngine) -> None:
    clock = ManualClock(NOW_MS)
    await Ledger(sqlite_engine).write(
        [
            usage("r1", 600),
            usage("r2", 300, key_id="k2"),  # the tenant's other key counts for the tenant
            usage("r3", 5_000, at_ms=NOW_MS - 86_400_000),  # yesterday: month only
        ]
    )
    engine = MemoryAdmission(clock=clock)
    resync = BudgetResync(engine, sqlite_engine, ProcessSentinel(), interval_s=5, clock=clock)
    assert await resync.run_once()
    await engine.admit(request(1, reserve=100))  # the tenant: 600 + 300 + 100
    assert await refuses(engine, request(2, reserve=1))
    await Ledger(sqlite_engine).write([usage("r4", 1_000)])
    assert not await resync.run_once()  # the sentinel is there: nothing read, nothing raised


async def test_a_missing_redis_sentinel_is_a_loss(
    sqlite_engine: AsyncEngine,
    redis_url: str,
    redis_clients: list[RespClient],
    limits_config: LimitsConfig,
) -> None:
    clock = ManualClock(NOW_MS)
    client = connect_redis(redis_url, timeout_s=limits_config.redis_timeout_s)
    redis_clients.append(client)
    engine = RedisAdmission(client, limits_config, clock=clock)
    sentinel = RedisSentinel(client, limits_config.key_prefix)
    assert sentinel.key == f"{limits_config.key_prefix}budget-synced"
    resync = BudgetResync(engine, sqlite_engine, sentinel, interval_s=5, clock=clock)
    await Ledger(sqlite_engine).write([usage("r1", 1_000)])
    assert await resync.run_once()  # first start: no sentinel yet
    assert await client.execute("TTL", sentinel.key) == -1  # it never expires
    assert await refuses(engine, request(1))
    assert not await resync.run_once()
    await lose_redis_data(redis_url, limits_config.key_prefix)  # Redis loses its data
    await engine.admit(request(2))  # the window before the next round
    assert await resync.run_once()
    assert await refuses(engine, request(3))


async def test_failures_are_logged_and_retried(
    sqlite_engine: AsyncEngine,
    dead_redis: RespClient,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[str] = []
    dead_sql = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'ledger.db'}")
    engine = MemoryAdmission()
    down = [
        BudgetResync(engine, sqlite_engine, RedisSentinel(dead_redis, "x:"), interval_s=60),
        BudgetResync(engine, dead_sql, ProcessSentinel(), interval_s=60),
    ]
    with caplog.at_level(logging.WARNING, logger="gateway.limits.resync"):
        for resync in down:
            resync._on_round = rounds.append
            await resync.start()  # the first round fails; the gateway starts all the same
            await resync.stop()
    await dead_sql.dispose()
    assert rounds == ["failed", "failed"]
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "database error" in caplog.records[1].getMessage()


async def test_the_background_loop_notices_a_loss(sqlite_engine: AsyncEngine) -> None:
    await Ledger(sqlite_engine).write(
        [usage("r1", 1_000, at_ms=int(datetime.now(UTC).timestamp() * 1000))]
    )
    sentinel = ProcessSentinel()
    rounds: list[str] = []
    resync = BudgetResync(
        MemoryAdmission(), sqlite_engine, sentinel, interval_s=0.1, on_round=rounds.append
    )
    await resync.start()
    assert rounds == ["synced"]
    sentinel._marked = False  # as if the counters were lost
    try:
        async with asyncio.timeout(5):
            while len(rounds) < 2:
                await asyncio.sleep(0.05)
    finally:
        await resync.stop()
    assert rounds == ["synced", "synced"]


async def test_zero_switches_it_off(sqlite_engine: AsyncEngine) -> None:
    rounds: list[str] = []
    resync = BudgetResync(
        MemoryAdmission(), sqlite_engine, ProcessSentinel(), interval_s=0, on_round=rounds.append
    )
    await resync.start()
    await resync.stop()
    assert rounds == []


# -- through the whole gateway -------------------------------------------------------


async def spend_the_budget(app: Any, client: httpx.AsyncClient) -> str:
    """A key with a daily budget of 300 micro-USD, spent (113 a request) until refused."""
    key = await tenant_key(client, budgets={"daily_usd": "0.0003"})
    statuses = [(await chat(client, key)).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    await app.state.pipeline.admitter.drain()
    rows = await ledger_rows(app)
    assert sum(row["cost_micros"] for row in rows.values()) == 226
    return key


def assert_insufficient_quota(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "insufficient_quota"


async def lose_redis_data(redis_url: str, prefix: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=f"{prefix}*")]
        assert f"{prefix}budget-synced".encode() in keys
        await client.delete(*keys)
    finally:
        await client.aclose()


async def test_spend_survives_redis_losing_its_data(
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    redis_clients: list[RespClient],  # deletes the prefix's keys after
) -> None:
    limits = {"key_prefix": redis_prefix, "budget_resync_check_s": 3600}
    async with serve_fake_worker() as worker:
        cfg = config(worker.url, tmp_path, limits=limits)
        async with running_gateway(cfg, {"redis_url": redis_url}) as (app, client):
            key = await spend_the_budget(app, client)
            await lose_redis_data(redis_url, redis_prefix)
            assert await app.state.budget_resync.run_once()
            assert_insufficient_quota(await chat(client, key))
            await lose_redis_data(redis_url, redis_prefix)  # and without a round:
            assert (await chat(client, key)).status_code == 200  # spent a second time


async def test_spend_survives_a_restart_without_redis(tmp_path: Path) -> None:
    settings = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'tollway.db'}"}
    async with serve_fake_worker() as worker:
        cfg = config(worker.url, tmp_path)
        async with running_gateway(cfg, settings) as (app, client):
            key = await spend_the_budget(app, client)
        async with running_gateway(cfg, settings) as (_, client):  # restored at start
            assert_insufficient_quota(await chat(client, key))
        cfg["limits"] = {"budget_resync_check_s": 0}  # and without it:
        async with running_gateway(cfg, settings) as (_, client):
            assert (await chat(client, key)).status_code == 200  # spent a second time
