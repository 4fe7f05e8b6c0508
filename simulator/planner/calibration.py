"""The performance model against published measurements.

:func:`offline_benchmark` reproduces the offline "max throughput" benchmarks
that SGLang (``bench_serving`` / ``bench_offline_throughput``) and TensorRT-LLM
(``trtllm-bench throughput``) publish: every request is queued at time zero,
prompts share no prefix, each request produces exactly its output length, and
the figure is output tokens divided by the time the last one finishes. It
runs the emulator's scheduler with SGLang 0.5.6's launch defaults; for a
TensorRT-LLM figure the running requests also decode inside prefill steps, as
TensorRT-LLM's in-flight batching does (:attr:`Published.mixes_prefill`).
:data:`~simulator.planner.published.PUBLISHED` lists the figures the model is
compared with in ``docs/capacity.md``; :func:`calibration_rows` computes the
comparison. Closed-loop latency benchmarks are in :mod:`simulator.planner.latency`.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from functools import partial

from gpu_catalog.capacity import Deployment, kv_pool
from gpu_catalog.server_defaults import default_max_running_requests, server_defaults
from gpu_catalog.specs import get_gpu, get_model
from gpu_catalog.steptime import (
    DEFAULT_TUNING,
    PerfTuning,
    decode_step_seconds,
    step_seconds,
)
from simulator.planner.published import PUBLISHED, Published
from simulator.radix_cache import RadixCache
from simulator.scheduler import Scheduler
from simulator.sequence import SequenceState


@dataclass(frozen=True, slots=True)
class OfflineResult:
    """What one offline benchmark measured (simulated seconds)."""

    output_tokens_per_s: float
    input_tokens_per_s: float
    duration_s: float
    mean_ttft_s: float
    max_batch: int


def build_scheduler(
    deployment: Deployment,
    *,
    max_running_requests: int | None = None,
    tuning: PerfTuning = DEFAULT_TUNING,
    enable_mixed_chunk: bool = False,
) -> Scheduler:
    """A scheduler for one worker of ``deployment`` with SGLang 0.5.6's launch defaults.

    ``enable_mixed_chunk`` (SGLang's ``--enable-mixed-chunk``, off by default)
    lets the running requests decode inside prefill steps.
    """
    capacity = kv_pool(deployment).max_total_num_tokens
    defaults = server_defaults(deployment.gpu, deployment.tp)
    context = deployment.model.context_length
    return Scheduler(
        capacity=capacity,
        step_time=partial(
            step_seconds, deployment, tuning=tuning, cuda_graph_max_bs=defaults.cuda_graph_max_bs
        ),
        context_length=context,
        max_running_requests=max_running_requests
        or default_max_running_requests(capacity, context),
        max_prefill_tokens=defaults.max_prefill_tokens,
        chunked_prefill_size=defaults.chunked_prefill_size,
        enable_mixed_chunk=enable_mixed_chunk,
        cache=RadixCache(),
    )


def unique_request(index: int, input_len: int, output_len: int, arrival: float) -> SequenceState:
    """Request ``index`` of a benchmark: a prompt sharing no prefix with any other."""
    start = 1 + index * input_len
    return SequenceState(
        rid=str(index),
        prompt_ids=array("q", range(start, start + input_len)),
        output_len=output_len,
        arrival_time=arrival,
        max_new_tokens=output_len,
    )


def check_fits(deployment: Deployment, input_len: int, output_len: int) -> None:
    """``ValueError`` unless one request of this size fits the deployment's KV pool."""
    if kv_pool(deployment).max_total_num_tokens < input_len + output_len:
        raise ValueError(
            f"{deployment.model.name} ({deployment.weights_dtype}) on tp={deployment.tp} x "
            f"{deployment.gpu.name} cannot hold one {input_len + output_len}-token request"
        )


def offline_benchmark(
    deployment: Deployment,
    *,
    input_len: int,
    output_len: int,
    num_requests: int,
    max_running_requests: int | None = None,
    tuning: PerfTuning = DEFAULT_TUNING,
    enable_mixed_chunk: bool = False,
) -> OfflineResult:
    """Queue ``num_requests`` unique prompts at once on one worker; run them to the end."""
    check_fits(deployment, input_len, output_len)
    scheduler = build_scheduler(
        deployment,
        max_running_requests=max_running_requests,
        tuning=tuning,
        enable_mixed_chunk=enable_mixed_chunk,
    )
    seqs = []
    for i in range(num_requests):
        seq = unique_request(i, input_len, output_len, 0.0)
        scheduler.submit(seq)
        seqs.append(seq)
    now = 0.0
    max_batch = 0
    while scheduler.has_work:
        result = scheduler.step(now)
        if result.kind == "idle":  # pragma: no cover - cannot happen: nothing else holds slots
            break
        max_batch = max(max_batch, len(scheduler.running))
        now += result.duration
    ttfts = [s.first_token_time or 0.0 for s in seqs]
    return OfflineResult(
        output_tokens_per_s=num_requests * output_len / now,
        input_tokens_per_s=num_requests * input_len / now,
        duration_s=now,
        mean_ttft_s=sum(ttfts) / len(ttfts),
        max_batch=max_batch,
    )


@dataclass(frozen=True, slots=True)
class CalibrationRow:
    """A published figure next to the model's and the relative error."""

    published: Published
    modelled: float
    max_batch: int

    @property
    def error(self) -> float:
        """``modelled / published - 1`` (positive: the model is optimistic)."""
        return self.modelled / self.published.value - 1


def calibration_rows(
    published: tuple[Published, ...] = PUBLISHED,
    *,
    max_requests: int | None = None,
    tuning: PerfTuning = DEFAULT_TUNING,
    enable_mixed_chunk: bool | None = None,
) -> list[CalibrationRow]:
    """Simulate each published set-up (``max_requests`` overrides each point's request count;
    otherwise it is :attr:`Published.simulated_requests` where set, else the published count).

    Each point runs with the measured engine's batching (:attr:`Published.mixes_prefill`)
    unless ``enable_mixed_chunk`` says otherwise.
    """
    rows = []
    for p in published:
        d = Deployment(get_gpu(p.gpu), get_model(p.model), p.tp, p.weights_dtype, p.kv_dtype)
        r = offline_benchmark(
            d,
            input_len=p.input_len,
            output_len=p.output_len,
            num_requests=max_requests or p.simulated_requests or p.num_requests,
            max_running_requests=p.max_running_requests,
            tuning=tuning,
            enable_mixed_chunk=p.mixes_prefill
            if enable_mixed_chunk is None
            else enable_mixed_chunk,
        )
        value = r.output_tokens_per_s if p.metric == "output" else r.input_tokens_per_s
        rows.append(CalibrationRow(p, value, r.max_batch))
    return rows


@dataclass(frozen=True, slots=True)
class Speedup:
    """H200 over H100 for one set-up: each GPU's modelled throughput and the ratio."""

    label: str
    h100: float
    h200: float
    h100_batch: int
    h200_batch: int

    @property
    def ratio(self) -> float:
        """H200 throughput over H100 throughput."""
        return self.h200 / self.h100


def h200_speedups(
    model: str = "llama-2-70b",
    *,
    weights_dtype: str = "fp8",
    kv_dtype: str = "fp8",
    input_len: int = 2048,
    output_len: int = 128,
    num_requests: int = 512,
    tuning: PerfTuning = DEFAULT_TUNING,
) -> list[Speedup]:
    """H200 vs H100 decode speed-ups of ``model`` at TP1 (NVIDIA quotes "up to 1.9x").

    Three cases: one request alone (pure bandwidth), the batch sizes of NVIDIA's
    H200 launch measurement (8 on H100, 32 on H200), and each GPU at the largest
    batch its KV pool holds.
    """
    spec = get_model(model)
    h100 = Deployment(get_gpu("h100"), spec, 1, weights_dtype, kv_dtype)
    h200 = Deployment(get_gpu("h200"), spec, 1, weights_dtype, kv_dtype)
    ctx = input_len + output_len // 2
    single = Speedup(
        "one request (decode step at 2K context)",
        1 / decode_step_seconds(h100, 1, ctx, tuning),
        1 / decode_step_seconds(h200, 1, ctx, tuning),
        1,
        1,
    )
    out = [single]
    for label, b100, b200 in (
        ("NVIDIA's batch sizes (H100 8, H200 32)", 8, 32),
        ("each GPU at its KV-pool limit", None, None),
    ):
        r100 = offline_benchmark(
            h100,
            input_len=input_len,
            output_len=output_len,
            num_requests=num_requests,
            max_running_requests=b100,
            tuning=tuning,
        )
        r200 = offline_benchmark(
            h200,
            input_len=input_len,
            output_len=output_len,
            num_requests=num_requests,
            max_running_requests=b200,
            tuning=tuning,
        )
        out.append(
            Speedup(
                label,
                r100.output_tokens_per_s,
                r200.output_tokens_per_s,
                r100.max_batch,
                r200.max_batch,
            )
        )
    return out
