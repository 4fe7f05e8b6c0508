"""Published benchmark figures the performance model is calibrated against.

Two kinds, each with its source (``docs/capacity.md`` lists them with links):

* :data:`PUBLISHED`: offline ("max throughput") figures, every request queued
  at once, replayed by :func:`simulator.planner.calibration.offline_benchmark`.
  Every row of the TensorRT-LLM performance overview for the models and GPUs
  the catalog lists (Llama 3.1 8B and Llama 3.3 70B, FP8, on H100 and H200),
  NVIDIA's H200 launch figure for Llama 2 70B and one SGLang prefill figure.
* :data:`NIM_LATENCY`: NVIDIA NIM's closed-loop latency tables (AIPerf,
  streaming, ``c`` concurrent users), replayed by
  :func:`simulator.planner.latency.closed_loop_benchmark`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Published:
    """One published offline-throughput figure and the set-up that produced it."""

    source: str
    engine: str
    gpu: str
    model: str
    weights_dtype: str
    kv_dtype: str
    tp: int
    input_len: int
    output_len: int
    metric: str  # "output" or "input" tokens per second, all GPUs of the TP group
    value: float
    max_running_requests: int | None = None
    num_requests: int = 1200
    simulated_requests: int | None = None  # fewer, where shown to give the same figure

    @property
    def mixes_prefill(self) -> bool:
        """Whether the engine runs prompt chunks and decodes in the same step.

        TensorRT-LLM's in-flight batching does (context and generation requests
        share each iteration); SGLang's default schedule runs prefill steps alone.
        """
        return self.engine.startswith("TensorRT-LLM")


TRTLLM_PERF = (
    "TensorRT-LLM perf overview (docs/source/performance/perf-overview.md in "
    "NVIDIA/TensorRT-LLM; nvidia.github.io/TensorRT-LLM/performance/perf-overview.html)"
)
TRTLLM_H200 = "TensorRT-LLM H200 launch blog (TensorRT-LLM docs/source/blogs/H200launch.md)"
SGLANG_1060 = "SGLang PR #1060 benchmark (github.com/sgl-project/sglang/pull/1060)"
NIM_PERF = (
    "NVIDIA NIM LLM benchmarking, performance "
    "(docs.nvidia.com/nim/benchmarking/llm/1.0.0/performance)"
)

#: ``$num_requests`` of the TensorRT-LLM overview for each input/output length.
TRTLLM_NUM_REQUESTS: dict[tuple[int, int], int] = {
    (128, 128): 30000, (128, 2048): 3000, (128, 4096): 1500, (1000, 2000): 1500,
    (2048, 128): 3000, (2048, 2048): 1500, (5000, 500): 1500, (1000, 1000): 3000,
    (500, 2000): 3000, (20000, 2000): 1000,
}  # fmt: skip

#: Requests simulated for the 30,000-request 128/128 rows: within 0.7 % of the
#: figure at 30,000 for all four rows (H200 8B 27,635 vs 27,736; H100 8B 27,609
#: vs 27,694; H200 70B 3,426 vs 3,447; H100 TP2 70B 6,005 vs 6,044) in a fraction
#: of the time; 3,000 requests would be 1.2-3.2 % low. See docs/capacity.md.
SIMULATED_REQUESTS_128_128 = 10_000

#: Total output tokens/s, FP8 ModelOpt checkpoints, PyTorch backend: (H200, H100) per row.
#: Llama 3.1 8B runs at TP1 on both; Llama 3.3 70B at TP1 on the H200, TP2 on the H100.
_TRTLLM_TABLE: dict[str, dict[tuple[int, int], tuple[int, int]]] = {
    "llama-3.1-8b-instruct": {
        (128, 128): (27_911, 28_312), (128, 2048): (26_221, 22_714),
        (128, 4096): (18_027, 14_325), (500, 2000): (20_770, 17_660),
        (1000, 1000): (17_744, 15_220), (1000, 2000): (16_828, 13_899),
        (2048, 128): (3_538, 3_450), (2048, 2048): (12_194, 9_305),
        (5000, 500): (3_902, 3_459), (20000, 2000): (1_804, 1_351),
    },
    "llama-3.3-70b-instruct": {
        (128, 128): (3_803, 6_378), (128, 2048): (4_336, 6_651),
        (128, 4096): (2_872, 4_199), (500, 2000): (3_666, 5_222),
        (1000, 1000): (2_909, 4_205), (1000, 2000): (2_994, 4_146),
        (2048, 128): (442, 762), (2048, 2048): (2_003, 3_082),
        (5000, 500): (566, 898), (20000, 2000): (283, 437),
    },
}  # fmt: skip
_TRTLLM_H100_TP = {"llama-3.1-8b-instruct": 1, "llama-3.3-70b-instruct": 2}


def _trtllm_rows() -> tuple[Published, ...]:
    rows = []
    for model, table in _TRTLLM_TABLE.items():
        for (isl, osl), (h200, h100) in table.items():
            n = TRTLLM_NUM_REQUESTS[isl, osl]
            simulated = SIMULATED_REQUESTS_128_128 if (isl, osl) == (128, 128) else None
            for gpu, tp, value in (("h200", 1, h200), ("h100", _TRTLLM_H100_TP[model], h100)):
                rows.append(
                    Published(
                        TRTLLM_PERF,
                        "TensorRT-LLM",
                        gpu,
                        model,
                        "fp8",
                        "fp8",
                        tp,
                        isl,
                        osl,
                        "output",
                        value,
                        num_requests=n,
                        simulated_requests=simulated,
                    )
                )
    return tuple(rows)


#: Published offline figures the model is compared with (see docs/capacity.md).
PUBLISHED: tuple[Published, ...] = (
    *_trtllm_rows(),
    Published(
        TRTLLM_H200, "TensorRT-LLM v0.5", "h200", "llama-2-70b", "fp8", "fp8", 1, 2048, 128,
        "output", 303, max_running_requests=32,
    ),
    Published(
        SGLANG_1060, "SGLang", "h100", "llama-3.1-8b-instruct", "bf16", "bf16", 1, 8192, 8,
        "input", 27_670,
    ),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PublishedLatency:
    """One row of a closed-loop latency table: ``concurrency`` users, each with one request.

    ``ttft_ms`` and ``itl_ms`` are AIPerf's means over the measured requests;
    ``throughput`` is output tokens/s of the whole deployment.
    """

    source: str
    gpu: str
    model: str
    weights_dtype: str
    kv_dtype: str
    tp: int
    input_len: int
    output_len: int
    concurrency: int
    ttft_ms: float
    itl_ms: float
    throughput: float


#: NIM 1.8.0 tables: (input, output) -> rows of (concurrency, TTFT ms, ITL ms, output tok/s).
_NIM_TABLES: dict[tuple[str, str, int], dict[tuple[int, int], tuple[tuple[float, ...], ...]]] = {
    ("llama-3.3-70b-instruct", "h100", 2): {
        (5000, 500): (
            (1, 406.77, 18.58, 51.67), (5, 546.7, 21.83, 218.48),
            (25, 688.69, 38.75, 623.4), (50, 834.51, 59.73, 814.37),
            (100, 7996.25, 92.91, 917.26), (150, 34794.22, 92.86, 920.9),
            (200, 61680.22, 93.06, 920.54), (250, 88605.32, 93.2, 920.12),
        ),
        (500, 2000): (
            (1, 47.77, 18.91, 52.85), (5, 126.53, 19.04, 261.83),
            (25, 147.63, 21.69, 1149.05), (50, 181.64, 23.97, 2078.43),
            (100, 229.77, 29.98, 3322.87), (150, 296.74, 37.85, 3948.26),
            (200, 4867.89, 40.72, 4624.14),
        ),
    },
    ("llama-3.1-8b-instruct", "h100", 1): {
        (5000, 500): (
            (1, 77.45, 4.62, 209.96), (5, 279.92, 5.42, 838.03),
            (25, 724.14, 9.67, 2251.44), (50, 817.73, 16.47, 2765.71),
            (100, 915.15, 29.67, 3180.16), (150, 1080.0, 43.35, 3301.68),
            (200, 4361.35, 50.41, 3378.48), (250, 11717.42, 50.53, 3372.0),
        ),
        (500, 2000): (
            (1, 13.84, 4.56, 218.86), (5, 30.88, 4.81, 1035.85),
            (25, 97.07, 5.82, 4263.49), (50, 135.26, 7.06, 7009.01),
            (100, 239.92, 9.51, 10379.22), (150, 376.95, 13.34, 11053.75),
            (200, 1664.34, 14.96, 12549.74), (250, 6550.46, 16.97, 12268.82),
        ),
    },
}  # fmt: skip


def _nim_rows() -> tuple[PublishedLatency, ...]:
    rows = []
    for (model, gpu, tp), tables in _NIM_TABLES.items():
        for (isl, osl), table in tables.items():
            for c, ttft, itl, tput in table:
                rows.append(
                    PublishedLatency(
                        NIM_PERF, gpu, model, "fp8", "fp8", tp, isl, osl, int(c), ttft, itl, tput
                    )
                )
    return tuple(rows)


#: NIM's published closed-loop latency points (FP8 weights; FP8 KV cache assumed).
NIM_LATENCY: tuple[PublishedLatency, ...] = _nim_rows()
