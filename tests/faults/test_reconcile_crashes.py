"""Processes killed and the database taken away under mixed traffic, reconciled by
request id (see :mod:`tests.faults.reconcile`).

- the external ledger writer ``kill -9``-ed and started again;
- the gateway ``kill -9``-ed and started again on its data directory;
- the database unavailable for a while: PostgreSQL refusing the gateway's role
  (login taken away, sessions ended), SQLite locked by another process.

Bounds: a killed writer held the leader lock (15 s TTL) and had entries pending
(taken over after ``claim_idle_ms``); a killed gateway likewise.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from tests.conftest import admin_sql
from tests.e2e.processes import emulator, free_port, pool, start_gateway, write_config
from tests.faults.reconcile import (
    Traffic,
    ledger_database,
    mixed_traffic,
    reconcile,
    start_writer,
    stop_all,
    until,
)
from tests.faults.support import private_redis, record, sqlite_ledger

pytestmark = pytest.mark.e2e

#: Leader lock TTL (15 s) + claim_idle_ms + a writer round, with room for CI.
AFTER_A_KILL_S = 30.0


def _config(tmp: Path, worker: str, **metering: object) -> Path:
    prefix = f"faults-{uuid.uuid4().hex[:8]}:"
    return write_config(
        tmp,
        pools={"p": pool([worker])},
        models={"m": {"route": "pool:p"}},
        limits={"key_prefix": prefix, "redis_timeout_s": 0.25},
        idempotency={"key_prefix": prefix},
        metering={"claim_idle_ms": 500, **metering},
    )


@pytest.mark.slow
def test_writer_killed_and_restarted(tmp_path: Path, postgres_database: str) -> None:
    with private_redis() as redis, emulator("--instant") as (worker, _):
        config = _config(tmp_path, worker, writer="external")
        env = {
            "TOLLWAY_DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": redis.url,
            "DATABASE_URL": postgres_database,
        }
        url, gateway = start_gateway(config, env)
        flags = ("--config", str(config), "--claim-idle-ms", "500")
        writer = start_writer(env, tmp_path / "writer.log", *flags)
        traffic = Traffic()
        restarted = None
        try:

            async def scenario() -> None:
                nonlocal restarted
                load = asyncio.create_task(mixed_traffic(url, traffic, requests=120, tag="w"))
                await until(lambda: len(traffic.answers) >= 40, 30, "40 answers")
                writer.kill()
                writer.wait()
                restarted = start_writer(env, tmp_path / "writer.log", *flags)
                await load

            asyncio.run(scenario())
            result = asyncio.run(reconcile(postgres_database, traffic, AFTER_A_KILL_S))
        finally:
            stop_all(restarted, writer, gateway)
    record("ledger writer kill -9, restarted", traffic.load(), len(result.missing), 0)
    assert result.holds, (result, traffic.kinds())
    assert traffic.kinds() == {"ok": len(traffic.answers)}


@pytest.mark.slow
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_gateway_killed_and_restarted(
    tmp_path: Path, request: pytest.FixtureRequest, database: str
) -> None:
    data = tmp_path / "data"
    database_url, db_env = ledger_database(database, data, request)
    with private_redis() as redis, emulator("--instant") as (worker, _):
        config = _config(tmp_path, worker)
        env = {"TOLLWAY_DATA_DIR": str(data), "REDIS_URL": redis.url, **db_env}
        port = free_port()
        url, gateway = start_gateway(config, env, port)
        traffic = Traffic()
        restarted = None
        try:

            async def scenario() -> None:
                nonlocal restarted
                load = asyncio.create_task(
                    mixed_traffic(url, traffic, requests=100, timeout_s=5, tag="before")
                )
                await until(lambda: len(traffic.answers) >= 40, 30, "40 answers")
                gateway.kill()
                gateway.wait()
                await load  # the rest fails fast: nothing listens
                _, restarted = await asyncio.to_thread(start_gateway, config, env, port)
                await mixed_traffic(url, traffic, requests=40, tag="after")

            asyncio.run(scenario())
            result = asyncio.run(reconcile(database_url, traffic, AFTER_A_KILL_S))
        finally:
            stop_all(restarted, gateway)
    record(f"gateway kill -9, restarted, {database}", traffic.load(), len(result.missing), 0)
    assert result.holds, (result, traffic.kinds())
    assert len(traffic.completed) >= 80, traffic.kinds()


def test_postgres_refusing_the_gateway(
    tmp_path: Path, redis_url: str, postgres_url: str, postgres_database_of_role: tuple[str, str]
) -> None:
    """The database answers no more (login refused, sessions ended), then again."""
    database_url, role = postgres_database_of_role
    with emulator("--instant") as (worker, _):
        config = _config(tmp_path, worker)
        env = {
            "TOLLWAY_DATA_DIR": str(tmp_path / "data"),
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
        }
        url, gateway = start_gateway(config, env)
        traffic = Traffic()
        try:
            asyncio.run(mixed_traffic(url, traffic, requests=30, tag="before"))
            admin_sql(
                postgres_url,
                f'ALTER ROLE "{role}" NOLOGIN',
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'",
            )
            try:
                asyncio.run(mixed_traffic(url, traffic, requests=40, tag="during"))
            finally:
                admin_sql(postgres_url, f'ALTER ROLE "{role}" LOGIN')
            asyncio.run(mixed_traffic(url, traffic, requests=30, tag="after"))
            result = asyncio.run(reconcile(database_url, traffic, AFTER_A_KILL_S))
        finally:
            stop_all(gateway)
    record("PostgreSQL refusing the gateway", traffic.load(), len(result.missing), 0)
    assert result.holds, (result, traffic.kinds())
    assert traffic.kinds() == {"ok": len(traffic.answers)}


def test_sqlite_locked_by_another_process(tmp_path: Path, redis_url: str) -> None:
    """Another process holds the database's write lock while traffic flows."""
    data = tmp_path / "data"
    with emulator("--instant") as (worker, _):
        config = _config(tmp_path, worker)
        url, gateway = start_gateway(
            config, {"TOLLWAY_DATA_DIR": str(data), "REDIS_URL": redis_url}
        )
        traffic = Traffic()
        try:
            asyncio.run(mixed_traffic(url, traffic, requests=30, tag="before"))
            holder = sqlite3.connect(data / "tollway.db", timeout=10, isolation_level=None)
            try:
                holder.execute("BEGIN EXCLUSIVE")
                asyncio.run(mixed_traffic(url, traffic, requests=40, tag="during"))
                locked = asyncio.run(reconcile(sqlite_ledger(data), traffic, timeout_s=0))
                holder.execute("COMMIT")
            finally:
                holder.close()
            asyncio.run(mixed_traffic(url, traffic, requests=30, tag="after"))
            result = asyncio.run(reconcile(sqlite_ledger(data), traffic, AFTER_A_KILL_S))
        finally:
            stop_all(gateway)
    record("SQLite locked by another process", traffic.load(), len(result.missing), 0)
    assert locked.missing, "the lock kept the writer out while it was held"
    assert result.holds, (result, traffic.kinds())
    assert traffic.kinds() == {"ok": len(traffic.answers)}
