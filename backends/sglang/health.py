"""Health checks, load scraping and capacity discovery for a pool's workers.

Every ``health.interval_s`` each worker's ``/health`` is probed and, at the
same time, the ``/get_load`` of each worker that was up is scraped (requests
and KV tokens, across every gateway replica): SGLang's ``/health`` takes about
a second (it runs a one-token generation, see :class:`HealthConfig`), which
should not delay the load figures. Each probe result after the first also goes
to ``on_probe`` (the pool feeds its circuit breakers with it). At start each
worker's KV capacity comes from ``/server_info`` (``max_total_num_tokens``;
``/get_server_info`` only for servers older than SGLang 0.5, which lack it:
0.5.x logs a deprecation warning for every call of the old path), else from
the pool's configuration or the capacity model (:func:`modelled_capacity`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from backends.sglang.capacity import Deployment, kv_pool
from backends.sglang.catalog import GPUS, MODELS
from backends.sglang.config import HealthConfig, PoolConfig
from backends.sglang.worker import Worker

log = logging.getLogger("tollway.health")

#: Called with each worker and its probe's result (after the initial probe).
ProbeHook = Callable[[Worker, bool], None]


async def _get_json(session: aiohttp.ClientSession, url: str, timeout_s: float) -> Any:
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                return None
            return orjson.loads(await resp.read())
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
        return None


async def probe(session: aiohttp.ClientSession, worker: Worker, cfg: HealthConfig) -> bool:
    """One probe: True when the worker answered its health path with 200."""
    try:
        async with session.get(
            worker.url + cfg.path, timeout=aiohttp.ClientTimeout(total=cfg.timeout_s)
        ) as resp:
            await resp.read()
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def scrape_load(session: aiohttp.ClientSession, worker: Worker, timeout_s: float) -> None:
    """Update the worker's reported load from ``/get_load`` (summed over DP ranks)."""
    data = await _get_json(session, worker.url + "/get_load", timeout_s)
    ranks = data if isinstance(data, list) else [data] if isinstance(data, dict) else []
    requests = tokens = 0
    for rank in ranks:
        if isinstance(rank, dict):
            requests += int(rank.get("num_reqs") or 0)
            tokens += int(rank.get("num_tokens") or 0)
    if ranks:
        worker.reported_requests = requests
        worker.reported_tokens = tokens
        worker.others_requests = max(0, requests - worker.in_flight)
        worker.others_tokens = max(0, tokens - worker.projected_tokens)


def modelled_capacity(config: PoolConfig) -> int | None:
    """KV tokens per worker from the configuration, else the capacity model."""
    if config.max_total_tokens is not None:
        return config.max_total_tokens
    gpu, model = GPUS.get(config.gpu), MODELS.get(config.model.name)
    if gpu is None or model is None:
        return None
    m = config.model
    deployment = Deployment(gpu, model, m.tp, m.weights_dtype, m.kv_dtype)
    return kv_pool(deployment).max_total_num_tokens or None


#: Where the server's arguments and ``max_total_num_tokens`` are, newest first.
SERVER_INFO_PATHS = ("/server_info", "/get_server_info")


async def discover_capacity(
    session: aiohttp.ClientSession, worker: Worker, timeout_s: float, fallback: int | None
) -> None:
    """Set the worker's KV capacity from ``/server_info`` (else the old path), else ``fallback``."""
    reported = None
    for path in SERVER_INFO_PATHS:
        info = await _get_json(session, worker.url + path, timeout_s)
        if isinstance(info, dict):
            reported = info.get("max_total_num_tokens")
            break
    if isinstance(reported, int) and reported > 0:
        worker.capacity_tokens = reported
    elif worker.capacity_tokens is None:
        worker.capacity_tokens = fallback


async def probe_all(
    session: aiohttp.ClientSession,
    workers: Sequence[Worker],
    cfg: HealthConfig,
    *,
    initial: bool = False,
    on_probe: ProbeHook | None = None,
) -> None:
    """Probe every worker once, concurrently, and record the results.

    ``on_probe`` hears every result except the ``initial`` probe's.
    """
    results = await asyncio.gather(*(probe(session, w, cfg) for w in workers))
    for worker, ok in zip(workers, results, strict=True):
        was = worker.healthy
        worker.record_probe(ok, initial=initial)
        if on_probe is not None and not initial:
            on_probe(worker, ok)
        if worker.healthy != was:
            log.warning("worker %s is now %s", worker.url, "up" if worker.healthy else "down")


async def run_health_checks(
    session: aiohttp.ClientSession,
    workers: Sequence[Worker],
    cfg: HealthConfig,
    on_change: Callable[[], None],
    capacity_fallback: int | None = None,
    on_probe: ProbeHook | None = None,
) -> None:
    """Probe and scrape forever, every ``cfg.interval_s``; cancelled by the pool's ``stop``."""
    while True:
        await asyncio.sleep(cfg.interval_s)
        live = [w for w in workers if w.healthy]
        await asyncio.gather(
            probe_all(session, workers, cfg, on_probe=on_probe),
            *(scrape_load(session, w, cfg.timeout_s) for w in live),
        )
        live = [w for w in workers if w.healthy]
        await asyncio.gather(
            *(
                discover_capacity(session, w, cfg.timeout_s, capacity_fallback)
                for w in live
                if w.capacity_tokens is None
            )
        )
        on_change()
