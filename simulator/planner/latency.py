"""Closed-loop latency benchmarks: ``c`` streaming users, each with one request in flight.

:func:`closed_loop_benchmark` replays the benchmark NVIDIA publishes for NIM
(AIPerf, ``--concurrency c``, ``--streaming``, synthetic prompts of a fixed
length, ``max_tokens = min_tokens = output length`` with ``ignore_eos``): each
of ``c`` users sends its next request the moment the previous one finishes, so
the server always holds ``c``. The figures are AIPerf's:

* **TTFT**: first token time minus send time, mean over the measured requests;
* **ITL**: ``(request latency - TTFT) / (output tokens - 1)`` per request, mean;
* **throughput**: output tokens per second of the whole deployment.

The model has no noise: ``c`` identical requests sent together would stay in
step for ever (prefilled in the same steps, finishing in the same step, sent
again together), where real clients and servers drift apart within a few
rounds. So each user starts at a random moment (seeded) within one request's
estimated latency (:func:`request_seconds`), the desynchronised steady state a
real run settles into. Measurement is of that steady state, as AIPerf's
profiling phase after warm-up and GenAI-Perf's stable measurement windows are:
the requests sent before the last user started, and ``c`` more, are warm-up;
the last ``c`` run while the load drains and are left out. Throughput follows
from Little's law, ``c * output tokens / mean request latency`` of the measured
requests: the figure a long steady-state run converges to (counting tokens in a
window of a few request lifetimes is noisy where long prefills make the
output arrive in bursts).

The engine measured (TensorRT-LLM inside NIM) batches in flight: the running
requests decode in the same iteration as a new prompt's chunk. The scheduler
runs with mixed chunks (SGLang's ``--enable-mixed-chunk``) to do the same.
:func:`latency_rows` compares the model with :data:`~simulator.planner.published.NIM_LATENCY`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from gpu_catalog.capacity import Deployment
from gpu_catalog.specs import get_gpu, get_model
from gpu_catalog.steptime import (
    DEFAULT_TUNING,
    PerfTuning,
    decode_step_seconds,
    prefill_seconds,
)
from simulator.planner.calibration import build_scheduler, check_fits, unique_request
from simulator.planner.published import NIM_LATENCY, PublishedLatency
from simulator.sequence import SequenceState

#: Measured requests per run: ``max(MEASURED_PER_USER * c, MIN_MEASURED)``.
MEASURED_PER_USER = 2
MIN_MEASURED = 16


def request_seconds(
    deployment: Deployment,
    input_len: int,
    output_len: int,
    concurrency: int,
    tuning: PerfTuning = DEFAULT_TUNING,
) -> float:
    """Rough latency of one request among ``concurrency`` decoding alongside it."""
    context = concurrency * (input_len + output_len // 2)
    decode = decode_step_seconds(deployment, concurrency, context, tuning)
    return prefill_seconds(deployment, input_len, tuning) + output_len * decode


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """What one closed-loop run measured (simulated seconds)."""

    mean_ttft_s: float
    mean_itl_s: float
    output_tokens_per_s: float
    measured: int
    max_batch: int


def closed_loop_benchmark(
    deployment: Deployment,
    *,
    input_len: int,
    output_len: int,
    concurrency: int,
    measured: int | None = None,
    max_running_requests: int | None = None,
    tuning: PerfTuning = DEFAULT_TUNING,
    enable_mixed_chunk: bool = True,
    seed: int = 0,
) -> LatencyResult:
    """``concurrency`` users in a closed loop on one worker; the steady state's latency."""
    if concurrency < 1 or output_len < 2:
        raise ValueError("concurrency must be >= 1 and output_len >= 2")
    check_fits(deployment, input_len, output_len)
    scheduler = build_scheduler(
        deployment,
        max_running_requests=max_running_requests,
        tuning=tuning,
        enable_mixed_chunk=enable_mixed_chunk,
    )
    count = measured or max(MEASURED_PER_USER * concurrency, MIN_MEASURED)
    seqs: list[SequenceState] = []

    def send(now: float) -> None:
        seq = unique_request(len(seqs), input_len, output_len, now)
        scheduler.submit(seq)
        seqs.append(seq)

    draw = random.Random(seed)
    spread = request_seconds(deployment, input_len, output_len, concurrency, tuning)
    starts = sorted(draw.uniform(0.0, spread) for _ in range(concurrency))
    warm = total = 0  # known once every user has started
    now = 0.0
    max_batch = 0
    while scheduler.has_work or starts:
        while starts and starts[0] <= now:
            send(starts.pop(0))
            if not starts:
                warm = len(seqs) + concurrency
                total = warm + count + concurrency
        if not scheduler.has_work:
            now = starts[0]
            continue
        result = scheduler.step(now)
        now += result.duration
        max_batch = max(max_batch, len(scheduler.running))
        for _ in result.finished:
            if len(seqs) < total or not total:
                send(now)
    window = seqs[warm : warm + count]
    ttfts = [(s.first_token_time or 0.0) - s.arrival_time for s in window]
    itls = [
        ((s.finish_time or 0.0) - (s.first_token_time or 0.0)) / (output_len - 1) for s in window
    ]
    latency = sum((s.finish_time or 0.0) - s.arrival_time for s in window) / len(window)
    return LatencyResult(
        mean_ttft_s=sum(ttfts) / len(ttfts),
        mean_itl_s=sum(itls) / len(itls),
        output_tokens_per_s=concurrency * output_len / latency,
        measured=len(window),
        max_batch=max_batch,
    )


@dataclass(frozen=True, slots=True)
class LatencyRow:
    """A published latency point next to the model's figures."""

    published: PublishedLatency
    ttft_ms: float
    itl_ms: float
    throughput: float
    max_batch: int

    def ratios(self) -> dict[str, float]:
        """Modelled over published for TTFT, ITL and throughput."""
        p = self.published
        return {
            "ttft": self.ttft_ms / p.ttft_ms,
            "itl": self.itl_ms / p.itl_ms,
            "throughput": self.throughput / p.throughput,
        }


def latency_rows(
    published: tuple[PublishedLatency, ...] = NIM_LATENCY,
    *,
    tuning: PerfTuning = DEFAULT_TUNING,
) -> list[LatencyRow]:
    """Simulate each published closed-loop set-up."""
    rows = []
    for p in published:
        d = Deployment(get_gpu(p.gpu), get_model(p.model), p.tp, p.weights_dtype, p.kv_dtype)
        r = closed_loop_benchmark(
            d,
            input_len=p.input_len,
            output_len=p.output_len,
            concurrency=p.concurrency,
            tuning=tuning,
        )
        rows.append(
            LatencyRow(
                p, r.mean_ttft_s * 1e3, r.mean_itl_s * 1e3, r.output_tokens_per_s, r.max_batch
            )
        )
    return rows
