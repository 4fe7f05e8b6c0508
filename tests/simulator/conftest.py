"""Fixtures: an in-process emulator (lifespan running) and an httpx client on it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from simulator.app import running_emulator
from simulator.config import EmulatorConfig

ClientFactory = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@contextlib.asynccontextmanager
async def emulator_client(
    *, raise_app_exceptions: bool = True, **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fresh instant-mode emulator built from ``overrides``."""
    config = EmulatorConfig(**{"instant": True, **overrides})
    async with running_emulator(config) as app:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url="http://emulator") as client:
            yield client


@pytest.fixture
def make_client() -> ClientFactory:
    """Factory of emulator clients with custom config (use as ``async with``)."""
    return emulator_client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A client on a default emulator (h100, llama-3.1-8b-instruct, instant)."""
    async with emulator_client() as c:
        yield c
