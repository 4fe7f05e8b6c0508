"""The performance model: KV pool sizes worked out by hand, and step-time sanity."""

from __future__ import annotations

import pytest

from backends.sglang.capacity import (
    Deployment,
    decode_step_seconds,
    default_mem_fraction_static,
    experts_touched_fraction,
    kv_bytes_per_token_per_gpu,
    kv_heads_per_gpu,
    kv_pool,
    prefill_seconds,
    smallest_tp_that_fits,
    weights_bytes_per_gpu,
)
from backends.sglang.catalog import get_gpu, get_model

GIB = 2**30


def test_llama_8b_bf16_on_h100_tp1_pool_matches_hand_computation() -> None:
    # H100 80GB: the driver reports 81559 MiB.
    # SGLang's default mem_fraction_static on a 35-90 GiB GPU reserves (9.5 + tp/2) GiB:
    #   (81559 - 10 * 1024) / 81559 = 71319 / 81559 = 0.87444... -> round(., 3) = 0.874
    # total_gib     = 81559 / 1024 - 0.5 (CUDA context)  = 79.1474609375
    # weights_gib   = 8.03e9 params * 2 bytes / 2**30    = 14.95704...
    # rest_gib      = total * 0.874 - weights           = 69.17488... - 14.95704... = 54.21784...
    # cell_size     = 2 * 32 layers * 8 kv heads * 128 * 2 bytes = 131072 bytes
    # tokens        = int(rest_gib * 2**30) // 131072 = 444_152
    total_gib = 81559 / 1024 - 0.5
    weights_gib = 8.03e9 * 2 / GIB
    rest_gib = (total_gib - weights_gib) - total_gib * (1 - 0.874)
    expected = int(rest_gib * GIB) // (2 * 32 * 8 * 128 * 2)
    assert expected == 444_152

    pool = kv_pool(Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct")))
    assert pool.mem_fraction_static == 0.874
    assert pool.cell_size_bytes == 131072
    assert pool.max_total_num_tokens == expected


def test_llama_70b_fp8_on_h200_tp1_pool_matches_hand_computation() -> None:
    # H200: 143771 MiB; 90-160 GiB class reserves (12 + 1/2) GiB:
    #   (143771 - 12.5 * 1024) / 143771 = 130971 / 143771 = 0.91096... -> 0.911
    # total_gib   = 143771 / 1024 - 0.5 = 139.9013671875
    # weights_gib = 70.55e9 params * 1 byte (fp8) / 2**30 = 65.70481...
    # rest_gib    = 139.90137 * 0.911 - 65.70481 = 127.45015 - 65.70481 = 61.74534...
    # cell_size   = 2 * 80 layers * 8 kv heads * 128 * 2 bytes (bf16 KV) = 327680 bytes
    # tokens      = int(rest_gib * 2**30) // 327680 = 202_327
    total_gib = 143771 / 1024 - 0.5
    weights_gib = 70.55e9 / GIB
    rest_gib = (total_gib - weights_gib) - total_gib * (1 - 0.911)
    expected = int(rest_gib * GIB) // (2 * 80 * 8 * 128 * 2)
    assert expected == 202_327

    d = Deployment(get_gpu("h200"), get_model("llama-3.3-70b-instruct"), 1, "fp8", "bf16")
    pool = kv_pool(d)
    assert pool.mem_fraction_static == 0.911
    assert pool.max_total_num_tokens == expected


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    qwen7b = get_model("qwen2.5-7b-instruct")  # 4 KV heads
    assert kv_heads_per_gpu(qwen7b, 2) == 2
    assert kv_heads_per_gpu(qwen7b, 8) == 1
    assert kv_bytes_per_token_per_gpu(qwen7b, "bf16", 8) == 2 * 28 * 1 * 128 * 2
    assert kv_bytes_per_token_per_gpu(qwen7b, "fp8", 1) == 2 * 28 * 4 * 128 * 1


def test_weights_split_across_tp_and_pool_caps() -> None:
    model = get_model("llama-2-70b")
    assert weights_bytes_per_gpu(model, "bf16", 4) == pytest.approx(68.98e9 * 2 / 4)
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    assert kv_pool(d, max_total_tokens=1000).max_total_num_tokens == 1000
    assert (
        kv_pool(d, mem_fraction_static=0.5).max_total_num_tokens < kv_pool(d).max_total_num_tokens
    )


def test_default_mem_fraction_follows_sglang_classes() -> None:
    assert default_mem_fraction_static(get_gpu("h100"), 1) == 0.874
    assert default_mem_fraction_static(get_gpu("h100"), 8) == round(
        (81559 - 13.5 * 1024) / 81559, 3
    )
    assert default_mem_fraction_static(get_gpu("l4"), 1) == round((23034 - 2.9 * 1024) / 23034, 3)


def test_smallest_tp_that_fits() -> None:
    h100 = get_gpu("h100")
    assert smallest_tp_that_fits(h100, get_model("llama-3.1-8b-instruct")) == 1
    assert smallest_tp_that_fits(h100, get_model("llama-3.3-70b-instruct")) == 2
    assert (
        smallest_tp_that_fits(h100, get_model("llama-3.3-70b-instruct"), weights_dtype="fp8") == 1
    )
    assert smallest_tp_that_fits(get_gpu("l4"), get_model("qwen2.5-72b-instruct"), max_tp=4) is None


def test_decode_is_bandwidth_bound_and_grows_with_context() -> None:
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    one = decode_step_seconds(d, 1, 1000)
    # 16.06 GB of weights over 0.8 * 3.35 TB/s ~ 6.0 ms, plus 2 ms overhead
    assert 0.007 < one < 0.009
    assert decode_step_seconds(d, 64, 64 * 4000) > one
    faster = Deployment(get_gpu("h200"), get_model("llama-3.1-8b-instruct"))
    assert decode_step_seconds(faster, 1, 1000) < one
    assert decode_step_seconds(d, 0, 0) == 0.0


def test_prefill_costs_only_uncached_tokens() -> None:
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    assert prefill_seconds(d, 0) == 0.0
    # 2 * 8.03e9 * 1000 / (989e12 * 0.5) = 32.5 ms, plus 2 ms overhead
    assert prefill_seconds(d, 1000) == pytest.approx(2 * 8.03e9 * 1000 / (989e12 * 0.5) + 0.002)
    fp8 = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"), 1, "fp8")
    assert prefill_seconds(fp8, 1000) < prefill_seconds(d, 1000)


def test_moe_reads_only_touched_experts() -> None:
    mixtral = get_model("mixtral-8x7b-instruct")
    assert mixtral.shared_params + mixtral.expert_params * 2 / 8 == pytest.approx(12.9e9)
    assert experts_touched_fraction(mixtral, 1) == pytest.approx(0.25)
    assert experts_touched_fraction(mixtral, 64) == pytest.approx(1.0, abs=1e-6)
    d = Deployment(get_gpu("h100"), mixtral, 2)
    assert decode_step_seconds(d, 1, 100) < decode_step_seconds(d, 32, 100)
    assert prefill_seconds(d, 1000) == pytest.approx(2 * 12.9e9 * 1000 / (2 * 989e12 * 0.5) + 0.002)
