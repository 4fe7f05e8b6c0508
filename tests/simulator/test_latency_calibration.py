"""NVIDIA NIM's closed-loop latency tables against the model: each figure within +-25 %.

One test per published point and metric (TTFT, ITL, output throughput), named
by the published figure, the figure the model gives today (also printed in
``docs/capacity.md``) and their ratio. A test fails when the model drifts
outside +-25 % of the published figure, or when it no longer gives the figure
documented here (update both together). Points the model cannot bring within
the band are strict expected failures, explained in ``docs/capacity.md``.
"""

from __future__ import annotations

from functools import cache

import pytest

from gpu_catalog.capacity import Deployment
from gpu_catalog.specs import get_gpu, get_model
from gpu_catalog.steptime import decode_step_seconds, prefill_seconds
from simulator.planner.latency import LatencyRow, closed_loop_benchmark, latency_rows
from simulator.planner.published import NIM_LATENCY, PublishedLatency
from simulator.planner.render import latency_markdown

METRICS = ("ttft", "itl", "throughput")

#: What the model gives for each entry of ``NIM_LATENCY``, in order: TTFT ms, ITL ms, tok/s.
MODELLED: tuple[tuple[float, float, float], ...] = (
    (424.2, 16.94, 56.3),
    (424.6, 20.89, 230.4),
    (895.5, 39.95, 600.1),
    (931.7, 64.64, 753.3),
    (14723.7, 92.29, 822.7),
    (44988.3, 93.10, 820.2),
    (75052.3, 94.61, 817.9),
    (104921.6, 93.95, 823.4),
    (42.7, 16.82, 59.4),
    (43.0, 17.11, 292.0),
    (44.8, 18.56, 1_346.0),
    (48.6, 20.40, 2_449.8),
    (54.6, 24.12, 4_142.7),
    (60.6, 27.93, 5_368.3),
    (66.2, 31.81, 6_284.9),
    (85.8, 5.13, 189.0),
    (85.9, 6.31, 773.3),
    (86.4, 12.09, 2_043.1),
    (116.7, 19.09, 2_592.1),
    (175.7, 32.77, 3_024.8),
    (179.9, 45.68, 3_264.5),
    (3694.1, 53.02, 3_316.4),
    (11625.4, 52.72, 3_295.4),
    (9.2, 5.04, 198.4),
    (9.3, 5.21, 958.8),
    (9.7, 6.08, 4_108.8),
    (10.6, 7.16, 6_980.3),
    (12.0, 9.29, 10_766.0),
    (13.6, 11.38, 13_179.9),
    (14.7, 13.42, 14_907.0),
    (16.4, 15.48, 16_152.9),
)  # fmt: skip

_TTFT = (
    "below saturation NIM's TTFT grows with concurrency (waiting ahead of the engine that "
    "the model does not have); the model gives about one prefill step"
)
_COLLIDE = "5,000-token prompts arriving close together share the 8,192-token prefill chunks"
_QUEUE = (
    "saturated: TTFT is queueing, c * OSL / throughput - decode time, which turns the "
    "model's -10 % throughput into +29 % to +83 % TTFT"
)
_MIXED_ITL = (
    "5,000-token prompts mixed into decode steps lengthen the model's ITL (+25 %); in NIM "
    "the wait falls on TTFT instead"
)
_CAP = (
    "NIM holds about 190-210 requests in flight and its decode slows faster with the batch; "
    "SGLang's defaults admit every user"
)

#: (point, metric) pairs outside the band (see docs/capacity.md); strict, so a pair
#: that comes back within the band fails the run.
OUTSIDE_BAND: dict[tuple[int, str], str] = {
    (2, "ttft"): _COLLIDE,
    (4, "ttft"): _QUEUE,
    (5, "ttft"): _QUEUE,
    (9, "ttft"): _TTFT,
    (10, "ttft"): _TTFT,
    (11, "ttft"): _TTFT,
    (12, "ttft"): _TTFT,
    (13, "ttft"): _TTFT,
    (13, "itl"): _CAP,
    (13, "throughput"): _CAP,
    (14, "ttft"): _CAP,
    (14, "throughput"): _CAP,
    (16, "ttft"): _TTFT,
    (17, "ttft"): _TTFT,
    (17, "itl"): _MIXED_ITL,
    (18, "ttft"): _TTFT,
    (19, "ttft"): _TTFT,
    (20, "ttft"): _TTFT,
    (23, "ttft"): _TTFT,
    (24, "ttft"): _TTFT,
    (25, "ttft"): _TTFT,
    (26, "ttft"): _TTFT,
    (27, "ttft"): _TTFT,
    (28, "ttft"): _TTFT,
    (29, "ttft"): _CAP,
    (30, "ttft"): _CAP,
    (30, "throughput"): _CAP,
}

BAND = 0.25


@cache
def _row(index: int) -> LatencyRow:
    return latency_rows((NIM_LATENCY[index],))[0]


def _value(row: LatencyRow, metric: str) -> float:
    return {"ttft": row.ttft_ms, "itl": row.itl_ms, "throughput": row.throughput}[metric]


def _published(p: PublishedLatency, metric: str) -> float:
    return {"ttft": p.ttft_ms, "itl": p.itl_ms, "throughput": p.throughput}[metric]


def _label(p: PublishedLatency, metric: str, modelled: float) -> str:
    published = _published(p, metric)
    return (
        f"{p.gpu}-{p.model}-tp{p.tp}-{p.input_len}/{p.output_len}-c{p.concurrency}-{metric}"
        f"-published {published:,.1f}-model {modelled:,.1f}-ratio {modelled / published:.2f}"
    )


def test_every_published_point_has_modelled_figures() -> None:
    assert len(MODELLED) == len(NIM_LATENCY)


@pytest.mark.parametrize(
    ("index", "metric", "modelled"),
    [
        pytest.param(
            i,
            metric,
            m[k],
            id=_label(p, metric, m[k]),
            marks=[pytest.mark.xfail(strict=True, reason=OUTSIDE_BAND[i, metric])]
            if (i, metric) in OUTSIDE_BAND
            else [],
        )
        for i, (p, m) in enumerate(zip(NIM_LATENCY, MODELLED, strict=False))
        for k, metric in enumerate(METRICS)
    ],
)
def test_model_is_within_25_percent_of_nim(index: int, metric: str, modelled: float) -> None:
    value = _value(_row(index), metric)
    assert value == pytest.approx(modelled, rel=0.005), "update MODELLED and the docs"
    published = _published(NIM_LATENCY[index], metric)
    ratio = value / published
    assert 1 - BAND <= ratio <= 1 + BAND, (
        f"published {published:,.1f}, model {value:,.1f}, ratio {ratio:.2f}"
    )


def _h100_8b() -> Deployment:
    return Deployment(get_gpu("h100"), get_model("llama-3.1-8b-instruct"), 1, "fp8", "fp8")


def test_one_user_sees_one_prefill_and_then_one_decode_step_per_token() -> None:
    d = _h100_8b()
    r = closed_loop_benchmark(d, input_len=1000, output_len=50, concurrency=1)
    assert r.mean_ttft_s == pytest.approx(prefill_seconds(d, 1000))
    # Decode steps read a growing context: between the first and the last step's time.
    assert decode_step_seconds(d, 1, 1001) <= r.mean_itl_s <= decode_step_seconds(d, 1, 1050)
    assert r.output_tokens_per_s == pytest.approx(50 / (r.mean_ttft_s + 49 * r.mean_itl_s), 0.01)


def test_closed_loop_obeys_littles_law() -> None:
    """``c`` users always in the system: c = request rate x mean request latency."""
    d = _h100_8b()
    c, isl, osl = 40, 2000, 200
    r = closed_loop_benchmark(d, input_len=isl, output_len=osl, concurrency=c)
    latency = r.mean_ttft_s + (osl - 1) * r.mean_itl_s
    assert r.output_tokens_per_s / osl * latency == pytest.approx(c, rel=0.05)
    assert r.max_batch == c


def test_more_users_than_the_pool_holds_queue_for_their_first_token() -> None:
    d = Deployment(get_gpu("h100"), get_model("llama-3.3-70b-instruct"), 2, "fp8", "fp8")
    few = closed_loop_benchmark(d, input_len=5000, output_len=100, concurrency=20)
    many = closed_loop_benchmark(d, input_len=5000, output_len=100, concurrency=200)
    assert many.max_batch < 200
    assert many.mean_ttft_s > 5 * few.mean_ttft_s
    assert many.output_tokens_per_s == pytest.approx(
        max(few.output_tokens_per_s, many.output_tokens_per_s), rel=0.5
    )


def test_the_latency_table_shows_each_figure_with_its_error() -> None:
    p = NIM_LATENCY[0]
    row = LatencyRow(p, p.ttft_ms * 1.5, p.itl_ms, p.throughput * 0.9, 1)
    line = latency_markdown([row]).splitlines()[2]
    assert f"| {p.concurrency} | 407 / 610 (+50%) | 18.6 / 18.6 (+0%) | 52 / 47 (-10%) | 1 |" in (
        line
    )
