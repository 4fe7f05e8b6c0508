"""How many requests fit: weights, KV bytes and SGLang's KV pool for one deployment.

The arithmetic (per GPU of a tensor-parallel group)::

    weights_per_gpu   = params * bytes(weights_dtype) / tp
    kv_per_token      = 2 (K, V) * layers * kv_heads * head_dim * bytes(kv_dtype)   # whole model
    kv_per_request    = kv_per_token * context_tokens
    pool_tokens       = SGLang's max_total_num_tokens (see gpu_catalog.capacity)
    concurrency       = pool_tokens // context_tokens
    headroom_ceiling  = floor(headroom * pool_tokens) // context_tokens

``concurrency`` is the number of requests of ``context_tokens`` each (prompt
plus output) whose KV fits in the pool at once, with no prefix sharing; the
headroom ceiling is what Tollway's KV admission lets in (``kv_headroom``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gpu_catalog.capacity import (
    Deployment,
    kv_bytes_per_token_per_gpu,
    kv_pool,
    smallest_tp_that_fits,
    weights_bytes_per_gpu,
)
from gpu_catalog.specs import GIB, GPUS, get_gpu, get_model

GB = 1e9


@dataclass(frozen=True, slots=True)
class CapacityReport:
    """One deployment's memory budget and concurrency ceilings at one context length.

    ``static_budget_gib`` is what SGLang may hold for weights and KV cache per
    GPU: the memory free at start-up times ``mem_fraction_static``.
    """

    gpu: str
    model: str
    weights_dtype: str
    kv_dtype: str
    tp: int
    context_tokens: int
    gpu_memory_gib: float
    mem_fraction_static: float
    weights_gib_per_gpu: float
    weights_gb_total: float
    static_budget_gib: float
    kv_bytes_per_token: int
    kv_bytes_per_token_per_gpu: int
    kv_bytes_per_request: int
    kv_pool_tokens: int
    kv_pool_gib_per_gpu: float
    fits: bool
    concurrency: int
    headroom: float
    headroom_concurrency: int
    smallest_tp_that_fits: int | None
    concurrency_at_smallest_tp: int | None
    exceeds_model_context: bool
    model_context_length: int

    @property
    def kv_gb_per_request(self) -> float:
        """KV cache of one full-context request, whole model, decimal GB."""
        return self.kv_bytes_per_request / GB

    def verdict(self) -> str:
        """One plain sentence: how many requests fit, or why none does."""
        if not self.fits:
            usable = self.static_budget_gib
            tp_hint = (
                f"smallest TP that fits one {self.context_tokens}-token request: "
                f"{self.smallest_tp_that_fits} ({self.concurrency_at_smallest_tp} concurrent "
                f"requests per TP group)"
                if self.smallest_tp_that_fits is not None
                else "no TP degree up to 8 fits"
            )
            reason = (
                f"weights need {self.weights_gib_per_gpu:.1f} GiB per GPU, more than the "
                f"{usable:.1f} GiB SGLang may use"
                if self.weights_gib_per_gpu >= usable
                else f"only {self.kv_pool_tokens} KV tokens are left after the weights"
            )
            return f"does not fit at tp={self.tp}: {reason}; {tp_hint}"
        return (
            f"{self.concurrency} concurrent {self.context_tokens}-token requests "
            f"({self.headroom_concurrency} within the {self.headroom:.0%} admission headroom)"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields plus the derived ones."""
        out = asdict(self)
        out["kv_gb_per_request"] = self.kv_gb_per_request
        out["verdict"] = self.verdict()
        return out


def kv_bytes_per_token(model_name: str, kv_dtype: str) -> int:
    """KV bytes one token occupies across the whole model (all GPUs of a TP group)."""
    return kv_bytes_per_token_per_gpu(get_model(model_name), kv_dtype, 1)


def capacity_report(
    gpu: str,
    model: str,
    *,
    weights_dtype: str = "bf16",
    kv_dtype: str = "bf16",
    context_tokens: int = 4096,
    tp: int = 1,
    mem_fraction_static: float | None = None,
    headroom: float = 0.8,
) -> CapacityReport:
    """The memory budget and concurrency ceilings of ``model`` on ``tp`` × ``gpu``.

    ``KeyError`` for an unknown GPU, model or dtype; ``ValueError`` for a bad
    ``tp``, context or headroom.
    """
    if context_tokens < 1:
        raise ValueError(f"context must be >= 1 token, got {context_tokens}")
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom must be in (0, 1], got {headroom}")
    gpu_spec = get_gpu(gpu)
    model_spec = get_model(model)
    deployment = Deployment(gpu_spec, model_spec, tp, weights_dtype, kv_dtype)
    pool = kv_pool(deployment, mem_fraction_static=mem_fraction_static)
    fits = pool.max_total_num_tokens >= context_tokens
    smallest = smallest_tp_that_fits(
        gpu_spec,
        model_spec,
        weights_dtype=weights_dtype,
        kv_dtype=kv_dtype,
        min_kv_tokens=context_tokens,
    )
    at_smallest = (
        kv_pool(
            Deployment(gpu_spec, model_spec, smallest, weights_dtype, kv_dtype),
            mem_fraction_static=mem_fraction_static,
        ).max_total_num_tokens
        // context_tokens
        if smallest is not None
        else None
    )
    per_token = kv_bytes_per_token_per_gpu(model_spec, kv_dtype, 1)
    return CapacityReport(
        gpu=gpu_spec.name,
        model=model_spec.name,
        weights_dtype=weights_dtype,
        kv_dtype=kv_dtype,
        tp=tp,
        context_tokens=context_tokens,
        gpu_memory_gib=gpu_spec.memory_gib,
        mem_fraction_static=pool.mem_fraction_static,
        weights_gib_per_gpu=weights_bytes_per_gpu(model_spec, weights_dtype, tp) / GIB,
        weights_gb_total=weights_bytes_per_gpu(model_spec, weights_dtype, 1) / GB,
        static_budget_gib=pool.total_gib * pool.mem_fraction_static,
        kv_bytes_per_token=per_token,
        kv_bytes_per_token_per_gpu=pool.cell_size_bytes,
        kv_bytes_per_request=per_token * context_tokens,
        kv_pool_tokens=pool.max_total_num_tokens,
        kv_pool_gib_per_gpu=pool.max_total_num_tokens * pool.cell_size_bytes / GIB,
        fits=fits,
        concurrency=pool.max_total_num_tokens // context_tokens,
        headroom=headroom,
        headroom_concurrency=math.floor(headroom * pool.max_total_num_tokens) // context_tokens,
        smallest_tp_that_fits=smallest,
        concurrency_at_smallest_tp=at_smallest,
        exceeds_model_context=context_tokens > model_spec.context_length,
        model_context_length=model_spec.context_length,
    )


def capacity_table(
    model: str,
    *,
    precisions: list[tuple[str, str]],
    contexts: list[int],
    gpus: list[str] | None = None,
    tp: int = 1,
    mem_fraction_static: float | None = None,
    headroom: float = 0.8,
) -> list[CapacityReport]:
    """The grid operators look for: every GPU × (weights, KV) precision × context."""
    names = gpus if gpus is not None else list(GPUS)
    return [
        capacity_report(
            gpu,
            model,
            weights_dtype=weights,
            kv_dtype=kv,
            context_tokens=context,
            tp=tp,
            mem_fraction_static=mem_fraction_static,
            headroom=headroom,
        )
        for gpu in names
        for weights, kv in precisions
        for context in contexts
    ]
