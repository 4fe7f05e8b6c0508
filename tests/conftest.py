"""Shared test fixtures: real Redis and PostgreSQL.

In CI (``TOLLWAY_TEST_REQUIRE_SERVICES=1``) a missing service is a failure; on a
laptop without the services, Redis tests start a private ``redis-server`` on a
free port when the binary exists, and otherwise skip, as PostgreSQL tests do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

REQUIRE_SERVICES = os.environ.get("TOLLWAY_TEST_REQUIRE_SERVICES") == "1"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def service_unavailable(name: str, reason: str) -> None:
    """Skip on a developer laptop, fail in CI, when a backing service is missing."""
    message = f"{name} is not available: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


def _redis_answers(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server (shared; isolate keys with ``redis_prefix``)."""
    url = os.environ.get("REDIS_TEST_URL", DEFAULT_REDIS)
    if _redis_answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None or REQUIRE_SERVICES:
        service_unavailable("Redis", f"nothing answers at {url}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="tollway-redis-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    private = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(100):
            if _redis_answers(private):
                break
            time.sleep(0.05)
        else:
            service_unavailable("Redis", "a private redis-server did not start")
        yield private
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix unique to one test, so tests never see each other's keys."""
    return f"tollway-test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """SQLAlchemy URL of a real PostgreSQL database (asyncpg driver)."""
    url = os.environ.get("POSTGRES_TEST_URL", DEFAULT_POSTGRES)
    import asyncio

    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")

    async def probe() -> None:
        conn = await asyncpg.connect(dsn, timeout=2)
        await conn.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        service_unavailable("PostgreSQL", f"{url}: {exc}")
    return url


def admin_sql(postgres_url: str, *statements: str) -> None:
    """Run statements on the shared PostgreSQL server as its administrator."""
    import asyncio

    import asyncpg

    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.fixture
async def postgres_schema(postgres_url: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh PostgreSQL schema for one test: yields ``(url, schema)``; dropped after.

    Point an engine at it with
    ``connect_args={"server_settings": {"search_path": schema}}``.
    """
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    dsn = postgres_url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
        yield postgres_url, schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture
async def sqlite_engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A fresh SQLite file with the billing tables (the usage ledger among them)."""
    from billing.database import create_engine
    from billing.tables import create_all

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}")
    await create_all(engine)
    yield engine
    await engine.dispose()
