"""The one GPU / model performance model: memory, KV-pool size, step times.

Pure functions over the catalogs in :mod:`backends.sglang.catalog`; no I/O,
no state. Used by the gateway's KV admission, ``tollway capacity``, the
SGLang worker emulator and the discrete-event simulator.

Memory (per GPU, following SGLang's ``ModelRunner.profile_max_num_token``)::

    total_gib     = gpu.memory_gib - runtime_overhead_gib   # free memory before weights
    available_gib = total_gib - weights_gib                 # free memory after weights
    rest_gib      = available_gib - total_gib * (1 - mem_fraction_static)
    cell_size     = 2 * layers * kv_heads_per_gpu * head_dim * kv_dtype_bytes
    max_total_num_tokens = int(rest_gib * 2**30) // cell_size

``kv_heads_per_gpu = max(1, kv_heads // tp)``: SGLang replicates KV heads when
the tensor-parallel degree exceeds the KV-head count. The default
``mem_fraction_static`` is SGLang's own choice (``ServerArgs``: reserve
``(9.5 + tp/2)`` GiB on 35-90 GiB GPUs, ``(12 + tp/2)`` GiB on 90-160 GiB
GPUs, ``(2.8 + tp/10)`` GiB below 35 GiB, as a fraction of the device's MiB).

Time (roofline; both per forward step, all GPUs of a TP group in parallel)::

    decode_step  = (weights read once + KV of every running token) / (HBM bw * hbm_efficiency)
                   + step_overhead
    prefill      = 2 * active_params * uncached_tokens / (tp * FLOPS * mfu) + step_overhead

For a mixture-of-experts model a decode step reads the shared weights plus
the experts the batch touches: each token picks ``k`` of ``E`` experts, so a
batch of ``B`` touches an expected ``1 - (1 - k/E)**B`` of them. Tensor-parallel
all-reduce time and attention FLOPs are ignored; the efficiency factors in
:class:`PerfTuning` absorb them and are documented there.
"""

from __future__ import annotations

from dataclasses import dataclass

from backends.sglang.catalog import GIB, GpuSpec, ModelSpec, dtype_bytes

#: GiB the CUDA context, NCCL and torch's allocator hold before weights load.
DEFAULT_RUNTIME_OVERHEAD_GIB = 0.5


@dataclass(frozen=True, slots=True)
class PerfTuning:
    """Efficiency factors of the time model (dimensionless unless stated).

    * ``hbm_efficiency``: fraction of peak HBM bandwidth a decode step achieves
      (0.8 is typical of well-tuned decode kernels on Hopper).
    * ``mfu``: model FLOP utilisation of prefill (0.5: large GEMMs reach
      60-70 % of peak, attention and launch gaps pull the average down).
    * ``step_overhead_s``: fixed cost per forward step in seconds (scheduling,
      sampling, kernel launches not hidden by CUDA graphs).
    """

    hbm_efficiency: float = 0.8
    mfu: float = 0.5
    step_overhead_s: float = 0.002


DEFAULT_TUNING = PerfTuning()


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model served on ``tp`` GPUs of one kind with the given dtypes."""

    gpu: GpuSpec
    model: ModelSpec
    tp: int = 1
    weights_dtype: str = "bf16"
    kv_dtype: str = "bf16"

    def __post_init__(self) -> None:
        if self.tp < 1:
            raise ValueError(f"tp must be >= 1, got {self.tp}")
        dtype_bytes(self.weights_dtype)
        dtype_bytes(self.kv_dtype)


@dataclass(frozen=True, slots=True)
class KvPool:
    """The KV-cache pool SGLang would allocate, with the figures that led to it."""

    max_total_num_tokens: int
    mem_fraction_static: float
    total_gib: float
    weights_gib: float
    available_gib: float
    rest_gib: float
    cell_size_bytes: int

    @property
    def fits(self) -> bool:
        """Whether any KV cache is left after the weights (SGLang refuses to start otherwise)."""
        return self.max_total_num_tokens > 0


def weights_bytes_per_gpu(model: ModelSpec, weights_dtype: str, tp: int) -> float:
    """Bytes of weights each GPU holds: ``params * bytes(dtype) / tp``."""
    return model.params * dtype_bytes(weights_dtype) / tp


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    """KV heads each GPU stores; replicated when ``tp`` exceeds the KV-head count."""
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_per_gpu(model: ModelSpec, kv_dtype: str, tp: int) -> int:
    """SGLang's ``cell_size``: ``2 (K and V) * layers * kv_heads_per_gpu * head_dim * bytes``."""
    per_token = (
        2 * model.num_layers * kv_heads_per_gpu(model, tp) * model.head_dim * dtype_bytes(kv_dtype)
    )
    return int(per_token)


def default_mem_fraction_static(gpu: GpuSpec, tp: int) -> float:
    """SGLang's default ``--mem-fraction-static`` for this GPU and TP degree.

    ``round((gpu_mem_mib - reserved_mib) / gpu_mem_mib, 3)`` with the reserve
    SGLang's ``ServerArgs`` sets per memory class (pipeline parallelism 1).
    """
    gpu_mem = gpu.memory_mib
    if gpu_mem < 35 * 1024:
        reserved = (2.8 + tp / 10) * 1024
    elif gpu_mem < 90 * 1024:
        reserved = (9.5 + tp / 2) * 1024
    elif gpu_mem < 160 * 1024:
        reserved = (12 + tp / 2) * 1024
    else:
        reserved = 32 * 1024
    return round((gpu_mem - reserved) / gpu_mem, 3)


def kv_pool(
    deployment: Deployment,
    *,
    mem_fraction_static: float | None = None,
    runtime_overhead_gib: float = DEFAULT_RUNTIME_OVERHEAD_GIB,
    max_total_tokens: int | None = None,
) -> KvPool:
    """The KV pool (``max_total_num_tokens``) SGLang would profile for ``deployment``.

    ``max_total_tokens`` caps the result as SGLang's ``--max-total-tokens`` does.
    A negative memory remainder gives ``max_total_num_tokens == 0``.
    """
    d = deployment
    fraction = (
        mem_fraction_static
        if mem_fraction_static is not None
        else default_mem_fraction_static(d.gpu, d.tp)
    )
    total_gib = d.gpu.memory_gib - runtime_overhead_gib
    weights_gib = weights_bytes_per_gpu(d.model, d.weights_dtype, d.tp) / GIB
    available_gib = total_gib - weights_gib
    rest_gib = available_gib - total_gib * (1 - fraction)
    cell = kv_bytes_per_token_per_gpu(d.model, d.kv_dtype, d.tp)
    tokens = max(0, int(rest_gib * GIB) // cell)
    if max_total_tokens is not None:
        tokens = min(tokens, max_total_tokens)
    return KvPool(
        max_total_num_tokens=tokens,
        mem_fraction_static=fraction,
        total_gib=total_gib,
        weights_gib=weights_gib,
        available_gib=available_gib,
        rest_gib=rest_gib,
        cell_size_bytes=cell,
    )


def fits(
    deployment: Deployment,
    *,
    min_kv_tokens: int = 1,
    mem_fraction_static: float | None = None,
) -> bool:
    """Whether the deployment starts and holds at least ``min_kv_tokens`` of KV cache."""
    pool = kv_pool(deployment, mem_fraction_static=mem_fraction_static)
    return pool.max_total_num_tokens >= max(1, min_kv_tokens)


def smallest_tp_that_fits(
    gpu: GpuSpec,
    model: ModelSpec,
    *,
    weights_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    min_kv_tokens: int = 1,
    max_tp: int = 8,
) -> int | None:
    """The smallest power-of-two TP degree (1, 2, 4, 8 ...) that fits, or ``None``."""
    tp = 1
    while tp <= max_tp:
        deployment = Deployment(gpu, model, tp, weights_dtype, kv_dtype)
        if fits(deployment, min_kv_tokens=min_kv_tokens):
            return tp
        tp *= 2
    return None


def experts_touched_fraction(model: ModelSpec, batch_size: int) -> float:
    """Expected fraction of routed experts a decode batch reads (1.0 for dense models)."""
    if not model.is_moe:
        return 1.0
    miss = 1.0 - model.experts_per_token / model.num_experts
    return 1.0 - miss ** max(1, batch_size)


def decode_bytes_per_step(deployment: Deployment, batch_size: int, kv_tokens: int) -> float:
    """HBM bytes each GPU reads in one decode step of ``batch_size`` sequences.

    ``kv_tokens`` is the total context length of the running sequences.
    """
    d = deployment
    per_param = dtype_bytes(d.weights_dtype) / d.tp
    if d.model.is_moe:
        weights = (
            d.model.shared_params
            + d.model.expert_params * experts_touched_fraction(d.model, batch_size)
        ) * per_param
    else:
        weights = d.model.params * per_param
    kv = kv_tokens * kv_bytes_per_token_per_gpu(d.model, d.kv_dtype, d.tp)
    return weights + kv


def decode_step_seconds(
    deployment: Deployment,
    batch_size: int,
    kv_tokens: int,
    tuning: PerfTuning = DEFAULT_TUNING,
) -> float:
    """Seconds for one decode step (one token for each of ``batch_size`` sequences)."""
    if batch_size <= 0:
        return 0.0
    bandwidth = deployment.gpu.hbm_bandwidth * tuning.hbm_efficiency
    return decode_bytes_per_step(deployment, batch_size, kv_tokens) / bandwidth + (
        tuning.step_overhead_s
    )


def prefill_seconds(
    deployment: Deployment,
    uncached_tokens: int,
    tuning: PerfTuning = DEFAULT_TUNING,
) -> float:
    """Seconds to prefill ``uncached_tokens`` (cached prefix tokens cost nothing)."""
    if uncached_tokens <= 0:
        return 0.0
    d = deployment
    flops = d.gpu.flops_for(d.weights_dtype) * d.tp * tuning.mfu
    return 2.0 * d.model.active_params * uncached_tokens / flops + tuning.step_overhead_s
