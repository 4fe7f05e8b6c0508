"""A pool of SGLang workers behind the :class:`backends.base.Backend` interface.

A request no worker's whole KV pool can hold is refused with 400 before
anything else (:mod:`backends.sglang.capacity`). For each request the pool's
policy orders the usable workers (healthy, and
their circuit breaker admits traffic; cache-aware by default), KV admission
takes the first with room under the ceiling (or lets the request wait briefly
for its session's home worker, or queues it fairly), and the request is
forwarded over a pooled keep-alive connection (:mod:`backends.sglang.transport`).
The KV tokens reserved on the worker are given back exactly once, when the
response ends or the attempt fails.

Reliability, per request:

* A worker that refuses the connection is marked down and the request goes to
  the next one at once (nothing left the gateway, so no backoff is needed).
* Any other retryable failure (:func:`backends.retry.is_retryable`: the
  worker's 429, 502, 503, 504 or 408, a timeout, a dropped connection, an
  answer that is not HTTP) is retried by :func:`backends.retry.retry_call`
  with backoff and jitter, on a worker not tried yet when there is one, within
  ``timeouts.total_s``. The 4xx the request caused, the worker's 500 and a
  body over ``response_limits.max_body_bytes`` are final.
* :meth:`SGLangPool.send` returns once the response headers are in (a whole
  body for a non-streaming call). That is the point of no return: from there
  on bytes may reach the client, and nothing is retried.
* Each worker has a :class:`~backends.sglang.circuit.CircuitBreaker`, fed by
  request outcomes and health checks. A worker whose breaker is open gets no
  traffic; when every healthy worker's breaker is open the pool answers 503
  with ``Retry-After`` at once instead of queueing. A streaming request's
  outcome is known only when its stream ends (a broken stream is a failure).
  A 4xx the request caused counts as a success: the worker is fine, the
  request was not.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

from backends.base import ShareClock, ShareMeter, UpstreamRequest, UpstreamResponse
from backends.http1 import Http1Pool
from backends.ratelimit import UpstreamRateLimiter
from backends.retry import is_retryable, retry_call
from backends.sglang.admission import KvAdmission, KvNeed, Reservation
from backends.sglang.capacity import check_fits, least_kv_tokens
from backends.sglang.circuit import CircuitBreaker, CircuitState
from backends.sglang.config import PoolConfig
from backends.sglang.health import HealthChecks
from backends.sglang.picking import make_picker
from backends.sglang.prefix import previous_prompt_tokens
from backends.sglang.transport import (
    ConnectFailed,
    error_from_upstream,
    iter_chunks,
    request_client,
    translate_errors,
)
from backends.sglang.verdict import Verdict, watched
from backends.sglang.worker import Worker
from tollway.errors import (
    ContextLengthExceeded,
    TollwayError,
    UpstreamError,
    UpstreamRejected,
    UpstreamUnavailable,
)

log = logging.getLogger("tollway.pool")


def _with_priority(body: bytes, priority: int) -> bytes:
    """Splice SGLang's ``priority`` field into a JSON object body without re-encoding it."""
    return b'{"priority":%d,' % priority + body[1:] if body[:1] == b"{" else body


@dataclass(slots=True)
class _Tries:
    """What one request has been through, across its attempts."""

    deadline: float
    #: Workers already sent this request (the next attempt prefers the others).
    tried: set[str] = field(default_factory=set)
    #: No usable worker was left: another attempt would fail the same way.
    exhausted: bool = False


class SGLangPool:
    """Workers serving one model; the backend for routes ``pool:<name>``."""

    def __init__(
        self,
        name: str,
        config: PoolConfig,
        share_meter: ShareMeter | None = None,
    ) -> None:
        self.name = name
        self.share_meter = share_meter
        self.config = config
        self.route = f"pool:{name}"
        self.upstream_model = config.model.upstream_name
        self.workers = [Worker(url=url, health=config.health) for url in config.workers]
        #: Each worker's public id, by URL: its place in the configured list (``w0``,
        #: ``w1``, …), the same in every replica. Clients see it in ``x-tollway-route``
        #: and in error messages, never the worker's URL (kept for logs and metrics).
        self.worker_ids = {w.url: f"w{i}" for i, w in enumerate(self.workers)}
        #: Each worker's circuit breaker, by URL.
        self.breakers = {w.url: self._make_breaker(w) for w in self.workers}
        self.picker = make_picker(config.policy, config.overflow_factor)
        a = config.admission
        self.admission = KvAdmission(
            headroom=config.kv_headroom,
            queue_size=a.queue_size,
            max_wait_s=a.max_wait_s,
            quantum_tokens=a.quantum_tokens,
            home_wait_s=a.home_wait_s,
        )
        self.rate_limiter = (
            UpstreamRateLimiter(name, config.max_requests_per_s, max_wait_s=config.max_wait_s)
            if config.max_requests_per_s is not None
            else None
        )
        #: Probes, load scrapes and capacity discovery, over connections of their own.
        self.health = HealthChecks(
            name, self.workers, config, on_change=self.admission.wake, on_probe=self._probed
        )
        #: Requests refused because no worker's whole KV pool can hold them.
        self.too_large = 0
        #: Each worker's request connections, by URL (one keep-alive pool per worker).
        self._clients: dict[str, Http1Pool] = {}

    def _make_breaker(self, worker: Worker) -> CircuitBreaker:
        def changed(old: CircuitState, new: CircuitState) -> None:
            log.warning(
                "worker %s circuit %s -> %s", worker.url, old.name.lower(), new.name.lower()
            )
            worker.circuit_state = int(new)
            self._wake_soon()

        return CircuitBreaker(self.config.circuit, on_change=changed)

    def _wake_soon(self) -> None:
        """Re-check the admission queue on the next loop turn.

        Not at once: a breaker can change state while the queue is being
        dispatched (reading it half-opens an expired open breaker).
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_soon(self.admission.wake)

    def _probed(self, worker: Worker, ok: bool) -> None:
        self.breakers[worker.url].record_probe(ok)

    async def start(self) -> None:
        """Open the connection pools, probe every worker, learn capacities, start checks."""
        log.info(
            "pool %s workers: %s",
            self.name,
            ", ".join(f"{wid}={url}" for url, wid in self.worker_ids.items()),
        )
        self._clients = {w.url: request_client(w.url, self.config) for w in self.workers}
        await self.health.start()

    async def stop(self) -> None:
        """Stop health checks and close the connections this pool opened."""
        await self.health.stop()
        await asyncio.gather(*(client.close() for client in self._clients.values()))
        self._clients = {}

    def is_ready(self) -> bool:
        return any(w.healthy for w in self.workers)

    async def send(self, request: UpstreamRequest) -> UpstreamResponse:
        """Admit, forward, fail over and retry; return once the response headers are in.

        Returning is the point of no return (see the module docstring): every
        retry happens inside this call, none after it.
        """
        try:
            check_fits(request, self.workers, self.config.model.name)
        except ContextLengthExceeded:
            self.too_large += 1
            raise
        if self.rate_limiter is not None:
            await self.rate_limiter.acquire()
        body = request.body
        if self.config.priority_scheduling:
            body = _with_priority(body, request.priority)
        total = request.total_timeout_s or self.config.timeouts.total_s
        tries = _Tries(deadline=time.monotonic() + total)

        def retryable(exc: BaseException) -> bool:
            return is_retryable(exc) and not tries.exhausted

        def retrying(number: int, exc: TollwayError, delay: float) -> None:
            log.info(
                "request %s: attempt %d failed (%s); retrying in %.2fs",
                request.request_id,
                number,
                exc.code,
                delay,
            )

        return await retry_call(
            lambda number: self._attempt(request, body, tries, number),
            self.config.retry,
            deadline=tries.deadline,
            on_retry=retrying,
            retryable=retryable,
        )

    async def _attempt(
        self, request: UpstreamRequest, body: bytes, tries: _Tries, number: int
    ) -> UpstreamResponse:
        """One attempt: admit to a usable worker, failing over at once on a refused connection."""
        excluded: set[str] = set()

        def order() -> list[Worker]:
            usable = [
                w
                for w in self.workers
                if w.healthy and w.url not in excluded and self.breakers[w.url].available()
            ]
            if not usable:
                return []
            ranked = self.picker.order(usable, request.affinity)
            if not tries.tried:
                return ranked
            fresh = [w for w in ranked if w.url not in tries.tried]
            return fresh + [w for w in ranked if w.url in tries.tried]

        total = request.total_timeout_s or self.config.timeouts.total_s
        timeout = total if number == 1 else self._remaining(tries.deadline, total)
        need = self._need(request, tries)
        refused: ConnectFailed | None = None
        while True:
            try:
                reservation = await self.admission.acquire(
                    order, need, tenant=request.tenant, priority=request.priority
                )
            except UpstreamUnavailable as exc:
                tries.exhausted = True
                raise self._no_usable_worker(refused is not None) from (refused or exc)
            worker = reservation.worker
            breaker = self.breakers[worker.url]
            if not breaker.allow():
                # A half-open breaker's probe slot went to another request meanwhile.
                self.admission.release(reservation)
                excluded.add(worker.url)
                continue
            verdict = Verdict(breaker)
            tries.tried.add(worker.url)
            try:
                response = await self._send_to(reservation, request, body, verdict, timeout)
            except ConnectFailed as exc:
                log.warning("worker %s refused a connection; marking it down", worker.url)
                verdict.failure()
                worker.mark_down()
                excluded.add(worker.url)
                refused = exc
                continue
            except UpstreamRejected:
                verdict.success()  # the worker is fine; the request was not
                raise
            except UpstreamError:
                verdict.failure()
                raise
            except BaseException:
                verdict.release()
                raise
            if response.stream is None:
                verdict.success()
            return response

    def _need(self, request: UpstreamRequest, tries: _Tries) -> KvNeed:
        """The request's KV need, with its home worker while it has not been tried elsewhere.

        After a failed attempt the next one prefers other workers, so it has no home.
        """
        least = least_kv_tokens(request)
        if request.affinity is None or tries.tried:
            return KvNeed(request.kv_tokens, least=least)
        usable = [w for w in self.workers if w.healthy and self.breakers[w.url].available()]
        home = self.picker.home(usable, request.affinity)
        if home is None:
            return KvNeed(request.kv_tokens, least=least)
        cached = 0
        if self.config.admission.home_prefix_discount:
            cached = min(previous_prompt_tokens(request.payload), request.kv_tokens)
        return KvNeed(request.kv_tokens, home.url, cached, least)

    @staticmethod
    def _remaining(deadline: float, total: float) -> float:
        """The total timeout, cut to what is left until ``deadline``."""
        return max(0.001, min(total, deadline - time.monotonic()))

    def _no_usable_worker(self, refused: bool) -> UpstreamUnavailable:
        """The 503 for a request that found no worker to go to."""
        healthy = [w for w in self.workers if w.healthy]
        blocked = [self.breakers[w.url] for w in healthy]
        if healthy and not any(b.available() for b in blocked):
            wait = min(b.retry_after_s() for b in blocked)
            return UpstreamUnavailable(
                f"pool {self.name}: every worker's circuit breaker is open",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        if not refused and any(b.available() for b in blocked):
            # Healthy workers are left, none whose whole KV pool can hold the request.
            return UpstreamUnavailable(
                f"pool {self.name} has no healthy worker whose KV cache can hold the request"
            )
        why = "reachable" if refused else "healthy"
        return UpstreamUnavailable(f"pool {self.name} has no {why} worker")

    async def _send_to(
        self,
        reservation: Reservation,
        request: UpstreamRequest,
        body: bytes,
        verdict: Verdict,
        total_s: float,
    ) -> UpstreamResponse:
        """Forward to the reserved worker; release the reservation when done.

        A stream's end gives ``verdict``; the caller gives it otherwise.
        """
        worker = reservation.worker
        headers = [
            (b"content-type", b"application/json"),
            (b"x-request-id", request.request_id.encode("latin-1")),
        ]
        worker.in_flight += 1
        share = ShareClock(self.share_meter, worker.url)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                share.stop()
                worker.in_flight -= 1
                self.admission.release(reservation)

        label = f"{self.name}/{self.worker_ids[worker.url]}"
        route = f"{self.route}/{self.worker_ids[worker.url]}"
        try:
            with translate_errors(label):
                resp = await self._clients[worker.url].request(
                    "POST",
                    request.path,
                    headers,
                    body,
                    first_byte_timeout_s=(
                        request.first_byte_timeout_s or self.config.timeouts.first_byte_s
                    ),
                    total_timeout_s=total_s,
                )
                if resp.status >= 300 or not request.stream:
                    try:
                        content = await resp.read()  # gives the connection back itself
                    finally:
                        resp.release()
                    if resp.status >= 300:
                        raise error_from_upstream(resp.status, content, label, resp.header_map())
                    release()
                    return UpstreamResponse(
                        status=resp.status,
                        route=route,
                        worker=worker.url,
                        body=content,
                        share=share,
                    )
        except BaseException:
            release()
            raise

        async def close() -> None:
            resp.release()
            release()
            verdict.release()

        return UpstreamResponse(
            status=resp.status,
            route=route,
            worker=worker.url,
            stream=watched(iter_chunks(resp, label), verdict),
            share=share,
            _close=close,
            _failed=verdict.error,
        )
