"""GPU and model catalogs: the facts the performance model computes from.

Units, chosen once and used everywhere in :mod:`gpu_catalog.capacity`:

* **GPU memory** is stored as ``memory_mib``, the total the CUDA driver
  reports (``nvidia-smi --query-gpu=memory.total``, MiB = 2**20 bytes). SGLang
  reads exactly this figure to pick its default ``mem_fraction_static`` and
  measures free memory in GiB (2**30 bytes) through torch, so the KV-pool
  arithmetic works in GiB. The marketing size (``hbm_gb``, decimal GB) is kept
  for display only.
* **Bandwidth** is bytes per second (decimal: 3.35 TB/s = 3.35e12 B/s).
* **Compute** is dense (no sparsity) FLOP/s.
* **Parameters** are counts (not billions).

Model figures come from each model's Hugging Face ``config.json``; parameter
counts are the published totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Dtype = Literal["fp32", "fp16", "bf16", "fp8", "int8", "int4"]
#: The dtypes a pool's weights and KV cache may be stored in, and the GPUs a pool may name.
WeightsDtype = Literal["fp16", "bf16", "fp8", "int8", "int4"]
KvDtype = Literal["fp16", "bf16", "fp8"]
GpuName = Literal["h100", "h200", "a100", "l4"]

#: Bytes per element of each storage dtype (int4 packs two values per byte).
DTYPE_BYTES: MappingProxyType[str, float] = MappingProxyType(
    {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}
)

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One accelerator model.

    ``fp8_flops`` is ``None`` where the GPU has no FP8 tensor cores (A100):
    FP8 weights then run at the bf16 rate (weight-only dequantisation).
    ``link_bandwidth`` is the GPU-to-GPU bandwidth of one direction in bytes/s
    (NVLink 4: 450 GB/s on H100/H200 SXM; NVLink 3: 300 GB/s on A100 SXM;
    PCIe 4.0 x16: 32 GB/s on the L4), which the tensor-parallel all-reduce uses.
    """

    name: str
    display_name: str
    hbm_gb: float
    memory_mib: int
    hbm_bandwidth: float
    bf16_flops: float
    fp8_flops: float | None
    link_bandwidth: float = 450e9

    @property
    def memory_bytes(self) -> int:
        """Total device memory in bytes, as the driver reports it."""
        return self.memory_mib * MIB

    @property
    def memory_gib(self) -> float:
        """Total device memory in GiB (the unit SGLang's memory profiling uses)."""
        return self.memory_mib / 1024

    def flops_for(self, dtype: str) -> float:
        """Dense tensor-core FLOP/s for matmuls whose weights are ``dtype``."""
        if dtype in ("fp8", "int8", "int4") and self.fp8_flops is not None:
            return self.fp8_flops
        return self.bf16_flops


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model's architecture, as far as serving cost depends on it.

    For a mixture-of-experts model ``params`` is the total parameter count,
    ``active_params`` the count used per token, ``num_experts`` the routed
    experts per layer and ``experts_per_token`` the top-k. Dense models have
    ``active_params == params`` and ``num_experts == 0``.
    """

    name: str
    hf_name: str
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    params: float
    active_params: float
    num_experts: int = 0
    experts_per_token: int = 0
    tie_word_embeddings: bool = False

    @property
    def embedding_params(self) -> float:
        """Parameters of the input embedding (``vocab_size * hidden_size``)."""
        return float(self.vocab_size * self.hidden_size)

    @property
    def head_params(self) -> float:
        """Parameters of the output layer (``lm_head``); 0 when tied to the embedding."""
        return 0.0 if self.tie_word_embeddings else self.embedding_params

    @property
    def body_params(self) -> float:
        """Parameters of the transformer layers: everything but the embedding and head."""
        return self.params - self.embedding_params - self.head_params

    @property
    def is_moe(self) -> bool:
        """Whether the model routes tokens to a subset of experts."""
        return self.num_experts > 0

    @property
    def expert_params(self) -> float:
        """Parameters in routed experts (0 for dense models).

        From ``active = shared + experts * k / E`` and
        ``total = shared + experts``: ``experts = (total - active) / (1 - k / E)``.
        """
        if not self.is_moe:
            return 0.0
        return (self.params - self.active_params) / (
            1.0 - self.experts_per_token / self.num_experts
        )

    @property
    def shared_params(self) -> float:
        """Parameters every token uses (attention, embeddings, norms, router)."""
        return self.params - self.expert_params


GPUS: MappingProxyType[str, GpuSpec] = MappingProxyType(
    {
        "h100": GpuSpec(
            name="h100",
            display_name="NVIDIA H100 80GB HBM3 (SXM)",
            hbm_gb=80,
            memory_mib=81559,
            hbm_bandwidth=3.35e12,
            bf16_flops=989e12,
            fp8_flops=1979e12,
        ),
        "h200": GpuSpec(
            name="h200",
            display_name="NVIDIA H200 141GB HBM3e (SXM)",
            hbm_gb=141,
            memory_mib=143771,
            hbm_bandwidth=4.8e12,
            bf16_flops=989e12,
            fp8_flops=1979e12,
        ),
        "a100": GpuSpec(
            name="a100",
            display_name="NVIDIA A100 80GB (SXM)",
            hbm_gb=80,
            memory_mib=81920,
            hbm_bandwidth=2.039e12,
            bf16_flops=312e12,
            fp8_flops=None,
            link_bandwidth=300e9,
        ),
        "l4": GpuSpec(
            name="l4",
            display_name="NVIDIA L4 24GB",
            hbm_gb=24,
            memory_mib=23034,
            hbm_bandwidth=0.3e12,
            bf16_flops=121e12,
            fp8_flops=242e12,
            link_bandwidth=32e9,
        ),
    }
)

MODELS: MappingProxyType[str, ModelSpec] = MappingProxyType(
    {
        "llama-2-70b": ModelSpec(
            name="llama-2-70b",
            hf_name="meta-llama/Llama-2-70b-hf",
            num_layers=80,
            hidden_size=8192,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=128,
            vocab_size=32000,
            context_length=4096,
            params=68.98e9,
            active_params=68.98e9,
        ),
        "llama-3.1-8b-instruct": ModelSpec(
            name="llama-3.1-8b-instruct",
            hf_name="meta-llama/Llama-3.1-8B-Instruct",
            num_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,
            vocab_size=128256,
            context_length=131072,
            params=8.03e9,
            active_params=8.03e9,
        ),
        "llama-3.3-70b-instruct": ModelSpec(
            name="llama-3.3-70b-instruct",
            hf_name="meta-llama/Llama-3.3-70B-Instruct",
            num_layers=80,
            hidden_size=8192,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=128,
            vocab_size=128256,
            context_length=131072,
            params=70.55e9,
            active_params=70.55e9,
        ),
        "qwen2.5-7b-instruct": ModelSpec(
            name="qwen2.5-7b-instruct",
            hf_name="Qwen/Qwen2.5-7B-Instruct",
            num_layers=28,
            hidden_size=3584,
            num_attention_heads=28,
            num_kv_heads=4,
            head_dim=128,
            vocab_size=152064,
            context_length=32768,
            params=7.62e9,
            active_params=7.62e9,
        ),
        "qwen2.5-72b-instruct": ModelSpec(
            name="qwen2.5-72b-instruct",
            hf_name="Qwen/Qwen2.5-72B-Instruct",
            num_layers=80,
            hidden_size=8192,
            num_attention_heads=64,
            num_kv_heads=8,
            head_dim=128,
            vocab_size=152064,
            context_length=32768,
            params=72.71e9,
            active_params=72.71e9,
        ),
        # An embedding model (served with SGLang's --is-embedding); 1024-dim vectors.
        "qwen3-embedding-0.6b": ModelSpec(
            name="qwen3-embedding-0.6b",
            hf_name="Qwen/Qwen3-Embedding-0.6B",
            num_layers=28,
            hidden_size=1024,
            num_attention_heads=16,
            num_kv_heads=8,
            head_dim=128,
            vocab_size=151669,
            context_length=32768,
            params=0.596e9,
            active_params=0.596e9,
            tie_word_embeddings=True,
        ),
        "mixtral-8x7b-instruct": ModelSpec(
            name="mixtral-8x7b-instruct",
            hf_name="mistralai/Mixtral-8x7B-Instruct-v0.1",
            num_layers=32,
            hidden_size=4096,
            num_attention_heads=32,
            num_kv_heads=8,
            head_dim=128,
            vocab_size=32000,
            context_length=32768,
            params=46.7e9,
            active_params=12.9e9,
            num_experts=8,
            experts_per_token=2,
        ),
    }
)


def get_gpu(name: str) -> GpuSpec:
    """The GPU called ``name`` (case-insensitive); ``KeyError`` listing the known ones."""
    try:
        return GPUS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown GPU {name!r}; known: {', '.join(sorted(GPUS))}") from None


def get_model(name: str) -> ModelSpec:
    """The model called ``name`` (catalog name or Hugging Face name, case-insensitive)."""
    key = name.lower()
    if key in MODELS:
        return MODELS[key]
    for spec in MODELS.values():
        if spec.hf_name.lower() == key:
            return spec
    raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(MODELS))}")


def dtype_bytes(dtype: str) -> float:
    """Bytes per element of ``dtype``; ``KeyError`` for an unknown one."""
    try:
        return DTYPE_BYTES[dtype]
    except KeyError:
        raise KeyError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}") from None
