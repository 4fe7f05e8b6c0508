"""The memory model: SGLang 0.5.6's defaults and KV pool sizes, worked out by hand."""

from __future__ import annotations

import pytest

from gpu_catalog.capacity import (
    Deployment,
    default_mem_fraction_static,
    fits,
    kv_bytes_per_token_per_gpu,
    kv_heads_per_gpu,
    kv_pool,
    smallest_tp_that_fits,
    weights_bytes_per_gpu,
)
from gpu_catalog.server_defaults import default_max_running_requests, server_defaults
from gpu_catalog.specs import get_gpu, get_model

GIB = 2**30
H100_TOTAL_GIB = 81559 / 1024 - 0.5  # driver MiB, less the CUDA context
H200_TOTAL_GIB = 143771 / 1024 - 0.5


def test_h100_and_h200_defaults_follow_server_args() -> None:
    # ServerArgs._handle_gpu_memory_settings, H100/H200 class, tp < 4:
    #   chunked_prefill_size 8192, cuda_graph_max_bs 256
    #   reserved = 512 + 8192 * 1.5 + 256 * 2 + 1/8 * 1024 = 13,440 MiB (> the 10 GiB floor)
    h100 = server_defaults(get_gpu("h100"), 1)
    assert (h100.chunked_prefill_size, h100.cuda_graph_max_bs) == (8192, 256)
    assert h100.reserved_mib == 13_440
    assert h100.mem_fraction_static == round((81559 - 13_440) / 81559, 3) == 0.835
    assert server_defaults(get_gpu("h200"), 1).mem_fraction_static == round(
        (143771 - 13_440) / 143771, 3
    )
    assert default_mem_fraction_static(get_gpu("h200"), 1) == 0.907
    # tp 8: 512 CUDA graphs, 1 GiB per-rank constants: 512 + 12288 + 1024 + 1024 = 14,848
    assert server_defaults(get_gpu("h100"), 8).cuda_graph_max_bs == 512
    assert default_mem_fraction_static(get_gpu("h100"), 8) == round((81559 - 14_848) / 81559, 3)


def test_small_gpus_have_small_chunks_and_no_10_gib_floor() -> None:
    # L4 (23,034 MiB < 35 GiB): chunk 2048, 24 graphs: 512 + 3072 + 48 + 128 = 3,760 MiB
    l4 = server_defaults(get_gpu("l4"), 1)
    assert (l4.chunked_prefill_size, l4.cuda_graph_max_bs, l4.reserved_mib) == (2048, 24, 3760)
    assert l4.mem_fraction_static == round((23034 - 3760) / 23034, 3) == 0.837
    # an explicit chunk size changes the activation reserve: 512 + 1.5 * 16384 + 512 + 128
    big = server_defaults(get_gpu("h100"), 1, chunked_prefill_size=16384)
    assert big.reserved_mib == 512 + 24_576 + 512 + 128


def test_default_max_running_requests() -> None:
    # min(pool // 2, min(max(int(pool / context * 512), 2048), 4096))
    assert default_max_running_requests(418_865, 131_072) == 2048  # 1636 -> floor 2048
    assert default_max_running_requests(1_500_000, 32_768) == 4096  # 23,437 -> cap 4096
    assert default_max_running_requests(90, 131_072) == 45  # the pool halves it


def test_llama_8b_bf16_on_h100_tp1_pool_matches_hand_computation() -> None:
    # weights_gib = 8.03e9 params * 2 bytes / 2**30           = 14.957...
    # rest_gib    = (79.1475 - 14.957) - 79.1475 * (1 - 0.835) = 51.1327...
    # cell_size   = 2 * 32 layers * 8 kv heads * 128 * 2 bytes = 131,072 bytes
    weights_gib = 8.03e9 * 2 / GIB
    rest_gib = (H100_TOTAL_GIB - weights_gib) - H100_TOTAL_GIB * (1 - 0.835)
    expected = int(rest_gib * GIB) // (2 * 32 * 8 * 128 * 2)
    assert expected == 418_865

    pool = kv_pool(Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct")))
    assert pool.mem_fraction_static == 0.835
    assert pool.cell_size_bytes == 131072
    assert pool.max_total_num_tokens == expected


def test_fp8_checkpoints_keep_embedding_and_head_in_bf16() -> None:
    # Llama 3.1 8B: embedding and lm_head are each 128,256 x 4,096 = 525,336,576 params
    outer = 2 * 128_256 * 4_096
    model = get_model("llama-3.1-8b-instruct")
    assert weights_bytes_per_gpu(model, "fp8", 1) == pytest.approx((8.03e9 - outer) + 2 * outer)
    assert weights_bytes_per_gpu(model, "fp8", 1) - 8.03e9 == pytest.approx(1.05e9, rel=0.01)
    # BF16 checkpoints: every parameter at 2 bytes; TP shards everything
    assert weights_bytes_per_gpu(model, "bf16", 2) == pytest.approx(8.03e9)


def test_llama_70b_fp8_on_h200_tp1_pool_matches_hand_computation() -> None:
    # weights = (70.55e9 - 2 * 128,256 * 8,192) * 1 byte + 2 * 128,256 * 8,192 * 2 bytes
    #         = 72,651,346,304 bytes = 67.662 GiB
    # rest    = (139.901 - 67.662) - 139.901 * (1 - 0.907) = 59.2284 GiB
    # cell    = 2 * 80 layers * 8 kv heads * 128 * 2 bytes (bf16 KV) = 327,680 bytes
    outer = 2 * 128_256 * 8_192
    weights_gib = ((70.55e9 - outer) + 2 * outer) / GIB
    assert weights_gib == pytest.approx(67.662, abs=1e-3)
    rest_gib = (H200_TOTAL_GIB - weights_gib) - H200_TOTAL_GIB * (1 - 0.907)
    expected = int(rest_gib * GIB) // (2 * 80 * 8 * 128 * 2)
    assert expected == 194_080

    d = Deployment(get_gpu("h200"), get_model("llama-3.3-70b-instruct"), 1, "fp8", "bf16")
    pool = kv_pool(d)
    assert pool.mem_fraction_static == 0.907
    assert pool.max_total_num_tokens == expected


def test_llama_3_3_70b_fp8_does_not_start_on_one_h100() -> None:
    # 67.662 GiB of weights against 79.147 * 0.835 = 66.088 GiB SGLang may use: rest < 0,
    # "Not enough memory. Please try to increase --mem-fraction-static."
    d = Deployment(get_gpu("h100"), get_model("llama-3.3-70b-instruct"), 1, "fp8", "fp8")
    pool = kv_pool(d)
    assert pool.rest_gib == pytest.approx((H100_TOTAL_GIB * 0.835) - 67.662, abs=1e-3)
    assert pool.rest_gib < 0 and pool.max_total_num_tokens == 0 and not pool.fits
    assert not fits(d)
    assert smallest_tp_that_fits(get_gpu("h100"), d.model, weights_dtype="fp8") == 2


def test_llama_2_70b_fp8_on_one_h100_holds_one_4k_request_at_headroom() -> None:
    # weights = 68.98e9 + 2 * 32,000 * 8,192 = 69,504,288,000 bytes = 64.731 GiB
    # rest    = 66.088 - 64.731 = 1.357 GiB; cell 2 * 80 * 8 * 128 * 1 = 163,840 bytes
    weights_gib = (68.98e9 + 2 * 32_000 * 8_192) / GIB
    rest_gib = (H100_TOTAL_GIB - weights_gib) - H100_TOTAL_GIB * (1 - 0.835)
    expected = int(rest_gib * GIB) // 163_840
    d = Deployment(get_gpu("h100"), get_model("llama-2-70b"), 1, "fp8", "fp8")
    tokens = kv_pool(d).max_total_num_tokens
    assert tokens == expected == 8_894
    assert tokens // 4096 == 2 and int(0.8 * tokens) // 4096 == 1


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    qwen7b = get_model("qwen2.5-7b-instruct")  # 4 KV heads
    assert kv_heads_per_gpu(qwen7b, 2) == 2
    assert kv_heads_per_gpu(qwen7b, 8) == 1
    assert kv_bytes_per_token_per_gpu(qwen7b, "bf16", 8) == 2 * 28 * 1 * 128 * 2
    assert kv_bytes_per_token_per_gpu(qwen7b, "fp8", 1) == 2 * 28 * 4 * 128 * 1


def test_pool_caps_and_fraction_overrides() -> None:
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    assert kv_pool(d, max_total_tokens=1000).max_total_num_tokens == 1000
    assert (
        kv_pool(d, mem_fraction_static=0.5).max_total_num_tokens < kv_pool(d).max_total_num_tokens
    )


def test_smallest_tp_that_fits() -> None:
    h100 = get_gpu("h100")
    assert smallest_tp_that_fits(h100, get_model("llama-3.1-8b-instruct")) == 1
    assert smallest_tp_that_fits(h100, get_model("llama-3.3-70b-instruct")) == 2
    assert (
        smallest_tp_that_fits(
            get_gpu("h200"), get_model("llama-3.3-70b-instruct"), weights_dtype="fp8"
        )
        == 1
    )
    assert smallest_tp_that_fits(get_gpu("l4"), get_model("qwen2.5-72b-instruct"), max_tp=4) is None
