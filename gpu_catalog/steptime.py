"""How long one forward step takes: a roofline with TP communication and launch costs.

Pure functions over the catalogs; used by the emulator's scheduler, the
discrete-event simulator and ``tollway capacity --calibrate``. A step runs a
batch of decode sequences (one token each) and/or prompt chunks (``extend``
tokens after a ``prefix`` already in the KV cache), on all GPUs of a TP group
in parallel::

    memory  = (weights read once + KV read) / (HBM bandwidth * hbm_efficiency)
    compute = (2 * body params * tokens + 2 * head params * logit rows
               + 4 * layers * heads * head_dim * attended pairs) / (tp * FLOPS * mfu)
    comm    = 2 * layers * (allreduce_latency + 2 (tp-1)/tp * tokens * hidden * 2 B
                            / (link bandwidth * link_efficiency))          (tp > 1)
    step    = max(max(memory, compute) + comm, launch) + step_overhead
              + sequence_overhead * (decode sequences + prompts that end)

* Weights: the transformer layers at the checkpoint's dtype, the output layer
  in BF16 for quantized checkpoints (the embedding is only indexed). A
  mixture-of-experts step reads the experts its tokens touch: each token picks
  ``k`` of ``E``, so ``n`` tokens touch an expected ``1 - (1 - k/E)**n``.
* KV read: the context of every decode sequence and the prefix and new tokens
  of every chunk. Attended pairs: a decode token attends to its whole context;
  a chunk of ``e`` tokens after a prefix ``p`` to ``e * (p + (e + 1) / 2)``.
* Logit rows: one per decode sequence and one per chunk that ends its prompt
  (SGLang computes prompt logits only for the last token).
* ``comm``: two all-reduces per layer (after attention and after the MLP) of
  the BF16 activations, ring algorithm.
* ``launch``: a decode batch of at most ``cuda_graph_max_bs`` sequences replays
  a CUDA graph; prefill and larger batches run eagerly, and the CPU needs
  ``eager_layer_s`` per layer to launch them (hidden behind GPU time when the
  GPU is slower).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gpu_catalog.capacity import Deployment, embedding_dtype, kv_bytes_per_token_per_gpu
from gpu_catalog.server_defaults import server_defaults
from gpu_catalog.specs import ModelSpec, dtype_bytes


@dataclass(frozen=True, slots=True)
class PerfTuning:
    """Efficiency factors of the time model (one set for every GPU and model).

    * ``hbm_efficiency``: fraction of peak HBM bandwidth a step achieves (0.8 is
      typical of well-tuned kernels on Hopper).
    * ``mfu``: fraction of peak dense tensor-core FLOP/s a step achieves (GEMMs
      reach 60-70 % on large shapes; attention, norms and gaps pull it down).
    * ``step_overhead_s``: fixed cost per step (scheduling, sampling, the
      CPU-GPU round trip), seconds.
    * ``eager_layer_s``: CPU time to launch one layer's kernels without a CUDA graph.
    * ``allreduce_latency_s``: fixed cost of one all-reduce across the TP group.
    * ``link_efficiency``: fraction of the GPU-to-GPU link bandwidth an all-reduce reaches.
    * ``sequence_overhead_s``: host time per sequence that yields a token in the step
      (its sampling and output processing), not hidden behind the GPU.
    """

    hbm_efficiency: float = 0.8
    mfu: float = 0.5
    step_overhead_s: float = 0.002
    eager_layer_s: float = 150e-6
    allreduce_latency_s: float = 10e-6
    link_efficiency: float = 0.7
    sequence_overhead_s: float = 5e-6


DEFAULT_TUNING = PerfTuning()


@dataclass(frozen=True, slots=True)
class StepShape:
    """What one forward step computes (aggregated over its sequences)."""

    decode_seqs: int = 0
    decode_kv_tokens: int = 0
    extend_tokens: int = 0
    extend_prefix_tokens: int = 0
    extend_pairs: float = 0.0
    prompt_ends: int = 0

    @property
    def tokens(self) -> int:
        """Tokens the step pushes through the layers."""
        return self.decode_seqs + self.extend_tokens

    @staticmethod
    def build(
        decode_seqs: int = 0,
        decode_kv_tokens: int = 0,
        chunks: Iterable[tuple[int, int, bool]] = (),
    ) -> StepShape:
        """A step of decode sequences plus ``(prefix, extend, ends_prompt)`` chunks."""
        extend = prefix = ends = 0
        pairs = 0.0
        for p, e, last in chunks:
            extend += e
            prefix += p
            pairs += e * (p + (e + 1) / 2)
            ends += int(last)
        return StepShape(decode_seqs, decode_kv_tokens, extend, prefix, pairs, ends)


def experts_touched_fraction(model: ModelSpec, tokens: int) -> float:
    """Expected fraction of routed experts ``tokens`` tokens read (1.0 for dense models)."""
    if not model.is_moe:
        return 1.0
    miss = 1.0 - model.experts_per_token / model.num_experts
    return 1.0 - miss ** max(1, tokens)


def weight_bytes_read(deployment: Deployment, tokens: int) -> float:
    """HBM bytes of weights each GPU reads in a step of ``tokens`` tokens."""
    d, m = deployment, deployment.model
    outer = m.embedding_params + m.head_params
    layers = m.body_params
    if m.is_moe:
        layers = (m.shared_params - outer) + m.expert_params * experts_touched_fraction(m, tokens)
    head = (m.head_params or m.embedding_params) * dtype_bytes(embedding_dtype(d.weights_dtype))
    return (layers * dtype_bytes(d.weights_dtype) + head) / d.tp


def step_flops(model: ModelSpec, shape: StepShape) -> tuple[float, float]:
    """``(layer FLOPs, BF16 FLOPs)``: matmuls at the weights' dtype, head and attention at BF16."""
    m = model
    body_active = m.active_params - m.embedding_params - m.head_params
    linear = 2.0 * body_active * shape.tokens
    head = 2.0 * (m.head_params or m.embedding_params) * (shape.decode_seqs + shape.prompt_ends)
    attended = shape.decode_kv_tokens + shape.extend_pairs
    attention = 4.0 * m.num_layers * m.num_attention_heads * m.head_dim * attended
    return linear, head + attention


def allreduce_seconds(deployment: Deployment, tokens: int, tuning: PerfTuning) -> float:
    """Time of the step's TP all-reduces (0 at ``tp == 1``)."""
    d = deployment
    if d.tp <= 1 or tokens <= 0:
        return 0.0
    size = tokens * d.model.hidden_size * 2.0
    bandwidth = d.gpu.link_bandwidth * tuning.link_efficiency
    one = tuning.allreduce_latency_s + 2.0 * (d.tp - 1) / d.tp * size / bandwidth
    return 2 * d.model.num_layers * one


def step_seconds(
    deployment: Deployment,
    shape: StepShape,
    tuning: PerfTuning = DEFAULT_TUNING,
    *,
    cuda_graph_max_bs: int | None = None,
) -> float:
    """Seconds for one forward step of ``shape`` (0 for an empty step)."""
    tokens = shape.tokens
    if tokens <= 0:
        return 0.0
    d = deployment
    kv = (shape.decode_kv_tokens + shape.extend_prefix_tokens + shape.extend_tokens) * (
        kv_bytes_per_token_per_gpu(d.model, d.kv_dtype, d.tp)
    )
    memory = (weight_bytes_read(d, tokens) + kv) / (d.gpu.hbm_bandwidth * tuning.hbm_efficiency)
    linear, bf16 = step_flops(d.model, shape)
    compute = (linear / d.gpu.flops_for(d.weights_dtype) + bf16 / d.gpu.bf16_flops) / (
        d.tp * tuning.mfu
    )
    gpu = max(memory, compute) + allreduce_seconds(d, tokens, tuning)
    graph_bs = (
        cuda_graph_max_bs
        if cuda_graph_max_bs is not None
        else server_defaults(d.gpu, d.tp).cuda_graph_max_bs
    )
    graphed = shape.extend_tokens == 0 and shape.decode_seqs <= graph_bs
    launch = 0.0 if graphed else d.model.num_layers * tuning.eager_layer_s
    host = tuning.step_overhead_s + tuning.sequence_overhead_s * (
        shape.decode_seqs + shape.prompt_ends
    )
    return max(gpu, launch) + host


def decode_step_seconds(
    deployment: Deployment,
    batch_size: int,
    kv_tokens: int,
    tuning: PerfTuning = DEFAULT_TUNING,
) -> float:
    """One decode step of ``batch_size`` sequences holding ``kv_tokens`` of context."""
    return step_seconds(deployment, StepShape(batch_size, kv_tokens), tuning)


def prefill_seconds(
    deployment: Deployment,
    uncached_tokens: int,
    tuning: PerfTuning = DEFAULT_TUNING,
    *,
    cached_tokens: int = 0,
) -> float:
    """One prompt's prefill step: ``uncached_tokens`` after ``cached_tokens`` of prefix."""
    shape = StepShape.build(chunks=[(cached_tokens, uncached_tokens, True)])
    return step_seconds(deployment, shape, tuning)
