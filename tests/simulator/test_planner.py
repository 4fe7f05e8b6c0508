"""Capacity planning: sizing by hand, the simulator against closed forms, files, search."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from gpu_catalog.capacity import Deployment
from gpu_catalog.specs import get_gpu, get_model
from gpu_catalog.steptime import (
    StepShape,
    decode_step_seconds,
    prefill_seconds,
    step_seconds,
)
from simulator.planner.calibration import offline_benchmark
from simulator.planner.des import simulate
from simulator.planner.results import percentile, weighted_percentile
from simulator.planner.schema import (
    check_references,
    load_pools,
    load_workload,
    parse_pools,
    parse_workload,
)
from simulator.planner.search import search
from simulator.planner.sizing import capacity_report
from tollway.errors import ConfigError

GIB = 2**30
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


# -- sizing: every figure worked out by hand ----------------------------------------------
def test_llama2_70b_kv_per_request_at_4k_fp16_is_1_34_gb_not_0_4() -> None:
    # 2 (K and V) x 80 layers x 8 KV heads x 128 dims x 4096 tokens x 2 bytes
    #   = 327,680 bytes per token x 4096 = 1,342,177,280 bytes = 1.34 GB (1.25 GiB)
    r = capacity_report("h100", "llama-2-70b", weights_dtype="fp16", kv_dtype="fp16")
    assert r.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 327_680
    assert r.kv_bytes_per_request == 1_342_177_280
    assert r.kv_gb_per_request == pytest.approx(1.342, abs=1e-3)
    # 68.98e9 params x 2 bytes = 137.96 GB of weights: no 80 GB GPU holds them.
    assert r.weights_gb_total == pytest.approx(137.96)
    assert not r.fits and r.concurrency == 0
    # TP2: 64.24 GiB weights per GPU; reserve 512 + 1.5 x 8192 + 2 x 256 + 2/8 x 1024
    # = 13,568 MiB -> fraction (81559 - 13568)/81559 = 0.834;
    # rest = (79.1475 - 64.2427) - 79.1475 x 0.166 = 1.7664 GiB; per-GPU cell
    # 2*80*4*128*2 = 163,840 B -> 11,575 tokens -> 2 requests of 4096 tokens per pair.
    assert r.smallest_tp_that_fits == 2
    assert r.concurrency_at_smallest_tp == 2
    assert "does not fit" in r.verdict() and "smallest TP" in r.verdict()


def test_llama2_70b_fp8_on_h200_matches_hand_computation() -> None:
    # total = 143771/1024 - 0.5 = 139.90137 GiB; fraction 0.907 (reserve 13,440 MiB)
    # weights = (68.98e9 x 1 byte + embedding and head 2 x 32,000 x 8,192 x 1 more byte,
    #   as they stay BF16) / 2**30 = 64.73091 GiB
    # rest = (139.90137 - 64.73091) - 139.90137 x 0.093 = 62.15963 GiB
    # cell = 2 x 80 x 8 x 128 x 1 byte = 163,840 bytes -> 407,369 tokens
    # 4K: 407,369 // 4096 = 99; headroom: floor(0.8 x 407,369) = 325,895 // 4096 = 79
    total = 143771 / 1024 - 0.5
    rest = (total - (68.98e9 + 2 * 32_000 * 8_192) / GIB) - total * (1 - 0.907)
    assert int(rest * GIB) // 163_840 == 407_369
    r = capacity_report("h200", "llama-2-70b", weights_dtype="fp8", kv_dtype="fp8")
    assert r.kv_pool_tokens == 407_369
    assert (r.concurrency, r.headroom_concurrency) == (99, 79)
    r32 = capacity_report(
        "h200", "llama-2-70b", weights_dtype="fp8", kv_dtype="fp8", context_tokens=32768
    )
    assert r32.concurrency == 407_369 // 32768 == 12
    assert r32.exceeds_model_context  # Llama 2 was trained at 4K: arithmetic only


def test_qwen7b_on_l4_and_llama8b_on_a100_match_hand_computation() -> None:
    # L4: 23034 MiB; reserve 512 + 1.5 x 2048 + 2 x 24 + 128 = 3,760 MiB (no 10 GiB floor
    # below 60 GiB) -> round((23034 - 3760)/23034, 3) = 0.837
    # total = 23034/1024 - 0.5 = 21.99414; weights = 7.62e9 x 2 / 2**30 = 14.19336 GiB
    # rest = (21.99414 - 14.19336) - 21.99414 x 0.163 = 4.21574 GiB;
    # cell = 2 x 28 x 4 x 128 x 2 = 57,344 -> 78,937 tokens -> 9 requests of 8K
    r = capacity_report("l4", "qwen2.5-7b-instruct", context_tokens=8192)
    assert r.mem_fraction_static == 0.837
    assert r.kv_pool_tokens == 78_937
    assert r.concurrency == 78_937 // 8192 == 9
    # A100 80GB: 81920 MiB; reserve 13,440 MiB -> 68480/81920 = 0.836; total = 79.5 GiB
    # weights = 8.03e9 x 2 / 2**30 = 14.95704; rest = (79.5 - 14.95704) - 79.5 x 0.164
    # = 51.50496; fp8 KV cell = 2 x 32 x 8 x 128 x 1 = 65,536 -> 843,857 tokens; 16K -> 51
    r = capacity_report("a100", "llama-3.1-8b-instruct", kv_dtype="fp8", context_tokens=16384)
    assert r.kv_pool_tokens == 843_857
    assert (r.concurrency, r.headroom_concurrency) == (51, 41)


# -- the simulator against closed forms ----------------------------------------------------
def _workload(**agent: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pool": "p",
        "sessions_per_minute": 60,
        "turns": 1,
        "system_prompt_tokens": 0,
        "first_turn_tokens": 1000,
        "turn_input_tokens": 100,
        "output_tokens": 50,
    }
    base.update(agent)
    return {"seed": 1, "duration_s": 60, "agents": {"a": base}}


def _pools(**pool: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"gpu": "h100", "model": {"name": "llama-3.1-8b-instruct"}}
    base.update(pool)
    return {"prices": {"h100": 2.0}, "pools": {"p": base}}


def test_one_request_alone_is_prefill_plus_decode_steps() -> None:
    wl = parse_workload(_workload(max_sessions=1, first_turn_tokens=1000, output_tokens=50))
    result = simulate(wl, parse_pools(_pools())).pools["p"]
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    prefill = prefill_seconds(d, 1000)
    # decode step j (j = 1..49) reads the weights and 1000 + j tokens of KV
    decode = [decode_step_seconds(d, 1, 1000 + j) for j in range(1, 50)]
    assert result.turns_completed == 1
    assert result.ttft_p50_s == pytest.approx(prefill)
    assert result.e2e_p50_s == pytest.approx(prefill + sum(decode))
    # KV grows by 128 KiB per token against 16 GB of weights: ~ prefill + 49 x one step
    assert result.e2e_p50_s == pytest.approx(prefill + 49 * decode[0], rel=1e-3)
    assert result.itl_p50_s == pytest.approx(decode[24], rel=1e-4)
    assert result.output_tokens == 50 and result.cache_hit_rate == 0.0


def test_a_batch_is_timed_by_the_memory_roofline() -> None:
    # 8 requests queued at once: one prefill of 8 x 512 tokens (one 8K chunk), then 31
    # decode steps of batch 8, each (layers and lm_head + KV of all 8) / (0.8 x 3.35 TB/s)
    # + 2 ms + 8 x 5 us: at batch 8 the GPU waits for memory, not for its tensor cores.
    d = Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"))
    r = offline_benchmark(d, input_len=512, output_len=32, num_requests=8)
    weights = (8.03e9 - 128_256 * 4_096) * 2
    host = 0.002 + 8 * 5e-6
    steps = [(weights + 8 * (512 + j) * 131_072) / (0.8 * 3.35e12) + host for j in range(1, 32)]
    prefill = step_seconds(d, StepShape.build(chunks=[(0, 512, True)] * 8))
    assert r.max_batch == 8
    assert r.duration_s == pytest.approx(prefill + sum(steps))
    # the weights are read once per step for the whole batch: 8 tokens for ~the price of 1
    assert steps[0] < 1.1 * decode_step_seconds(d, 1, 512)


def test_multi_turn_sessions_hit_the_prefix_cache_and_masking_costs_hits() -> None:
    agent = {"turns": 6, "system_prompt_tokens": 2000, "tool_wait_s": 1.0}
    plain = simulate(parse_workload(_workload(**agent)), parse_pools(_pools())).pools["p"]
    masked = simulate(
        parse_workload(_workload(**agent, compression={"mask_tool_results_after": 1})),
        parse_pools(_pools()),
    ).pools["p"]
    assert plain.cache_hit_rate > 0.6
    assert masked.cache_hit_rate < plain.cache_hit_rate
    assert masked.prompt_tokens < plain.prompt_tokens


def test_plans_are_deterministic_for_a_seed() -> None:
    wl = parse_workload(_workload(turns={"dist": "uniform", "low": 1, "high": 4}))
    pools = parse_pools(_pools(workers=2, policy="power_of_two"))
    first = simulate(wl, pools).to_dict()
    assert simulate(wl, pools).to_dict() == first
    other = simulate(wl.model_copy(update={"seed": 2}), pools).to_dict()
    assert other != first


def test_a_full_pool_queues_then_sheds_and_costs_are_billed() -> None:
    wl = parse_workload(_workload(sessions_per_minute=600, output_tokens=400))
    pools = parse_pools(_pools(mem_fraction_static=0.3, max_queue_wait_s=0.5, queue_size=5))
    p = simulate(wl, pools).pools["p"]
    assert p.turns_rejected > 0 and p.sessions_failed == p.turns_rejected
    assert p.queue_wait_p99_s > 0
    # one H100 for the 60 s window at $2/hour
    assert p.gpu_hours == pytest.approx(60 / 3600)
    assert p.cost_usd == pytest.approx(2 * 60 / 3600)
    assert p.cost_per_session == pytest.approx(p.cost_usd / p.sessions_completed)


def test_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert math.isnan(percentile([], 99))
    assert weighted_percentile([0.01, 0.5], [99, 1], 99) == 0.01
    assert weighted_percentile([0.01, 0.5], [98, 2], 99) == 0.5


# -- files -----------------------------------------------------------------------------------
def test_example_files_are_valid() -> None:
    wl = load_workload(EXAMPLES / "agents-workload.yaml")
    pools = load_pools(EXAMPLES / "pools.yaml")
    check_references(wl, pools)


@pytest.mark.parametrize(
    ("data", "path", "words"),
    [
        (_workload(turnz=3), "agents.a.turnz", "unknown key"),
        (_workload(turns={"dist": "lognormal", "mean": -1}), "agents.a.turns.mean", "greater"),
        (_workload(turns={"dist": "zipf", "mean": 3}), "agents.a.turns", "dist"),
        ({"duration_s": 60, "agents": {}}, "agents", "at least 1"),
    ],
)
def test_bad_workload_files_name_the_yaml_path(data: Any, path: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_workload(data)
    assert info.value.path == path
    assert words in info.value.reason


def test_bad_pool_files_and_references(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        parse_pools(_pools(model={"name": "gpt-17"}))
    assert info.value.path == "pools.p.model.name" and "unknown model" in info.value.reason
    with pytest.raises(ConfigError) as info:
        parse_pools(_pools(gpu="b200"))
    assert info.value.path == "pools.p.gpu"
    with pytest.raises(ConfigError) as info:
        check_references(parse_workload(_workload(pool="nope")), parse_pools(_pools()))
    assert info.value.path == "agents.a.pool"
    bad = tmp_path / "w.yaml"
    bad.write_text("agents: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML.*line"):
        load_workload(bad)
    with pytest.raises(ConfigError, match="mapping"):
        parse_workload([1, 2])
    with pytest.raises(ConfigError) as info:
        simulate(
            parse_workload(_workload()),
            parse_pools(_pools(model={"name": "llama-2-70b", "weights_dtype": "fp16"})),
        )
    assert info.value.path == "pools.p.model" and "does not fit" in info.value.reason


# -- search and calibration ------------------------------------------------------------------
def test_search_finds_the_fewest_workers_that_meet_the_targets() -> None:
    wl = parse_workload(
        {
            **_workload(sessions_per_minute=240, turns=2, output_tokens=100),
            "duration_s": 30,
            "targets": {"ttft_p99_s": 0.5, "itl_p99_s": 0.05},
        }
    )
    pools = parse_pools(_pools(search={"max_workers": 4}))
    result = search(wl, pools)
    choice = result.choices["p"].chosen
    assert choice is not None and result.feasible
    assert choice.result.ttft_p99_s <= 0.5 and choice.result.itl_p99_s <= 0.05
    fewer = [c for c in result.choices["p"].tried if c.workers < choice.workers]
    assert all(not c.meets for c in fewer)
    assert result.pools_file(pools).pools["p"].workers == choice.workers
    assert search(wl, pools).to_dict() == result.to_dict()
    with pytest.raises(ConfigError, match="targets"):
        search(wl.model_copy(update={"targets": None}), pools)
