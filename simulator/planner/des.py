"""The discrete-event simulation behind ``tollway plan``.

Agent sessions arrive (Poisson, per agent type), send a turn, wait for its last
token, wait for their tools, send the next turn with a longer context, until
their turn count is reached. Each turn goes through the same machinery the
gateway and the emulator use:

* **routing**: the pool's worker-selection policy
  (:func:`backends.sglang.picking.make_picker`; ``cache_aware`` keeps a session
  on the worker that holds its prefix);
* **admission**: :meth:`backends.sglang.admission.KvAdmission.fits`, the KV
  ceiling at ``kv_headroom``; a turn that fits nowhere waits in the pool's
  queue (priority first, then arrival order, strictly in order as the gateway
  does) and is shed when the queue is full or after ``max_queue_wait_s``;
* **serving**: one :class:`simulator.scheduler.Scheduler` per worker, the
  emulator's continuous-batching scheduler with its radix prefix cache, timed
  by :mod:`gpu_catalog.capacity` (roofline decode, FLOP-bound prefill).

Time is simulated: a heap of ``(time, sequence number, kind, subject)`` events,
nothing sleeps. Ties are broken by the sequence number and every random draw
comes from a per-agent-type generator seeded from the workload's seed, so a run
is a pure function of its inputs. All of a session's random quantities are drawn
when it arrives, so two pool layouts see exactly the same traffic.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from typing import Any

from gpu_catalog.steptime import DEFAULT_TUNING, PerfTuning
from simulator.planner.results import PlanResult, summarize
from simulator.planner.schema import PoolsFile, Workload
from simulator.planner.sessions import Session, TokenIds, draw_plan
from simulator.planner.workers import SimPool, SimWorker, TurnSeq

_ARRIVAL, _TURN, _STEP_END, _QUEUE_TIMEOUT = range(4)

#: Called with the fraction of the arrival window simulated so far (0..1).
Progress = Callable[[float], None]


class Simulation:
    """One run of a workload on a set of pools; :meth:`run` returns the result."""

    def __init__(
        self,
        workload: Workload,
        pools: PoolsFile,
        *,
        load_scale: float = 1.0,
        pool_names: set[str] | None = None,
        tuning: PerfTuning = DEFAULT_TUNING,
        progress: Progress | None = None,
    ) -> None:
        if load_scale <= 0:
            raise ValueError(f"load_scale must be > 0, got {load_scale}")
        self.workload = workload
        self.pools_file = pools
        self.load_scale = load_scale
        names = set(pools.pools) if pool_names is None else pool_names
        self.pools = {
            name: SimPool(name, pools.pools[name], seed=workload.seed, tuning=tuning)
            for name in sorted(names)
        }
        self.progress = progress
        self.ids = TokenIds()
        self.systems = {
            name: self.ids.fresh(agent.system_prompt_tokens)
            for name, agent in workload.agents.items()
        }
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self._session_no = itertools.count()
        self._started: dict[str, int] = {}
        self.now = 0.0
        self.last_completion = 0.0
        self.events = 0

    # -- the event loop ----------------------------------------------------------------
    def _push(self, at: float, kind: int, subject: Any) -> None:
        heapq.heappush(self._heap, (at, next(self._seq), kind, subject))

    def run(self) -> PlanResult:
        """Simulate until every session is done or the drain time is over."""
        wl = self.workload
        rngs: dict[str, random.Random] = {}
        for name, agent in wl.agents.items():
            if agent.pool in self.pools:
                rngs[name] = random.Random(f"{wl.seed}/{name}")
                self._push(self._gap(rngs[name], name), _ARRIVAL, name)
        horizon = wl.duration_s + wl.drain_s
        report_every = 4096
        while self._heap:
            at, _, kind, subject = heapq.heappop(self._heap)
            if at > horizon:
                break
            self.now = at
            self.events += 1
            if kind == _STEP_END:
                self._on_step_end(subject)
            elif kind == _TURN:
                self._submit_turn(subject)
            elif kind == _ARRIVAL:
                self._on_arrival(subject, rngs[subject])
            else:
                self._on_queue_timeout(subject)
            if self.progress is not None and self.events % report_every == 0:
                self.progress(min(1.0, at / wl.duration_s))
        if self.progress is not None:
            self.progress(1.0)
        return self._result()

    def _gap(self, rng: random.Random, agent: str) -> float:
        rate = self.workload.agents[agent].sessions_per_minute * self.load_scale / 60
        return rng.expovariate(rate)

    # -- sessions ------------------------------------------------------------------------
    def _on_arrival(self, agent_name: str, rng: random.Random) -> None:
        agent = self.workload.agents[agent_name]
        session = Session(
            sid=f"{agent_name}-{next(self._session_no)}",
            agent=agent_name,
            pool=agent.pool,
            priority=agent.priority,
            plan=draw_plan(rng, agent),
            system=self.systems[agent_name],
            compression=agent.compression,
            arrival_time=self.now,
        )
        self.pools[agent.pool].stats.sessions_started += 1
        self._started[agent_name] = self._started.get(agent_name, 0) + 1
        nxt = self.now + self._gap(rng, agent_name)
        more = agent.max_sessions is None or self._started[agent_name] < agent.max_sessions
        if more and nxt < self.workload.duration_s:
            self._push(nxt, _ARRIVAL, agent_name)
        self._submit_turn(session)

    def _submit_turn(self, session: Session) -> None:
        pool = self.pools[session.pool]
        prompt = session.next_prompt(self.ids)
        out = session.plan.output_tokens[session.turn]
        seq = TurnSeq(
            rid=f"{session.sid}/{session.turn}",
            prompt_ids=prompt,
            output_len=out,
            arrival_time=self.now,
            max_new_tokens=out,
            session=session,
            submit_time=self.now,
            kv_tokens=len(prompt) + out,
        )
        seq.output_ids = self.ids.fresh(out)
        if len(prompt) >= pool.context_length or seq.kv_tokens > pool.capacity:
            self._reject(pool, seq)  # the gateway would answer 400: it can never run
            return
        if pool.queued == 0:
            worker = pool.first_fit(seq, session.sid)
            if worker is not None:
                self._start(seq, worker)
                return
        if pool.queued >= pool.config.queue_size:
            self._reject(pool, seq)
            return
        seq.state = "queued"
        heapq.heappush(pool.queue, (-session.priority, next(self._seq), seq))
        pool.queued += 1
        self._push(self.now + pool.config.max_queue_wait_s, _QUEUE_TIMEOUT, seq)

    def _reject(self, pool: SimPool, seq: TurnSeq) -> None:
        seq.state = "shed"
        pool.admission.shed += 1
        pool.stats.turns_rejected += 1
        pool.stats.sessions_failed += 1
        assert seq.session is not None
        seq.session.failed = True

    def _on_queue_timeout(self, seq: TurnSeq) -> None:
        if seq.state != "queued" or seq.worker is not None:
            return
        assert seq.session is not None
        pool = self.pools[seq.session.pool]
        pool.queued -= 1
        self._reject(pool, seq)

    def _dispatch(self, pool: SimPool) -> None:
        """Admit queued turns strictly in order while the head fits somewhere."""
        while pool.queue:
            seq = pool.queue[0][2]
            if seq.state != "queued":
                heapq.heappop(pool.queue)
                continue
            assert seq.session is not None
            worker = pool.first_fit(seq, seq.session.sid)
            if worker is None:
                return
            heapq.heappop(pool.queue)
            pool.queued -= 1
            self._start(seq, worker)

    def _start(self, seq: TurnSeq, worker: SimWorker) -> None:
        handle = worker.handle
        handle.in_flight += 1
        handle.projected_tokens += seq.kv_tokens
        worker.pool.admission.admitted += 1
        worker.pool.stats.queue_wait.append(self.now - seq.submit_time)
        seq.state = "running"
        seq.worker = worker
        worker.scheduler.submit(seq)
        self._kick(worker)

    # -- workers -------------------------------------------------------------------------
    def _kick(self, worker: SimWorker) -> None:
        if worker.busy or not worker.scheduler.has_work:
            return
        result = worker.scheduler.step(self.now)
        if result.kind == "idle":
            return
        worker.busy = True
        worker.step = result
        stats = worker.pool.stats
        usage = worker.scheduler.token_usage
        stats.kv_usage_area += usage * result.duration
        stats.kv_usage_peak = max(stats.kv_usage_peak, usage)
        stats.busy_time += result.duration
        self._push(self.now + result.duration, _STEP_END, worker)

    def _on_step_end(self, worker: SimWorker) -> None:
        result = worker.step
        assert result is not None
        worker.busy = False
        worker.step = None
        stats = worker.pool.stats
        now = self.now
        gaps: dict[float, int] = {}
        for seq in result.batch:
            assert isinstance(seq, TurnSeq)
            if seq.generated == 1:
                stats.ttft.append(now - seq.submit_time)
            else:  # a decode step, or the re-prefill of a retracted turn
                gap = now - seq.last_token_time
                gaps[gap] = gaps.get(gap, 0) + 1
            seq.last_token_time = now
        for gap, count in gaps.items():
            stats.add_itl(gap, count)
        for seq in result.finished:
            assert isinstance(seq, TurnSeq)
            self._finish(worker, seq)
        if result.finished:
            self._dispatch(worker.pool)
        self._kick(worker)

    def _finish(self, worker: SimWorker, seq: TurnSeq) -> None:
        stats = worker.pool.stats
        stats.turns_completed += 1
        stats.prompt_tokens += len(seq.prompt_ids)
        stats.cached_tokens += seq.cached_tokens
        stats.output_tokens += seq.generated
        stats.e2e.append(self.now - seq.submit_time)
        self.last_completion = self.now
        handle = worker.handle
        handle.in_flight -= 1
        handle.projected_tokens = max(0, handle.projected_tokens - seq.kv_tokens)
        seq.state = "done"
        session = seq.session
        assert session is not None
        session.record_output(seq.output_ids)
        if session.finished:
            stats.sessions_completed += 1
        else:
            self._push(self.now + session.plan.tool_waits[session.turn - 1], _TURN, session)

    # -- results -------------------------------------------------------------------------
    def _result(self) -> PlanResult:
        span = max(self.workload.duration_s, self.last_completion)
        results = {}
        for name, pool in self.pools.items():
            c = pool.config
            results[name] = summarize(
                pool.stats,
                pool=name,
                gpu=c.gpu,
                model=c.model.name,
                tp=c.model.tp,
                workers=c.workers,
                kv_pool_tokens=pool.capacity,
                span_s=span,
                billed_s=self.workload.duration_s,
                price_per_gpu_hour=self.pools_file.price(c.gpu),
            )
        return PlanResult(
            seed=self.workload.seed,
            load_scale=self.load_scale,
            duration_s=self.workload.duration_s,
            pools=results,
            events=self.events,
        )


def simulate(
    workload: Workload,
    pools: PoolsFile,
    *,
    load_scale: float = 1.0,
    pool_names: set[str] | None = None,
    tuning: PerfTuning = DEFAULT_TUNING,
    progress: Progress | None = None,
) -> PlanResult:
    """Run ``workload`` on ``pools`` (or only the named ones and the agents they serve)."""
    return Simulation(
        workload,
        pools,
        load_scale=load_scale,
        pool_names=pool_names,
        tuning=tuning,
        progress=progress,
    ).run()
