"""The synchronous heart of the emulator: SGLang's continuous batching over a KV pool.

:class:`Scheduler` owns the waiting queue, the running batch, the radix prefix
cache and the KV-slot accounting. It has no clock and no asyncio: each call to
:meth:`Scheduler.step` runs one forward step and returns how long it took
according to the performance model. The async :class:`~simulator.engine.Engine`
sleeps that long on its clock; the discrete-event simulator advances virtual
time instead.

Policy, as SGLang 0.5.6 schedules by default (``Scheduler.get_next_batch_to_run``,
``PrefillAdder``, ``ScheduleBatch.retract_decode``):

* **Prefill first.** A step is a prefill batch whenever one can be formed,
  else a decode step of every running request (with ``enable_mixed_chunk``,
  SGLang's ``--enable-mixed-chunk``, off by default, the running requests also
  decode inside the prefill step). A prefill batch takes the
  unfinished chunk of a long prompt first, then waiting requests first come,
  first served, up to ``max_prefill_tokens`` uncached tokens and
  ``chunked_prefill_size`` tokens per step; a prompt longer than what is left
  is cut there and continues in the next step. A prompt's last chunk emits
  its first token.
* **Admission on an estimate.** A request is admitted when its uncached
  prompt plus ``min(max_new_tokens, 4096)`` fit in the free and evictable
  slots, after reserving ``new_token_ratio`` of every running request's
  remaining ``max_new_tokens``. The ratio starts at 0.7 and decays linearly
  to 0.098 over 600 decode steps. Once a request does not fit (or the batch
  holds ``max_running_requests``) the batch counts as full: the queue is
  tried again only after a running request finished or was retracted.
* **Allocation as tokens are made.** Slots are taken for prompt chunks when
  they run and one per sequence per decode step, evicting unlocked cache
  leaves LRU first.
* **Retraction.** When a decode step finds fewer free slots than running
  requests, requests are retracted (fewest output tokens, then longest
  prompt, first) until the rest fit; their slots are freed and they queue
  again to re-prefill prompt plus output so far. The ratio is then reset to
  ``(tokens decoded + 20 * running) / max_new_tokens of the running``.
* The prompt enters the prefix cache when its last chunk is scheduled (later
  copies of it, e.g. ``n > 1``, hit it); prompt and output are cached when the
  request finishes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gpu_catalog.server_defaults import (
    CLIP_MAX_NEW_TOKENS,
    DEFAULT_MAX_PREFILL_TOKENS,
    INIT_NEW_TOKEN_RATIO,
    MIN_NEW_TOKEN_RATIO_FACTOR,
    NEW_TOKEN_RATIO_DECAY_STEPS,
    RETRACT_DECODE_STEPS,
)
from gpu_catalog.steptime import StepShape
from simulator.radix_cache import RadixCache
from simulator.sequence import SequenceState, StepResult


class AdmissionError(ValueError):
    """The request can never run on this worker (too long for the pool or context)."""


@dataclass
class SchedulerStats:
    """Counters and gauges the metrics endpoint and ``/get_load`` read."""

    last_cache_hit_rate: float = 0.0
    total_generated: int = 0
    total_prefill_tokens: int = 0
    total_cached_tokens: int = 0
    steps: int = 0
    decode_steps: int = 0
    retracted: int = 0


@dataclass
class Scheduler:
    """Continuous-batching scheduler over a KV pool of ``capacity`` token slots.

    ``step_time(shape)`` gives a step's duration (see :mod:`gpu_catalog.steptime`).
    ``chunked_prefill_size`` of ``None`` disables chunking; ``enable_mixed_chunk``
    (off by default, as in SGLang) lets the running requests decode inside
    prefill steps, their tokens taken from the step's chunk budget.
    """

    capacity: int
    step_time: Callable[[StepShape], float]
    context_length: int = 1 << 30
    max_running_requests: int = 4096
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS
    chunked_prefill_size: int | None = 8192
    enable_mixed_chunk: bool = False
    init_new_token_ratio: float = INIT_NEW_TOKEN_RATIO
    cache: RadixCache = field(default_factory=RadixCache)
    waiting: deque[SequenceState] = field(default_factory=deque)
    running: list[SequenceState] = field(default_factory=list)
    chunked: SequenceState | None = None
    batch_is_full: bool = False
    private_tokens: int = 0
    stats: SchedulerStats = field(default_factory=SchedulerStats)

    def __post_init__(self) -> None:
        self.min_new_token_ratio = self.init_new_token_ratio * MIN_NEW_TOKEN_RATIO_FACTOR
        self.new_token_ratio_decay = (
            self.init_new_token_ratio - self.min_new_token_ratio
        ) / NEW_TOKEN_RATIO_DECAY_STEPS
        self.new_token_ratio = self.init_new_token_ratio
        self._hits = 0

    # -- accounting -----------------------------------------------------------------
    @property
    def free_tokens(self) -> int:
        """KV slots held by nobody (neither cache nor running requests)."""
        return self.capacity - self.cache.total_size - self.private_tokens

    @property
    def used_tokens(self) -> int:
        """Slots allocated and not reclaimable: SGLang's ``num_used_tokens``."""
        return self.capacity - self.free_tokens - self.cache.evictable_size

    @property
    def token_usage(self) -> float:
        """``used_tokens / capacity`` (SGLang's ``token_usage`` gauge)."""
        return self.used_tokens / self.capacity if self.capacity else 0.0

    @property
    def waiting_tokens(self) -> int:
        """Prompt plus output so far of every queued request (``/get_load`` adds these)."""
        return sum(s.seqlen for s in self.waiting)

    @property
    def has_work(self) -> bool:
        """Whether a step would do anything."""
        return bool(self.waiting or self.running or self.chunked)

    def max_new_tokens(self, seq: SequenceState) -> int:
        """The request's output cap as SGLang sets it (``init_req_max_new_tokens``).

        At most ``max_req_len - prompt - 1`` with ``max_req_len = min(context
        length, pool size) - 1``; never below the planned output.
        """
        max_req_len = min(self.context_length, self.capacity) - 1
        room = max_req_len - len(seq.prompt_ids) - 1
        cap = seq.max_new_tokens if seq.max_new_tokens is not None else room
        return max(seq.output_len, min(cap, room))

    @staticmethod
    def _remaining_estimate(seq: SequenceState) -> int:
        return min(max(seq.cap - seq.generated, 0), CLIP_MAX_NEW_TOKENS)

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
        seq.cap = self.max_new_tokens(seq)
        self.waiting.append(seq)

    def abort(self, seq: SequenceState) -> None:
        """Drop ``seq`` wherever it is and give its slots back."""
        if seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.running or seq is self.chunked:
            if seq is self.chunked:
                self.chunked = None
            else:
                self.running.remove(seq)
                self.batch_is_full = False
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
        chunks = self._prefill_batch(now)
        retracted: list[SequenceState] = []
        new = tuple(seq for seq, _, _, last in chunks if last)
        if chunks:
            # With mixed chunks the running requests decode inside the prefill step.
            decoding = tuple(self.running) if self.enable_mixed_chunk else ()
            kv = self._decode_slots(decoding)
            spans = [(p, e, last) for _, p, e, last in chunks]
            shape = StepShape.build(len(decoding), kv, spans)
            batch = decoding + new
            kind = "prefill"
            cached = self._hits
            extend = shape.extend_tokens
            self.stats.total_prefill_tokens += extend + cached
            self.stats.total_cached_tokens += cached
            total = extend + cached
            self.stats.last_cache_hit_rate = cached / total if total else 0.0
        elif self.running:
            retracted = self._retract_if_short()
            kv = self._decode_slots(self.running)
            shape = StepShape(decode_seqs=len(self.running), decode_kv_tokens=kv)
            batch = tuple(self.running)
            kind = "decode"
            extend = cached = 0
            self.stats.decode_steps += 1
        else:
            return StepResult(kind="idle", duration=0.0)
        duration = self.step_time(shape)
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
            elif seq in new:
                self.running.append(seq)
        for seq in finished:
            if seq in self.running:
                self.running.remove(seq)
            self._release(seq, cache_output=True)
        if finished or retracted:
            self.batch_is_full = False
        self.stats.steps += 1
        return StepResult(
            kind, duration, batch, tuple(finished), extend + cached, cached, tuple(retracted)
        )

    # -- prefill ---------------------------------------------------------------------------
    def _prefill_batch(self, now: float) -> list[tuple[SequenceState, int, int, bool]]:
        """Form a prefill batch as ``PrefillAdder`` does: ``(seq, prefix, extend, last)``.

        After a request did not fit (or the batch reached ``max_running_requests``)
        SGLang marks the running batch full and tries the queue again only once
        the batch has shrunk (a request finished or was retracted).
        """
        if (self.batch_is_full or not self.waiting) and self.chunked is None:
            return []
        chunks: list[tuple[SequenceState, int, int, bool]] = []
        self._hits = 0
        rem_chunk = self.chunked_prefill_size if self.chunked_prefill_size else None
        mixed = len(self.running) if self.enable_mixed_chunk and rem_chunk else 0
        rem_input = self.max_prefill_tokens - mixed
        rem_chunk = None if rem_chunk is None else rem_chunk - mixed
        ratio = self.new_token_ratio
        clip = CLIP_MAX_NEW_TOKENS
        offset = mixed + sum(min(max(s.cap - s.generated, 0), clip) for s in self.running) * ratio

        def rem_total() -> float:
            return self.free_tokens + self.cache.evictable_size - offset

        if self.chunked is not None:
            seq, self.chunked = self.chunked, None
            left = seq.input_len - seq.prefilled
            size = min(left, int(rem_total()))
            if rem_chunk is not None:
                size = min(size, rem_chunk)
            last = size >= left
            chunks.append(self._run_chunk(seq, size, last))
            offset += self._remaining_estimate(seq) if last else 0
            rem_input -= size
            rem_chunk = None if rem_chunk is None else rem_chunk - size
        while self.waiting and self.chunked is None and not self.batch_is_full:
            if len(self.running) + len(chunks) >= self.max_running_requests:
                self.batch_is_full = True
                break
            if rem_total() <= 0:
                self.batch_is_full = True
                break
            if rem_input <= 0 or (rem_chunk is not None and rem_chunk <= 0):
                break
            seq = self.waiting[0]
            input_len = seq.seqlen
            # The last input token is always recomputed (it yields the logits).
            match = self.cache.match_prefix(seq.prompt_ids[: input_len - 1])
            extend = input_len - match.length
            if extend >= rem_input and chunks:
                break
            self.cache.lock(match.node)
            if extend + self._remaining_estimate(seq) >= rem_total():
                self.cache.unlock(match.node)
                self.batch_is_full = True
                break
            self.waiting.popleft()
            seq.node = match.node
            seq.input_len = input_len
            seq.prefilled = match.length
            if seq.generated == 0:
                seq.cached_tokens = match.length
                self.cache.hit_tokens += match.length
                self.cache.miss_tokens += extend
                self._hits += match.length
            if seq.admitted_time is None:
                seq.admitted_time = now
            size = extend if rem_chunk is None else min(extend, rem_chunk)
            last = size >= extend
            chunks.append(self._run_chunk(seq, size, last))
            offset += self._remaining_estimate(seq) if last else 0
            rem_input -= size
            rem_chunk = None if rem_chunk is None else rem_chunk - size
        return chunks

    def _run_chunk(
        self, seq: SequenceState, size: int, last: bool
    ) -> tuple[SequenceState, int, int, bool]:
        """Allocate one chunk of ``seq``'s input; its prompt enters the cache on the last."""
        prefix = seq.prefilled
        self._alloc(seq, size)
        seq.prefilled += size
        if last:
            added, node = self.cache.insert(seq.prompt_ids)
            self.cache.lock(node)
            if seq.node is not None:
                self.cache.unlock(seq.node)
            seq.node = node
            moved = min(added, seq.allocated)
            seq.allocated -= moved
            self.private_tokens -= moved
        else:
            self.chunked = seq
        return seq, prefix, size, last

    # -- decode ----------------------------------------------------------------------------
    def _retract_if_short(self) -> list[SequenceState]:
        """Retract requests when the next decode step cannot get a slot for each."""
        if self.free_tokens + self.cache.evictable_size >= len(self.running):
            self.new_token_ratio = max(
                self.new_token_ratio - self.new_token_ratio_decay, self.min_new_token_ratio
            )
            return []
        keep = sorted(self.running, key=lambda s: (s.generated, -len(s.prompt_ids)), reverse=True)
        retracted: list[SequenceState] = []
        while len(keep) > 1 and (
            not retracted or self.free_tokens + self.cache.evictable_size < len(keep)
        ):
            seq = keep.pop()
            self._release(seq, cache_output=False)
            seq.prefilled = 0
            seq.retractions += 1
            retracted.append(seq)
            self.waiting.append(seq)
        self.running = [s for s in self.running if s not in retracted]
        decoded = sum(s.generated for s in self.running)
        allowed = sum(s.cap for s in self.running)
        self.new_token_ratio = min(
            1.0, (decoded + RETRACT_DECODE_STEPS * len(self.running)) / (allowed + 1)
        )
        self.stats.retracted += len(retracted)
        return retracted

    # -- slots -----------------------------------------------------------------------------
    def _decode_slots(self, seqs: Sequence[SequenceState]) -> int:
        """One slot for each decoding sequence; returns the context they attend to."""
        n = len(seqs)
        if n > self.free_tokens:
            self.cache.evict(n - self.free_tokens)
        self.private_tokens += n
        kv = 0
        for seq in seqs:
            seq.allocated += 1
            kv += len(seq.prompt_ids) + seq.generated
        return kv

    def _alloc(self, seq: SequenceState, tokens: int) -> None:
        if tokens > self.free_tokens:
            self.cache.evict(tokens - self.free_tokens)
        seq.allocated += tokens
        self.private_tokens += tokens

    def _release(self, seq: SequenceState, *, cache_output: bool) -> None:
        if cache_output and seq.output_ids and seq.generated > 1:
            full = list(seq.prompt_ids) + list(seq.output_ids[: seq.generated - 1])
            added, _ = self.cache.insert(full)
            moved = min(added, seq.allocated)
            seq.allocated -= moved
            self.private_tokens -= moved
        if seq.node is not None:
            self.cache.unlock(seq.node)
        self.private_tokens -= seq.allocated
        seq.allocated = 0
        seq.node = None
