"""The GPU / model memory model: weights, KV-pool size, what fits.

Pure functions over the catalogs in :mod:`gpu_catalog.specs`; no I/O,
no state. Used by the gateway's KV admission, ``tollway capacity``, the
SGLang worker emulator and the discrete-event simulator. Step times are in
:mod:`gpu_catalog.steptime`.

Memory (per GPU, following SGLang's ``ModelRunner.profile_max_num_token``)::

    total_gib     = gpu.memory_gib - runtime_overhead_gib   # free memory before weights
    available_gib = total_gib - weights_gib                 # free memory after weights
    rest_gib      = available_gib - total_gib * (1 - mem_fraction_static)
    cell_size     = 2 * layers * kv_heads_per_gpu * head_dim * kv_dtype_bytes
    max_total_num_tokens = int(rest_gib * 2**30) // cell_size

``kv_heads_per_gpu = max(1, kv_heads // tp)``: SGLang replicates KV heads when
the tensor-parallel degree exceeds the KV-head count. Quantized checkpoints
(FP8, INT8, INT4) quantize the transformer layers only: the input embedding
and the output layer stay in BF16. The default ``mem_fraction_static`` is
SGLang 0.5.6's (:func:`gpu_catalog.server_defaults.server_defaults`): it
keeps the activations of one prefill chunk, the CUDA-graph buffers and
per-rank constants outside the pool, at least 10 GiB on GPUs above 60 GiB.
SGLang refuses to start when ``max_total_num_tokens <= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_catalog.server_defaults import server_defaults
from gpu_catalog.specs import GIB, GpuSpec, ModelSpec, dtype_bytes

#: GiB the CUDA context, NCCL and torch's allocator hold before weights load.
DEFAULT_RUNTIME_OVERHEAD_GIB = 0.5
#: Weight dtypes whose checkpoints keep the embedding and output layer in BF16.
QUANTIZED_DTYPES = frozenset({"fp8", "int8", "int4"})


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


def embedding_dtype(weights_dtype: str) -> str:
    """The dtype of the embedding and output layer: BF16 in a quantized checkpoint."""
    return "bf16" if weights_dtype in QUANTIZED_DTYPES else weights_dtype


def weights_bytes_per_gpu(model: ModelSpec, weights_dtype: str, tp: int) -> float:
    """Bytes of weights each GPU holds (every weight is sharded over ``tp``).

    ``body_params * bytes(dtype) + (embedding + head) * bytes(embedding dtype)``:
    for BF16 weights that is ``params * 2``; an FP8 checkpoint of Llama 3.1 8B
    holds 6.98e9 one-byte and 1.05e9 two-byte parameters (9.08 GB, not 8.03).
    """
    outer = model.embedding_params + model.head_params
    return (
        model.body_params * dtype_bytes(weights_dtype)
        + outer * dtype_bytes(embedding_dtype(weights_dtype))
    ) / tp


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

    0.835 on an H100 at TP1, 0.907 on an H200 (see
    :mod:`gpu_catalog.server_defaults` for the rule).
    """
    return server_defaults(gpu, tp).mem_fraction_static


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
