"""The simulated pool: workers (each an emulated SGLang scheduler), picker, admission, queue.

Used by :mod:`simulator.planner.des`; the pool objects are the gateway's own
(:class:`backends.sglang.worker.Worker` handles ordered by the pool's picker and
checked by :class:`backends.sglang.admission.KvAdmission`), the workers the
emulator's :class:`simulator.scheduler.Scheduler` with a radix cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from backends.sglang.admission import KvAdmission
from backends.sglang.config import HealthConfig
from backends.sglang.picking import Picker, PowerOfTwo, make_picker
from backends.sglang.worker import Worker
from gpu_catalog.capacity import Deployment, kv_pool
from gpu_catalog.server_defaults import default_max_running_requests, server_defaults
from gpu_catalog.specs import get_gpu, get_model
from gpu_catalog.steptime import PerfTuning, step_seconds
from simulator.planner.results import PoolStats
from simulator.planner.schema import Pool
from simulator.planner.sessions import Session
from simulator.radix_cache import RadixCache
from simulator.scheduler import Scheduler
from simulator.sequence import SequenceState, StepResult
from tollway.errors import ConfigError


@dataclass(eq=False)
class TurnSeq(SequenceState):
    """One turn as the scheduler sees it, plus what the simulator tracks about it."""

    session: Session | None = None
    submit_time: float = 0.0
    kv_tokens: int = 0
    last_token_time: float = 0.0
    state: str = "new"  # queued, running, done, shed
    worker: SimWorker | None = None


@dataclass(eq=False)
class SimWorker:
    """One emulated SGLang worker: the gateway's view of it and its scheduler."""

    handle: Worker
    scheduler: Scheduler
    pool: SimPool
    busy: bool = False
    step: StepResult | None = None


class SimPool:
    """A pool's workers, picker, KV admission ceiling and waiting queue."""

    def __init__(self, name: str, config: Pool, *, seed: int, tuning: PerfTuning) -> None:
        self.name = name
        self.config = config
        model = get_model(config.model.name)
        self.deployment = Deployment(
            get_gpu(config.gpu),
            model,
            config.model.tp,
            config.model.weights_dtype,
            config.model.kv_dtype,
        )
        self.defaults = server_defaults(self.deployment.gpu, self.deployment.tp)
        self.capacity = kv_pool(
            self.deployment, mem_fraction_static=config.mem_fraction_static
        ).max_total_num_tokens
        if self.capacity <= 0:
            raise ConfigError(
                f"{model.name} ({config.model.weights_dtype}) does not fit on "
                f"tp={config.model.tp} x {config.gpu}",
                path=f"pools.{name}.model",
            )
        self.context_length = model.context_length
        self.workers: list[SimWorker] = [
            SimWorker(
                handle=Worker(
                    url=f"{name}-{i}", health=HealthConfig(), capacity_tokens=self.capacity
                ),
                scheduler=self._scheduler(tuning),
                pool=self,
            )
            for i in range(config.workers)
        ]
        self._by_url = {w.handle.url: w for w in self.workers}
        self.picker: Picker = (
            PowerOfTwo(seed)
            if config.policy == "power_of_two"
            else make_picker(config.policy, config.overflow_factor)
        )
        self.admission = KvAdmission(
            headroom=config.kv_headroom,
            queue_size=config.queue_size,
            max_wait_s=config.max_queue_wait_s,
            quantum_tokens=1,
        )
        self.queue: list[tuple[int, int, TurnSeq]] = []
        self.queued = 0
        self.stats = PoolStats()

    def _scheduler(self, tuning: PerfTuning) -> Scheduler:
        c = self.config
        defaults = self.defaults
        return Scheduler(
            capacity=self.capacity,
            step_time=partial(
                step_seconds,
                self.deployment,
                tuning=tuning,
                cuda_graph_max_bs=defaults.cuda_graph_max_bs,
            ),
            context_length=self.context_length,
            max_running_requests=c.max_running_requests
            or default_max_running_requests(self.capacity, self.context_length),
            max_prefill_tokens=c.max_prefill_tokens,
            chunked_prefill_size=defaults.chunked_prefill_size,
            cache=RadixCache(),
        )

    def first_fit(self, seq: TurnSeq, affinity: str) -> SimWorker | None:
        """The first worker in the policy's order with KV room for ``seq``."""
        order = self.picker.order([w.handle for w in self.workers], affinity)
        for handle in order:
            if self.admission.fits(handle, seq.kv_tokens):
                return self._by_url[handle.url]
        return None
