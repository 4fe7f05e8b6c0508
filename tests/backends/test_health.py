"""Health probes and capacity discovery that fit SGLang 0.5.6.post1's own endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from pydantic import ValidationError

from backends.http1 import Http1Pool
from backends.sglang.config import HealthConfig
from backends.sglang.health import discover_capacity, probe
from backends.sglang.worker import Worker


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Http1Pool]:
    """A worker's probe client, closed on the way out."""
    pool = Http1Pool(url, max_connections=2)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def serve(routes: dict[str, web.Response], asked: list[str]) -> AsyncIterator[str]:
    """A loopback server answering ``routes`` (anything else 404), recording each path."""

    async def handle(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        answer = routes.get(request.path)
        return answer if answer is not None else web.Response(status=404)

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def test_a_probe_timeout_under_sglangs_health_wait_is_rejected() -> None:
    """``http_server.py`` ``health_generate``: ``await asyncio.sleep(1)`` before any answer."""
    assert HealthConfig().timeout_s == 5.0
    for path in ("/health", "/health_generate"):
        with pytest.raises(ValidationError, match="cannot work"):
            HealthConfig(path=path, timeout_s=1.0)
    HealthConfig(path="/health", timeout_s=1.5)
    HealthConfig(path="/livez", timeout_s=0.5)  # not SGLang's generating health path


async def test_server_info_is_asked_first_and_get_server_info_never_on_a_new_server() -> None:
    """``http_server.py``: ``/get_server_info`` logs a deprecation warning per call."""
    asked: list[str] = []
    routes = {
        "/server_info": web.json_response({"max_total_num_tokens": 1234}),
        "/get_server_info": web.json_response({"max_total_num_tokens": 999}),
    }
    async with serve(routes, asked) as url, client(url) as http:
        worker = Worker(url=url, health=HealthConfig())
        await discover_capacity(http, worker, 2.0, fallback=7)
    assert worker.capacity_tokens == 1234
    assert asked == ["/server_info"]


async def test_an_older_server_is_asked_the_old_path() -> None:
    asked: list[str] = []
    routes = {"/get_server_info": web.json_response({"max_total_num_tokens": 999})}
    async with serve(routes, asked) as url, client(url) as http:
        worker = Worker(url=url, health=HealthConfig())
        await discover_capacity(http, worker, 2.0, fallback=7)
        assert worker.capacity_tokens == 999
        assert asked == ["/server_info", "/get_server_info"]
    async with serve({}, asked) as url, client(url) as http:
        empty = Worker(url=url, health=HealthConfig())
        await discover_capacity(http, empty, 2.0, fallback=7)
    assert empty.capacity_tokens == 7


async def test_a_starting_server_fails_the_probe() -> None:
    """``http_server.py`` ``health_generate``: 503 while ``ServerStatus.Starting``."""
    asked: list[str] = []
    async with serve({"/health": web.Response(status=503)}, asked) as url, client(url) as http:
        assert not await probe(http, HealthConfig())
    assert asked == ["/health"]


def test_pool_manifests_set_what_the_health_checks_rely_on() -> None:
    """SGLang's ``/health`` generates only with ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION``
    (``environ.py``, default true): the rendered pods pin it, and no probe times out
    before SGLang's 1 s health wait."""
    from backends.sglang.config import PoolConfig
    from backends.sglang.manifest import expected_worker_urls, render_pool_manifest

    config = PoolConfig.model_validate(
        {
            "gpu": "h100",
            "model": {"name": "llama-3.1-8b-instruct"},
            "workers": expected_worker_urls("p", 1),
        }
    )
    for emulated in (False, True):
        sts = render_pool_manifest(config, "p", emulated=emulated)[1]
        (container,) = sts["spec"]["template"]["spec"]["containers"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[kind]["timeoutSeconds"] >= 5
        if not emulated:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION"] == "true"


async def test_a_ready_server_passes_the_probe_and_a_closed_port_fails_it() -> None:
    asked: list[str] = []
    async with serve({"/livez": web.Response(status=200)}, asked) as url, client(url) as http:
        assert await probe(http, HealthConfig(path="/livez", timeout_s=2.0))
    assert asked == ["/livez"]
    async with client(url) as http:  # the server is gone: nothing listens there now
        assert not await probe(http, HealthConfig(path="/livez", timeout_s=2.0))
