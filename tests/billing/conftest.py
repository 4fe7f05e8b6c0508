"""Fixtures of the billing tests: a ledger database on SQLite (``sqlite_engine``, in the
shared conftest) and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.database import create_engine
from billing.tables import create_all
from billing.usage import UsageRecord


@pytest.fixture
async def pg_engine(postgres_schema: tuple[str, str]) -> AsyncIterator[AsyncEngine]:
    """A fresh PostgreSQL schema with the billing tables."""
    url, schema = postgres_schema
    engine = create_engine(url, schema=schema)
    await create_all(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest) -> AsyncEngine:
    """The billing database, once on each dialect."""
    name = "sqlite_engine" if request.param == "sqlite" else "pg_engine"
    value: AsyncEngine = request.getfixturevalue(name)
    return value


def make_record(request_id: str, **overrides: Any) -> UsageRecord:
    """A plausible usage record."""
    fields: dict[str, Any] = {
        "request_id": request_id,
        "tenant_id": "t1",
        "key_id": "k1",
        "model": "agent-small",
        "created_at": datetime(2025, 6, 1, 12, 30, tzinfo=UTC),
        "agent_type": "coordinator",
        "pool": "h100-small",
        "worker": "http://10.0.1.10:30000",
        "prompt_tokens": 1200,
        "cached_tokens": 200,
        "completion_tokens": 300,
        "latency_ms": 812.5,
        "ttft_ms": 95.0,
        "gpu_seconds": 0.25,
        "cost_micros": 1234,
        "price_book_version": 1,
        "rate_id": "standard/default",
    }
    fields.update(overrides)
    return UsageRecord(**fields)
