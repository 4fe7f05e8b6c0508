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

Probes go over the same HTTP client as requests (:class:`backends.http1.Http1Pool`),
each worker's in a small connection pool of its own (see
:func:`backends.sglang.transport.probe_client`), so a worker whose request
connections are all busy is still probed at once rather than after them.
Each call is bounded as a whole by its timeout (connecting and reading the
body included); any failure (refused, timed out, not HTTP, not 200, not
JSON where JSON is expected) counts as no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from backends import http1
from backends.sglang.config import HealthConfig, PoolConfig
from backends.sglang.transport import probe_client
from backends.sglang.worker import Worker
from gpu_catalog.capacity import Deployment, kv_pool
from gpu_catalog.specs import GPUS, MODELS

log = logging.getLogger("tollway.health")

#: Called with each worker and its probe's result (after the initial probe).
ProbeHook = Callable[[Worker, bool], None]


#: Each worker's probe client, by the worker's URL.
ProbeClients = Mapping[str, http1.Http1Pool]


async def _get(client: http1.Http1Pool, path: str, timeout_s: float) -> tuple[int, bytes] | None:
    """``GET path``: the status and body, or ``None`` on any failure within ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            resp = await client.request(
                "GET", path, (), b"", first_byte_timeout_s=timeout_s, total_timeout_s=timeout_s
            )
            async with resp:
                return resp.status, await resp.read()
    except (http1.Http1Error, TimeoutError, OSError):
        return None


async def _get_json(client: http1.Http1Pool, path: str, timeout_s: float) -> Any:
    """The JSON body of a 200 answer to ``GET path``, else ``None``."""
    answer = await _get(client, path, timeout_s)
    if answer is None or answer[0] != 200:
        return None
    try:
        return orjson.loads(answer[1])
    except orjson.JSONDecodeError:
        return None


async def probe(client: http1.Http1Pool, cfg: HealthConfig) -> bool:
    """One probe: True when the worker answered its health path with 200."""
    answer = await _get(client, cfg.path, cfg.timeout_s)
    return answer is not None and answer[0] == 200


async def scrape_load(client: http1.Http1Pool, worker: Worker, timeout_s: float) -> None:
    """Update the worker's reported load from ``/get_load`` (summed over DP ranks)."""
    data = await _get_json(client, "/get_load", timeout_s)
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
    client: http1.Http1Pool, worker: Worker, timeout_s: float, fallback: int | None
) -> None:
    """Set the worker's KV capacity from ``/server_info`` (else the old path), else ``fallback``."""
    reported = None
    for path in SERVER_INFO_PATHS:
        info = await _get_json(client, path, timeout_s)
        if isinstance(info, dict):
            reported = info.get("max_total_num_tokens")
            break
    if isinstance(reported, int) and reported > 0:
        worker.capacity_tokens = reported
    elif worker.capacity_tokens is None:
        worker.capacity_tokens = fallback


async def probe_all(
    clients: ProbeClients,
    workers: Sequence[Worker],
    cfg: HealthConfig,
    *,
    initial: bool = False,
    on_probe: ProbeHook | None = None,
) -> None:
    """Probe every worker once, concurrently, and record the results.

    ``on_probe`` hears every result except the ``initial`` probe's.
    """
    results = await asyncio.gather(*(probe(clients[w.url], cfg) for w in workers))
    for worker, ok in zip(workers, results, strict=True):
        was = worker.healthy
        worker.record_probe(ok, initial=initial)
        if on_probe is not None and not initial:
            on_probe(worker, ok)
        if worker.healthy != was:
            log.warning("worker %s is now %s", worker.url, "up" if worker.healthy else "down")


async def run_health_checks(
    clients: ProbeClients,
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
            probe_all(clients, workers, cfg, on_probe=on_probe),
            *(scrape_load(clients[w.url], w, cfg.timeout_s) for w in live),
        )
        live = [w for w in workers if w.healthy]
        await asyncio.gather(
            *(
                discover_capacity(clients[w.url], w, cfg.timeout_s, capacity_fallback)
                for w in live
                if w.capacity_tokens is None
            )
        )
        on_change()


class HealthChecks:
    """A pool's health checks: each worker's probe client, the first round at
    :meth:`start` (probe, then capacity discovery), then :func:`run_health_checks`
    in a task until :meth:`stop`, which also closes the clients."""

    def __init__(
        self,
        name: str,
        workers: Sequence[Worker],
        config: PoolConfig,
        *,
        on_change: Callable[[], None],
        on_probe: ProbeHook,
    ) -> None:
        self.name = name
        self.workers = workers
        self.config = config
        self.on_change = on_change
        self.on_probe = on_probe
        #: KV tokens per worker when a worker does not report its capacity.
        self.capacity_fallback = modelled_capacity(config)
        self._clients: dict[str, http1.Http1Pool] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the probe clients, probe every worker, learn capacities, start the loop."""
        clients = {w.url: probe_client(w.url, self.config) for w in self.workers}
        self._clients = clients
        cfg = self.config.health
        await probe_all(clients, self.workers, cfg, initial=True)
        await asyncio.gather(
            *(
                discover_capacity(clients[w.url], w, cfg.timeout_s, self.capacity_fallback)
                for w in self.workers
            )
        )
        self._task = asyncio.create_task(
            run_health_checks(
                clients,
                self.workers,
                cfg,
                on_change=self.on_change,
                capacity_fallback=self.capacity_fallback,
                on_probe=self.on_probe,
            ),
            name=f"health:{self.name}",
        )

    async def stop(self) -> None:
        """Stop the loop and close the probe clients."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await asyncio.gather(*(client.close() for client in self._clients.values()))
        self._clients = {}
