"""The scheduler against SGLang 0.5.6's policy: chunked prefill, estimated admission, retraction.

Each test drives :class:`Scheduler` step by step on its own model clock (the
step durations it returns) and checks the batch SGLang's ``get_next_batch_to_run``
and ``PrefillAdder`` would form.
"""

from __future__ import annotations

import itertools

import pytest

from gpu_catalog.steptime import StepShape
from simulator.scheduler import Scheduler
from simulator.sequence import SequenceState, StepResult

_ids = itertools.count(1_000_000)


def _seq(rid: str, prompt_len: int, out: int, max_new: int | None = None) -> SequenceState:
    """A request with a prompt no other shares and ``out`` planned output tokens."""
    prompt = tuple(next(_ids) for _ in range(prompt_len))
    output = tuple(next(_ids) for _ in range(out))
    return SequenceState(rid, prompt, out, 0.0, max_new_tokens=max_new, output_ids=output)


class Recorder:
    """A step-time function that remembers every step's shape (10 ms per step)."""

    def __init__(self) -> None:
        self.shapes: list[StepShape] = []

    def __call__(self, shape: StepShape) -> float:
        self.shapes.append(shape)
        return 0.01


def _consistent(sched: Scheduler) -> None:
    held = sum(s.allocated for s in sched.running)
    held += sched.chunked.allocated if sched.chunked else 0
    assert sched.private_tokens == held
    assert sched.free_tokens >= 0


def _run(sched: Scheduler, now: float = 0.0) -> tuple[float, list[StepResult]]:
    results = []
    while sched.has_work:
        result = sched.step(now)
        _consistent(sched)
        results.append(result)
        now += result.duration
    return now, results


def test_a_long_prompt_is_prefilled_in_8k_chunks_before_decoding_resumes() -> None:
    record = Recorder()
    sched = Scheduler(capacity=100_000, step_time=record, chunked_prefill_size=8192)
    r = _seq("r", 100, 50, 50)
    sched.submit(r)
    assert sched.step(0.0).kind == "prefill" and sched.step(0.01).kind == "decode"
    assert r.generated == 2
    long, small = _seq("long", 20_000, 5, 5), _seq("small", 10, 5, 5)
    sched.submit(long)
    sched.submit(small)
    used = sched.used_tokens

    first = sched.step(0.02)  # the first chunk takes the whole 8,192-token budget
    assert first.kind == "prefill" and first.batch == () and record.shapes[-1].extend_tokens == 8192
    assert sched.chunked is long and list(sched.waiting) == [small]
    assert sched.used_tokens == used + 8192  # a chunk's slots are taken when it runs
    second = sched.step(0.03)  # the unfinished chunk goes first, decoding waits
    assert second.kind == "prefill" and second.batch == ()
    assert record.shapes[-1].extend_prefix_tokens == 8192
    third = sched.step(0.04)  # the last 3,616 tokens, and the small prompt in the room left
    assert third.kind == "prefill" and third.batch == (long, small)
    shape = record.shapes[-1]
    assert (shape.extend_tokens, shape.extend_prefix_tokens, shape.prompt_ends) == (3626, 16_384, 2)
    assert long.generated == 1 and long.first_token_time == pytest.approx(0.05)
    assert r.generated == 2  # three steps without a decode
    fourth = sched.step(0.05)
    assert fourth.kind == "decode" and set(fourth.batch) == {r, long, small}


def test_prompts_share_a_prefill_step_up_to_the_chunk_size() -> None:
    record = Recorder()
    sched = Scheduler(capacity=100_000, step_time=record, chunked_prefill_size=8192)
    a, b, c = (_seq(x, 3000, 2, 2) for x in "abc")
    for seq in (a, b, c):
        sched.submit(seq)
    first = sched.step(0.0)
    assert first.batch == (a, b)  # c is cut at the 2,192 tokens left and continues
    assert record.shapes[-1].extend_tokens == 8192 and sched.chunked is c
    second = sched.step(0.01)
    assert second.kind == "prefill" and second.batch == (c,)
    assert (record.shapes[-1].extend_tokens, record.shapes[-1].extend_prefix_tokens) == (808, 2192)


def test_admission_reserves_an_estimate_of_the_remaining_output() -> None:
    record = Recorder()
    sched = Scheduler(capacity=2000, step_time=record)
    a, b, c = (_seq(x, 100, 20, 1000) for x in "abc")
    sched.submit(a)
    assert sched.step(0.0).batch == (a,)  # 100 + min(1000, 4096) < 2000
    # b: a now runs and is expected to need 0.7 x 999 more: 1900 - 699.3 = 1200.7 > 1100.
    # Reserving a's whole max_new_tokens (1900 - 999 = 901) would have kept b out.
    sched.submit(b)
    second = sched.step(0.01)
    assert second.kind == "prefill" and second.batch == (b,)
    # c: 1800 - 0.7 x 2 x 999 = 401.4 < 1100: it waits, the two decode.
    sched.submit(c)
    third = sched.step(0.02)
    assert third.kind == "decode" and third.batch == (a, b) and list(sched.waiting) == [c]
    # Slots are taken as tokens are made: two prompts and one slot each, not 2 x 1000.
    assert sched.used_tokens == 202
    assert sched.new_token_ratio == pytest.approx(0.7 - (0.7 - 0.7 * 0.14) / 600)
    # The batch is marked full: c is not tried again until a request leaves it, however
    # far the ratio decays meanwhile (SGLang's ``batch_is_full``).
    assert sched.batch_is_full
    now, results = _run(sched, 0.03)
    waited = [r for r in results if r.kind == "decode" and c not in r.batch]
    assert len(waited) == 18 and all(r.batch == (a, b) for r in waited)
    assert c.admitted_time == pytest.approx(a.finish_time)
    assert all(s.generated == 20 for s in (a, b, c))


def _staggered(sched: Scheduler, seqs: tuple[SequenceState, ...]) -> list[StepResult]:
    """Submit each request once the one before has been prefilled."""
    results = []
    for seq in seqs:
        sched.submit(seq)
        results.append(sched.step(0.01 * len(results)))
    return results


def test_a_full_pool_retracts_the_youngest_request_and_resumes_it_later() -> None:
    # A low starting ratio (SGLang's --schedule-conservativeness 1/7) over-admits.
    sched = Scheduler(capacity=400, step_time=Recorder(), init_new_token_ratio=0.1)
    a, b, c = (_seq(x, 50, 200, 200) for x in "abc")
    # 50 + 200 fit beside 0.1 x 199 per running request: a, then b, then c.
    admitted = _staggered(sched, (a, b, c))
    assert [r.batch for r in admitted] == [(a,), (b,), (c,)]
    _, results = _run(sched, 0.03)
    retractions = [r for r in results if r.retracted]
    # 3 x (50 + 199) > 400: the pool runs dry while all three decode; c has the fewest
    # output tokens and goes back to the queue.
    first = retractions[0]
    assert first.retracted == (c,) and first.kind == "decode" and first.batch == (a, b)
    assert c.retractions >= 1 and all(s.generated == 200 for s in (a, b, c))
    # c came back once a and b were done: one prefill step gave it its next token
    index = results.index(first)
    again = [r for r in results[index:] if r.kind == "prefill" and c in r.batch]
    assert again and c.admitted_time == pytest.approx(0.02)  # its first admission
    assert c.first_token_time == pytest.approx(0.03)  # its first token, not the re-prefill's
    assert sched.private_tokens == 0 and sched.used_tokens == 0
    assert sched.stats.retracted == len([s for r in retractions for s in r.retracted])


def test_retraction_resets_the_ratio_from_the_survivors() -> None:
    sched = Scheduler(capacity=400, step_time=Recorder(), init_new_token_ratio=0.1)
    a, b, c = (_seq(x, 50, 200, 200) for x in "abc")
    _staggered(sched, (a, b, c))
    now = 0.03
    for _ in range(400):
        result = sched.step(now)
        now += result.duration
        if result.retracted:
            break
    assert result.retracted == (c,)
    # (tokens decoded by the survivors + 20 steps each) / (their max_new_tokens + 1)
    expected = (a.generated - 1 + b.generated - 1 + 2 * 20) / (400 + 1)
    assert sched.new_token_ratio == pytest.approx(expected)
    # c's output slots were freed, not cached: it must recompute prompt + output so far
    assert c.allocated == 0 and c.node is None and c in sched.waiting


def test_mixed_chunks_decode_the_running_requests_inside_the_prefill_step() -> None:
    # --enable-mixed-chunk: the running requests take one token each out of the chunk
    # budget (8,192 - 1) and decode in the same step as the new prompt's first chunk.
    record = Recorder()
    sched = Scheduler(
        capacity=100_000, step_time=record, chunked_prefill_size=8192, enable_mixed_chunk=True
    )
    r = _seq("r", 100, 50, 50)
    sched.submit(r)
    sched.step(0.0)
    long = _seq("long", 10_000, 5, 5)
    sched.submit(long)
    mixed = sched.step(0.01)
    assert mixed.kind == "prefill" and mixed.batch == (r,) and r.generated == 2
    shape = record.shapes[-1]
    assert (shape.decode_seqs, shape.extend_tokens) == (1, 8191)
    done = sched.step(0.02)
    assert done.batch == (r, long) and long.generated == 1 and r.generated == 3
    assert (record.shapes[-1].decode_seqs, record.shapes[-1].extend_tokens) == (1, 1809)
    _run(sched, 0.03)
    assert r.generated == 50 and long.generated == 5
