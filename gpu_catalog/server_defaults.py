"""The launch defaults SGLang 0.5.6 derives from the GPU: chunk size, CUDA graphs, memory.

Everything here copies ``ServerArgs._handle_gpu_memory_settings``
(``python/sglang/srt/server_args.py``), the scheduler's request-pool sizing
(``ModelRunner.init_memory_pool`` and ``TpModelWorker``) and its admission
constants (``sglang/srt/environ.py``), for the default launch (no pipeline or
data parallelism, no speculative decoding, no piecewise CUDA graphs):

* ``chunked_prefill_size`` and ``cuda_graph_max_bs`` by the driver's memory
  size (H100 and H200: 8,192 tokens and 256 sequences below TP4, 512 from TP4);
* ``mem_fraction_static = round((gpu_mib - reserved_mib) / gpu_mib, 3)`` with
  ``reserved_mib = 512 + 1.5 * max(chunked_prefill_size, 2048)
  + 2 * cuda_graph_max_bs + tp / 8 * 1024``, at least 10 GiB on GPUs above
  60 GiB: the activations of one prefill chunk, the CUDA-graph buffers and
  per-rank constants stay outside the static pool;
* ``max_running_requests = min(max_total_num_tokens // 2, max_num_reqs)`` with
  ``max_num_reqs = min(max(int(max_total_num_tokens / context_len * 512), 2048), 4096)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_catalog.specs import GpuSpec

#: ``--max-prefill-tokens``: the token budget of one prefill batch.
DEFAULT_MAX_PREFILL_TOKENS = 16384
#: ``SGLANG_INIT_NEW_TOKEN_RATIO``: the share of a running request's remaining
#: ``max_new_tokens`` that admission expects it still to need.
INIT_NEW_TOKEN_RATIO = 0.7
#: ``SGLANG_MIN_NEW_TOKEN_RATIO_FACTOR``: the ratio decays to this share of its start.
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
#: ``SGLANG_NEW_TOKEN_RATIO_DECAY_STEPS``: decode steps from the start to the floor.
NEW_TOKEN_RATIO_DECAY_STEPS = 600
#: ``SGLANG_RETRACT_DECODE_STEPS``: decode steps of room a retraction leaves each survivor.
RETRACT_DECODE_STEPS = 20
#: ``SGLANG_CLIP_MAX_NEW_TOKENS_ESTIMATION``: the most output admission reserves per request.
CLIP_MAX_NEW_TOKENS = 4096
#: ``--decode-log-interval``: decode steps between two refreshes of the metrics gauges.
DECODE_LOG_INTERVAL = 40
#: Seconds between two gauge refreshes while the scheduler idles (``check_memory``).
IDLE_METRICS_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class ServerDefaults:
    """The GPU-dependent defaults of one SGLang launch."""

    chunked_prefill_size: int
    cuda_graph_max_bs: int
    reserved_mib: float
    mem_fraction_static: float
    max_prefill_tokens: int = DEFAULT_MAX_PREFILL_TOKENS


def _chunk_and_graph(gpu_mib: int, tp: int) -> tuple[int, int]:
    """``chunked_prefill_size`` and ``cuda_graph_max_bs`` by memory class (NVIDIA GPUs)."""
    if gpu_mib < 20 * 1024:
        return 2048, 8
    if gpu_mib < 35 * 1024:
        return 2048, 24 if tp < 4 else 80
    if gpu_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if gpu_mib < 160 * 1024:  # H100, A100 80GB (< 90 GiB); H200, H20 (< 160 GiB)
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def server_defaults(
    gpu: GpuSpec,
    tp: int,
    *,
    chunked_prefill_size: int | None = None,
    cuda_graph_max_bs: int | None = None,
) -> ServerDefaults:
    """SGLang's defaults for ``tp`` GPUs of kind ``gpu`` (explicit values override)."""
    gpu_mib = gpu.memory_mib
    chunk, graph = _chunk_and_graph(gpu_mib, tp)
    chunk = chunk if chunked_prefill_size is None else chunked_prefill_size
    graph = graph if cuda_graph_max_bs is None else cuda_graph_max_bs
    reserved = 512 + max(chunk, 2048) * 1.5 + graph * 2 + tp / 8 * 1024
    if gpu_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    fraction = round((gpu_mib - reserved) / gpu_mib, 3)
    return ServerDefaults(chunk, graph, reserved, fraction)


def default_max_running_requests(max_total_num_tokens: int, context_length: int) -> int:
    """SGLang's ``max_running_requests`` when ``--max-running-requests`` is not given."""
    max_num_reqs = min(max(int(max_total_num_tokens / context_length * 512), 2048), 4096)
    return max(1, min(max_total_num_tokens // 2, max_num_reqs))
