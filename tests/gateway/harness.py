"""In-process gateway for tests: the real app, its lifespan, an httpx client over ASGI."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import openai

from gateway.app import Gateway, create_app
from gateway.auth import hash_key
from gateway.config import parse_config
from gateway.settings import Settings

API_KEY = "tw-test-key-0123456789abcdefghijklmnopqrstuvwxyz"


def closed_port_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def gateway_config(workers: list[str], **overrides: Any) -> dict[str, Any]:
    """A one-pool configuration with the test key."""
    config: dict[str, Any] = {
        "auth": {"keys": [{"tenant": "t1", "name": "k1", "key_sha256": hash_key(API_KEY)}]},
        "pools": {
            "p": {
                "gpu": "h100",
                "model": {"name": "llama-3.1-8b-instruct", "served_name": "upstream-model"},
                "workers": workers,
                "health": {"interval_s": 0.2, "timeout_s": 2.0},
                "timeouts": {"connect_s": 1, "first_byte_s": 5, "total_s": 10},
            }
        },
        "models": {"m": {"route": "pool:p"}},
    }
    config.update(overrides)
    return config


@asynccontextmanager
async def running_gateway(
    config: dict[str, Any], settings: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Gateway, httpx.AsyncClient]]:
    """Start the app (lifespan included) and yield it with a client."""
    with tempfile.TemporaryDirectory(prefix="tollway-test-") as data_dir:
        app = create_app(
            parse_config(config), Settings(data_dir=Path(data_dir), **(settings or {}))
        )
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
                yield app, client


def sdk(client: httpx.AsyncClient, key: str = API_KEY) -> openai.AsyncOpenAI:
    """The openai SDK speaking to the in-process gateway."""
    return openai.AsyncOpenAI(
        base_url="http://gateway/v1", api_key=key, http_client=client, max_retries=0
    )
