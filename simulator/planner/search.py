"""``tollway plan --search``: the cheapest pool mix that meets the workload's targets.

Each agent type is served by one pool and pools share nothing, so each pool is
searched on its own, with only the agents it serves. For every GPU kind the
pool may use (``search.gpus``, default its own) and for the smallest tensor-
parallel degree that fits the model and twice that, the search bisects the
worker count in ``1..search.max_workers`` for the fewest workers whose
simulated p99 TTFT and p99 ITL meet the targets (and that complete enough
sessions), assuming more workers never hurt. The cheapest option per GPU-hour
wins; ties go to fewer GPUs. Options that cannot beat the best so far even
with one worker are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gpu_catalog.capacity import smallest_tp_that_fits
from gpu_catalog.specs import get_gpu, get_model
from simulator.planner.des import simulate
from simulator.planner.results import PoolResult
from simulator.planner.schema import Pool, PoolsFile, Targets, Workload
from tollway.errors import ConfigError

#: Called after each simulation with (simulations run, estimated total).
SearchProgress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One simulated layout of a pool."""

    gpu: str
    tp: int
    workers: int
    cost_per_hour: float
    meets: bool
    result: PoolResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "gpu": self.gpu,
            "tp": self.tp,
            "workers": self.workers,
            "gpus": self.tp * self.workers,
            "cost_per_hour": self.cost_per_hour,
            "meets_targets": self.meets,
            "result": self.result.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class PoolChoice:
    """The search's answer for one pool: the chosen layout (or none) and all it tried."""

    pool: str
    chosen: Candidate | None
    tried: tuple[Candidate, ...]
    note: str = ""
    served: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "pool": self.pool,
            "chosen": self.chosen.to_dict() if self.chosen else None,
            "note": self.note,
            "tried": [
                {"gpu": c.gpu, "tp": c.tp, "workers": c.workers, "meets_targets": c.meets}
                for c in self.tried
            ],
        }


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The cheapest mix found, pool by pool."""

    targets: Targets
    choices: dict[str, PoolChoice]

    @property
    def feasible(self) -> bool:
        """Whether every pool that serves traffic has a layout meeting the targets."""
        return all(c.chosen is not None for c in self.choices.values() if c.served)

    @property
    def cost_per_hour(self) -> float:
        """USD per hour of the chosen layouts."""
        return sum(c.chosen.cost_per_hour for c in self.choices.values() if c.chosen)

    def pools_file(self, original: PoolsFile) -> PoolsFile:
        """``original`` with every chosen layout applied (a file ``tollway plan`` accepts)."""
        pools = dict(original.pools)
        for name, choice in self.choices.items():
            if choice.chosen is not None:
                pools[name] = _layout(pools[name], choice.chosen.gpu, choice.chosen.tp)
                pools[name] = pools[name].model_copy(update={"workers": choice.chosen.workers})
        return original.model_copy(update={"pools": pools})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "targets": self.targets.model_dump(),
            "feasible": self.feasible,
            "cost_per_hour": self.cost_per_hour,
            "pools": {name: c.to_dict() for name, c in self.choices.items()},
        }


def _layout(pool: Pool, gpu: str, tp: int) -> Pool:
    model = pool.model.model_copy(update={"tp": tp})
    return pool.model_copy(update={"gpu": gpu, "model": model})


def _options(pool: Pool) -> list[tuple[str, int]]:
    """(GPU, TP) layouts worth trying for ``pool``."""
    model = get_model(pool.model.name)
    out: list[tuple[str, int]] = []
    for gpu in pool.search.gpus or [pool.gpu]:
        tp = smallest_tp_that_fits(
            get_gpu(gpu),
            model,
            weights_dtype=pool.model.weights_dtype,
            kv_dtype=pool.model.kv_dtype,
            min_kv_tokens=4096,
        )
        if tp is None:
            continue
        for option in (tp, tp * 2):
            if option <= 8 and (gpu, option) not in out:
                out.append((gpu, option))
    return out


class _Searcher:
    """Runs the trials of one search and counts them for the progress callback."""

    def __init__(
        self, workload: Workload, pools: PoolsFile, progress: SearchProgress | None
    ) -> None:
        assert workload.targets is not None
        self.workload = workload
        self.pools = pools
        self.targets: Targets = workload.targets
        self.progress = progress
        self.done = 0
        self.estimate = 0

    def trial(self, name: str, pool: Pool, gpu: str, tp: int, workers: int) -> Candidate:
        layout = _layout(pool, gpu, tp).model_copy(update={"workers": workers})
        trial = self.pools.model_copy(update={"pools": {name: layout}})
        result = simulate(self.workload, trial, pool_names={name}).pools[name]
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, max(self.estimate, self.done))
        cost = self.pools.price(gpu) * tp * workers
        return Candidate(gpu, tp, workers, cost, result.meets(self.targets), result)

    def pool(self, name: str, pool: Pool, options: list[tuple[str, int]]) -> PoolChoice:
        options = sorted(options, key=lambda o: (self.pools.price(o[0]) * o[1], o[1]))
        tried: list[Candidate] = []
        best: Candidate | None = None
        for gpu, tp in options:
            unit = self.pools.price(gpu) * tp
            if best is not None and unit > 0 and unit >= best.cost_per_hour:
                continue  # even one worker costs as much as the best so far
            top = self.trial(name, pool, gpu, tp, pool.search.max_workers)
            tried.append(top)
            if not top.meets:
                continue
            lo, hi, found = 1, pool.search.max_workers, top
            while lo < hi:
                mid = (lo + hi) // 2
                candidate = self.trial(name, pool, gpu, tp, mid)
                tried.append(candidate)
                if candidate.meets:
                    hi, found = mid, candidate
                else:
                    lo = mid + 1
            key = (found.cost_per_hour, found.tp * found.workers)
            if best is None or key < (best.cost_per_hour, best.tp * best.workers):
                best = found
        note = "" if best is not None else "no layout tried meets the targets"
        return PoolChoice(name, best, tuple(tried), note=note)


def search(
    workload: Workload, pools: PoolsFile, *, progress: SearchProgress | None = None
) -> SearchResult:
    """The cheapest layout of every pool that meets ``workload.targets``."""
    if workload.targets is None:
        raise ConfigError("--search needs latency targets in the workload file", path="targets")
    served = {agent.pool for agent in workload.agents.values()}
    plans = {name: _options(pool) for name, pool in pools.pools.items() if name in served}
    searcher = _Searcher(workload, pools, progress)
    searcher.estimate = sum(
        len(o) * (pools.pools[n].search.max_workers.bit_length() + 1) for n, o in plans.items()
    )
    choices: dict[str, PoolChoice] = {}
    for name, pool in pools.pools.items():
        if name in served:
            choices[name] = searcher.pool(name, pool, plans[name])
        else:
            choices[name] = PoolChoice(
                name, None, (), note="no agent type uses this pool", served=False
            )
    return SearchResult(workload.targets, choices)
