"""The synchronous heart of the emulator: continuous batching over a KV pool.

:class:`Scheduler` owns the waiting queue, the running batch, the radix prefix
cache and the KV-slot accounting. It has no clock and no asyncio: each call to
:meth:`Scheduler.step` runs one forward step (a prefill batch, else a decode
step for every running sequence) and returns how long it took according to the
performance model. The async :class:`~simulator.engine.Engine` sleeps that long
on its clock; the discrete-event simulator advances virtual time instead.

Policy, close to SGLang's defaults:

* first come, first served; a request is admitted when its uncached prompt
  plus its output fit in the free slots (evicting unlocked cache leaves LRU
  first). Output length is known up front here, so the full output is reserved
  and a running request never has to be retracted.
* a prefill batch (up to ``max_prefill_tokens`` uncached tokens) runs on its
  own and emits each request's first token; otherwise one decode step emits
  one token for every running request.
* the prompt enters the prefix cache at admission (later copies of the same
  prompt, e.g. ``n > 1``, hit it); the whole sequence is cached when the
  request finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from simulator.radix_cache import RadixCache, RadixNode


class AdmissionError(ValueError):
    """The request can never run on this worker (too long for the pool or context)."""


@dataclass(eq=False)
class SequenceState:
    """One generation request as the scheduler sees it."""

    rid: str
    prompt_ids: Sequence[int]
    output_len: int
    arrival_time: float
    cached_tokens: int = 0
    generated: int = 0
    reserved: int = 0
    node: RadixNode | None = None
    output_ids: Sequence[int] = ()
    admitted_time: float | None = None
    first_token_time: float | None = None
    finish_time: float | None = None
    aborted: bool = False

    @property
    def finished(self) -> bool:
        """Whether every planned token has been produced (or the request was aborted)."""
        return self.aborted or self.generated >= self.output_len


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one forward step did and how long it took (model seconds)."""

    kind: str
    duration: float
    batch: tuple[SequenceState, ...] = ()
    finished: tuple[SequenceState, ...] = ()
    prefill_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class SchedulerStats:
    """Counters and gauges the metrics endpoint and ``/get_load`` read."""

    last_cache_hit_rate: float = 0.0
    total_generated: int = 0
    total_prefill_tokens: int = 0
    total_cached_tokens: int = 0
    steps: int = 0


@dataclass
class Scheduler:
    """Continuous-batching scheduler over a KV pool of ``capacity`` token slots.

    ``prefill_time(uncached_tokens)`` and ``decode_time(batch_size, kv_tokens)``
    give step durations (see :mod:`backends.sglang.capacity`).
    """

    capacity: int
    prefill_time: Callable[[int], float]
    decode_time: Callable[[int, int], float]
    context_length: int = 1 << 30
    max_running_requests: int = 4096
    max_prefill_tokens: int = 16384
    cache: RadixCache = field(default_factory=RadixCache)
    waiting: deque[SequenceState] = field(default_factory=deque)
    running: list[SequenceState] = field(default_factory=list)
    private_tokens: int = 0
    stats: SchedulerStats = field(default_factory=SchedulerStats)

    # -- accounting -----------------------------------------------------------------
    @property
    def free_tokens(self) -> int:
        """KV slots held by nobody (neither cache nor running requests)."""
        return self.capacity - self.cache.total_size - self.private_tokens

    @property
    def used_tokens(self) -> int:
        """Slots in use and not reclaimable: SGLang's ``num_used_tokens``."""
        return self.capacity - self.free_tokens - self.cache.evictable_size

    @property
    def token_usage(self) -> float:
        """``used_tokens / capacity`` (SGLang's ``token_usage`` gauge)."""
        return self.used_tokens / self.capacity if self.capacity else 0.0

    @property
    def has_work(self) -> bool:
        """Whether a step would do anything."""
        return bool(self.waiting or self.running)

    # -- requests ------------------------------------------------------------------------
    def submit(self, seq: SequenceState) -> None:
        """Queue ``seq``; :class:`AdmissionError` if it can never fit."""
        prompt_len = len(seq.prompt_ids)
        if prompt_len >= self.context_length:
            raise AdmissionError(
                f"The input ({prompt_len} tokens) is longer than the model's context "
                f"length ({self.context_length} tokens)."
            )
        if prompt_len + seq.output_len > self.capacity:
            raise AdmissionError(
                f"Requested {prompt_len + seq.output_len} tokens (prompt {prompt_len} + "
                f"max new tokens {seq.output_len}) exceed the KV cache capacity "
                f"({self.capacity} tokens)."
            )
        self.waiting.append(seq)

    def abort(self, seq: SequenceState) -> None:
        """Drop ``seq`` wherever it is and give its slots back."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.running:
            self.running.remove(seq)
            self._release(seq, cache_output=False)
        seq.aborted = True

    def flush_cache(self) -> bool:
        """Empty the prefix cache; refused (``False``) while requests are in flight."""
        if self.has_work:
            return False
        self.cache.reset()
        return True

    # -- stepping ------------------------------------------------------------------------
    def step(self, now: float) -> StepResult:
        """Run one forward step starting at model time ``now``."""
        admitted = self._admit(now)
        if admitted:
            uncached = sum(len(s.prompt_ids) - s.cached_tokens for s in admitted)
            cached = sum(s.cached_tokens for s in admitted)
            total = uncached + cached
            self.stats.last_cache_hit_rate = cached / total if total else 0.0
            self.stats.total_prefill_tokens += total
            self.stats.total_cached_tokens += cached
            duration = self.prefill_time(uncached)
            batch = tuple(admitted)
            kind = "prefill"
        elif self.running:
            kv_tokens = sum(len(s.prompt_ids) + s.generated for s in self.running)
            duration = self.decode_time(len(self.running), kv_tokens)
            batch = tuple(self.running)
            kind = "decode"
            uncached = cached = 0
        else:
            return StepResult(kind="idle", duration=0.0)
        end = now + duration
        finished: list[SequenceState] = []
        for seq in batch:
            seq.generated += 1
            self.stats.total_generated += 1
            if seq.first_token_time is None:
                seq.first_token_time = end
            if seq.finished:
                seq.finish_time = end
                finished.append(seq)
        for seq in finished:
            self.running.remove(seq)
            self._release(seq, cache_output=True)
        self.stats.steps += 1
        return StepResult(kind, duration, batch, tuple(finished), uncached + cached, cached)

    def _admit(self, now: float) -> list[SequenceState]:
        admitted: list[SequenceState] = []
        budget = self.max_prefill_tokens
        while self.waiting and len(self.running) < self.max_running_requests:
            seq = self.waiting[0]
            # As in SGLang, the last prompt token is always recomputed (it yields the logits).
            match = self.cache.match_prefix(seq.prompt_ids[:-1])
            uncached = len(seq.prompt_ids) - match.length
            if admitted and uncached > budget:
                break
            self.cache.lock(match.node)
            need = uncached + seq.output_len
            if need > self.free_tokens:
                self.cache.evict(need - self.free_tokens)
            if need > self.free_tokens:
                self.cache.unlock(match.node)
                break
            self.waiting.popleft()
            added, node = self.cache.insert(seq.prompt_ids)
            self.cache.lock(node)
            self.cache.unlock(match.node)
            self.cache.hit_tokens += match.length
            self.cache.miss_tokens += uncached
            seq.node = node
            seq.cached_tokens = match.length
            seq.reserved = seq.output_len
            seq.admitted_time = now
            self.private_tokens += seq.reserved
            self.running.append(seq)
            admitted.append(seq)
            budget -= uncached
        return admitted

    def _release(self, seq: SequenceState, *, cache_output: bool) -> None:
        if seq.node is None:
            return
        if cache_output and seq.output_ids:
            full = list(seq.prompt_ids) + list(seq.output_ids[: seq.generated])
            self.cache.insert(full)
        self.cache.unlock(seq.node)
        self.private_tokens -= seq.reserved
        seq.reserved = 0
        seq.node = None
