"""The async engine: drives the :class:`~simulator.scheduler.Scheduler` on a clock.

One background task runs forward steps while there is work, sleeping each
step's modelled duration on the injected :class:`~simulator.clock.Clock`, then
tells every request in the batch how many tokens it now has. HTTP handlers
submit a planned output and read progress from a :class:`GenerationHandle`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from functools import partial

from gpu_catalog.capacity import Deployment, KvPool, kv_pool
from gpu_catalog.server_defaults import (
    DECODE_LOG_INTERVAL,
    IDLE_METRICS_INTERVAL_S,
    default_max_running_requests,
    server_defaults,
)
from gpu_catalog.specs import GpuSpec, ModelSpec, get_gpu, get_model
from gpu_catalog.steptime import step_seconds
from simulator.clock import Clock, InstantClock, ScaledClock
from simulator.config import EmulatorConfig
from simulator.generation import OutputPlan
from simulator.metrics import EmulatorMetrics
from simulator.scheduler import Scheduler
from simulator.sequence import SequenceState, StepResult
from simulator.tokenizer import Tokenizer


@dataclass(eq=False)
class GenerationHandle:
    """A submitted request: its planned output and a stream of progress updates."""

    seq: SequenceState
    plan: OutputPlan
    _queue: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens served from the prefix cache (known once admitted)."""
        return self.seq.cached_tokens

    async def progress(self) -> AsyncIterator[int]:
        """Yield the number of tokens generated so far, after each step that adds any."""
        while True:
            count = await self._queue.get()
            yield count
            if count >= len(self.plan) or self.seq.aborted:
                return

    async def wait(self) -> None:
        """Wait until the request has finished."""
        async for _ in self.progress():
            pass


def resolve_model(config: EmulatorConfig) -> tuple[GpuSpec, ModelSpec]:
    """The catalog entries the config names."""
    return get_gpu(config.gpu), get_model(config.model)


class Engine:
    """Continuous-batching engine of one emulated worker."""

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        metrics: EmulatorMetrics,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.gpu, self.model = resolve_model(config)
        self.deployment = Deployment(
            self.gpu, self.model, config.tp, config.weights_dtype, config.kv_dtype
        )
        self.defaults = server_defaults(
            self.gpu, config.tp, chunked_prefill_size=config.chunked_prefill_size
        )
        self.kv_pool: KvPool = kv_pool(
            self.deployment,
            mem_fraction_static=config.mem_fraction_static or self.defaults.mem_fraction_static,
        )
        capacity = (
            config.max_total_tokens
            if config.max_total_tokens is not None
            else self.kv_pool.max_total_num_tokens
        )
        if capacity <= 0:
            raise ValueError("Not enough memory. Please try to increase --mem-fraction-static.")
        self.context_length = config.context_length or self.model.context_length
        chunk = self.defaults.chunked_prefill_size
        self.scheduler = Scheduler(
            capacity=capacity,
            step_time=partial(
                step_seconds,
                self.deployment,
                tuning=config.tuning,
                cuda_graph_max_bs=self.defaults.cuda_graph_max_bs,
            ),
            context_length=self.context_length,
            max_running_requests=config.max_running_requests
            or default_max_running_requests(capacity, self.context_length),
            max_prefill_tokens=config.max_prefill_tokens,
            chunked_prefill_size=chunk if chunk > 0 else None,
            enable_mixed_chunk=config.enable_mixed_chunk,
        )
        self.clock: Clock = clock or (
            InstantClock() if config.instant else ScaledClock(config.speed)
        )
        self.metrics = metrics
        self.tokenizer = Tokenizer(self.model.vocab_size)
        self._handles: dict[str, GenerationHandle] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.gen_throughput = 0.0
        self._published_at = self.clock.now()
        self._stale = False
        self.publish_metrics()

    @property
    def max_total_num_tokens(self) -> int:
        """Size of the KV pool in tokens."""
        return self.scheduler.capacity

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the step loop (idempotent); needs a running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the step loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- requests ------------------------------------------------------------------------
    def submit(
        self,
        rid: str,
        prompt_ids: Sequence[int],
        plan: OutputPlan,
        *,
        max_new_tokens: int | None = None,
    ) -> GenerationHandle:
        """Queue a request; raises :class:`~simulator.scheduler.AdmissionError` if it never fits.

        ``max_new_tokens`` is the client's output cap (``None``: none given),
        which admission reserves against; ``plan`` is what will be produced.
        """
        seq = SequenceState(
            rid=f"{rid}#{next(self._ids)}",
            prompt_ids=tuple(prompt_ids),
            output_len=max(1, len(plan)),
            arrival_time=self.clock.now(),
            max_new_tokens=max_new_tokens,
            output_ids=plan.token_ids,
        )
        self.scheduler.submit(seq)
        handle = GenerationHandle(seq, plan)
        self._handles[seq.rid] = handle
        self._stale = True
        self.start()
        self._wake.set()
        return handle

    def abort(self, handle: GenerationHandle) -> None:
        """Abort a request that has not finished (e.g. its client disconnected)."""
        if handle.seq.finished:
            return
        self.scheduler.abort(handle.seq)
        self._handles.pop(handle.seq.rid, None)
        handle._queue.put_nowait(handle.seq.generated)
        self.metrics.observe_aborted()
        self._stale = True
        self._wake.set()

    def flush_cache(self) -> bool:
        """Empty the prefix cache when idle (SGLang refuses while requests are in flight)."""
        return self.scheduler.flush_cache()

    # -- loop ----------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self.scheduler.has_work:
                await self._idle()
                continue
            running_before = len(self.scheduler.running)
            result = self.scheduler.step(self.clock.now())
            if result.kind == "idle":
                await self._idle()
                continue
            if result.kind == "prefill":
                # SGLang logs its gauges when it forms a prefill batch (``log_prefill_stats``).
                self.publish_metrics(running=running_before)
            await self.clock.sleep(result.duration)
            self._deliver(result)

    async def _idle(self) -> None:
        """Wait for work; refresh stale gauges once they are 30 s old (``check_memory``)."""
        self._wake.clear()
        if not self._stale:
            await self._wake.wait()
            return
        due = self._published_at + IDLE_METRICS_INTERVAL_S - self.clock.now()
        woken = asyncio.ensure_future(self._wake.wait())
        timer = asyncio.ensure_future(self.clock.sleep(max(0.0, due)))
        try:
            await asyncio.wait((woken, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
            timer.cancel()
        if not self._wake.is_set():
            self.publish_metrics()

    def _deliver(self, result: StepResult) -> None:
        if result.kind == "decode" and result.duration > 0:
            self.gen_throughput = len(result.batch) / result.duration
            self.metrics.observe_inter_token(result.duration, 1)
        for seq in result.batch:
            first = seq.generated == 1
            if result.kind == "prefill" and first and seq.admitted_time is not None:
                self.metrics.observe_queue_time(seq.admitted_time - seq.arrival_time)
                if seq.first_token_time is not None:
                    self.metrics.observe_first_token(seq.first_token_time - seq.arrival_time)
            handle = self._handles.get(seq.rid)
            if handle is not None:
                handle._queue.put_nowait(seq.generated)
        for seq in result.finished:
            self._handles.pop(seq.rid, None)
            self.metrics.observe_finished(
                prompt_tokens=len(seq.prompt_ids),
                generation_tokens=seq.generated,
                cached_tokens=seq.cached_tokens,
                e2e=(seq.finish_time or 0.0) - seq.arrival_time,
            )
        if result.kind == "decode" and self.scheduler.stats.decode_steps % DECODE_LOG_INTERVAL == 0:
            # ... and every ``decode_log_interval`` decode steps (``log_decode_stats``).
            self.publish_metrics()
        else:
            self._stale = True

    def publish_metrics(self, *, running: int | None = None) -> None:
        """Push the scheduler's current state into the gauges.

        SGLang refreshes them when it forms a prefill batch (``running`` is then
        the batch running before it), every 40 decode steps and every 30 s
        while idle; between refreshes ``/metrics`` shows the last values, while
        ``/get_load`` is always current.
        """
        s = self.scheduler
        self._published_at = self.clock.now()
        self._stale = False
        self.metrics.set_scheduler_state(
            running=len(s.running) if running is None else running,
            queued=len(s.waiting),
            used_tokens=s.used_tokens,
            token_usage=s.token_usage,
            cache_hit_rate=s.stats.last_cache_hit_rate,
            gen_throughput=self.gen_throughput if s.running else 0.0,
            max_total_num_tokens=s.capacity,
        )


async def merge_progress(handles: Sequence[GenerationHandle]) -> AsyncIterator[tuple[int, int]]:
    """Progress of several handles as ``(index, generated)`` pairs, in arrival order."""
    queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()

    async def forward(index: int, handle: GenerationHandle) -> None:
        async for count in handle.progress():
            queue.put_nowait((index, count))
        queue.put_nowait(None)

    tasks = [asyncio.ensure_future(forward(i, h)) for i, h in enumerate(handles)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
