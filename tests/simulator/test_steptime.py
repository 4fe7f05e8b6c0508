"""The step-time model: roofline, TP all-reduce, CUDA-graph limit, chunk attention."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpu_catalog.capacity import Deployment
from gpu_catalog.specs import get_gpu, get_model
from gpu_catalog.steptime import (
    DEFAULT_TUNING,
    StepShape,
    allreduce_seconds,
    decode_step_seconds,
    experts_touched_fraction,
    prefill_seconds,
    step_seconds,
)

BW_H100 = 0.8 * 3.35e12  # achieved HBM bandwidth
EMB_8B = 128_256 * 4_096  # embedding = lm_head parameters of Llama 3.1 8B


def test_small_decode_batches_are_bandwidth_bound() -> None:
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    # layers and lm_head read once (the embedding is only indexed) + 1000 tokens of KV
    weights = (8.03e9 - 2 * EMB_8B) * 2 + EMB_8B * 2
    expected = (weights + 1000 * 131_072) / BW_H100 + 0.002 + 5e-6
    assert decode_step_seconds(d, 1, 1000) == pytest.approx(expected)
    assert decode_step_seconds(d, 64, 64 * 4000) > decode_step_seconds(d, 1, 1000)
    faster = Deployment(get_gpu("h200"), get_model("llama-3.1-8b-instruct"))
    assert decode_step_seconds(faster, 1, 1000) < decode_step_seconds(d, 1, 1000)
    assert decode_step_seconds(d, 0, 0) == 0.0


def test_large_decode_batches_are_compute_bound() -> None:
    # 2,048 sequences of 200 tokens, FP8 weights on one H100:
    #   memory:  (6.98e9 x 1 B + 0.53e9 x 2 B + 409,600 x 65,536 B) / 2.68e12 = 13 ms
    #   compute: layers 2 x 6.98e9 x 2048 / 1979e12 + (head 2 x 0.53e9 x 2048
    #            + attention 4 x 32 x 32 x 128 x 409,600) / 989e12, at 50 % = 34 ms
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"), 1, "fp8", "fp8")
    body = 8.03e9 - 2 * EMB_8B
    memory = (body + 2 * EMB_8B + 409_600 * 65_536) / BW_H100
    compute = (
        2 * body * 2048 / 1979e12 + (2 * EMB_8B * 2048 + 4 * 32 * 32 * 128 * 409_600) / 989e12
    ) / 0.5
    assert compute > 2 * memory
    step = decode_step_seconds(d, 2048, 409_600)
    assert step == pytest.approx(compute + 0.002 + 2048 * 5e-6)
    # a memory-only roofline (the old model) would have been more than twice as fast
    assert step > 2 * (memory + 0.002)


def test_tensor_parallel_steps_pay_two_all_reduces_per_layer() -> None:
    # Llama 3.3 70B, TP2 on H100: 160 all-reduces of 8,192 x 2 bytes per token, each
    # 10 us + 2 x (1/2) x size / (0.7 x 450 GB/s)
    d = Deployment(get_gpu("h100"), get_model("llama-3.3-70b-instruct"), 2, "fp8", "fp8")
    one = 10e-6 + 2 * (1 / 2) * 8192 * 2 / (0.7 * 450e9)
    assert allreduce_seconds(d, 1, DEFAULT_TUNING) == pytest.approx(160 * one)
    tp1 = Deployment(get_gpu("h200"), get_model("llama-3.3-70b-instruct"), 1, "fp8", "fp8")
    assert allreduce_seconds(tp1, 100, DEFAULT_TUNING) == 0.0
    # PCIe (L4) all-reduces of a large prefill cost far more than NVLink ones
    l4 = Deployment(get_gpu("l4"), get_model("llama-3.1-8b-instruct"), 2)
    h100 = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"), 2)
    assert allreduce_seconds(l4, 8192, DEFAULT_TUNING) > 5 * allreduce_seconds(
        h100, 8192, DEFAULT_TUNING
    )
    # the term is part of the step: one decode step of 70B at TP2 ~ 1.6 ms more
    alone = decode_step_seconds(d, 1, 1000)
    assert alone - allreduce_seconds(d, 1, DEFAULT_TUNING) == pytest.approx(
        step_seconds(d, StepShape(1, 1000), DEFAULT_TUNING) - 160 * one
    )


def test_every_sequence_that_yields_a_token_costs_host_time() -> None:
    # 5 us per decode sequence and per prompt that ends in the step (sampling, output
    # processing): 3 decodes and 2 finished prompts of a mixed step cost 25 us more than
    # without the term; a chunk that does not end its prompt costs nothing extra.
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"), 1, "fp8", "fp8")
    none = replace(DEFAULT_TUNING, sequence_overhead_s=0.0)
    mixed = StepShape.build(3, 3000, [(0, 500, True), (0, 400, True), (0, 100, False)])
    extra = step_seconds(d, mixed) - step_seconds(d, mixed, none)
    assert extra == pytest.approx(5 * 5e-6)
    assert decode_step_seconds(d, 1000, 100_000) - decode_step_seconds(
        d, 1000, 100_000, none
    ) == pytest.approx(1000 * 5e-6)


def test_batches_beyond_the_cuda_graph_limit_run_eagerly() -> None:
    # Qwen2.5 7B FP8 on an H200: ~4 ms of GPU time for 257 sequences, but without a CUDA
    # graph the CPU needs 28 layers x 150 us = 4.2 ms to launch it. SGLang captures graphs
    # up to 256 sequences at TP1 on an H200.
    d = Deployment(get_gpu("h200"), get_model("qwen2.5-7b-instruct"), 1, "fp8", "fp8")
    graphed = decode_step_seconds(d, 256, 256 * 100)
    eager = decode_step_seconds(d, 257, 257 * 100)
    assert eager == pytest.approx(28 * 150e-6 + 0.002 + 257 * 5e-6)
    assert graphed < eager
    assert step_seconds(d, StepShape(257, 25_700), cuda_graph_max_bs=512) < eager


def test_prefill_counts_uncached_tokens_and_attention_to_the_prefix() -> None:
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    assert prefill_seconds(d, 0) == 0.0
    # 1000 tokens: layers 2 x 6.98e9 x 1000, one logit row, attention over 1000 x 500.5 pairs
    body = 8.03e9 - 2 * EMB_8B
    flops = 2 * body * 1000 + 2 * EMB_8B + 4 * 32 * 32 * 128 * 1000 * 500.5
    assert prefill_seconds(d, 1000) == pytest.approx(flops / (989e12 * 0.5) + 0.002 + 5e-6)
    fp8 = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"), 1, "fp8")
    assert prefill_seconds(fp8, 1000) < prefill_seconds(d, 1000)
    # the third 8K chunk of a long prompt attends to the 16K before it: it costs more
    first = step_seconds(d, StepShape.build(chunks=[(0, 8192, False)]))
    third = step_seconds(d, StepShape.build(chunks=[(16_384, 8192, True)]))
    assert third > first * 1.2


def test_moe_reads_only_touched_experts() -> None:
    mixtral = get_model("mixtral-8x7b-instruct")
    assert mixtral.shared_params + mixtral.expert_params * 2 / 8 == pytest.approx(12.9e9)
    assert experts_touched_fraction(mixtral, 1) == pytest.approx(0.25)
    assert experts_touched_fraction(mixtral, 64) == pytest.approx(1.0, abs=1e-6)
    d = Deployment(get_gpu("h100"), mixtral, 2)
    assert decode_step_seconds(d, 1, 100) < decode_step_seconds(d, 32, 100)
