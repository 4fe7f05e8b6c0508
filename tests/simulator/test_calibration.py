"""Every published throughput figure against the model: each must stay within +-25 %.

The parametrization carries, per point, the published figure, the figure the
model gives today (also printed in ``docs/capacity.md``) and their ratio. A
point fails when the model drifts outside +-25 % of the published figure, or
when it no longer gives the figure documented here (update both together).
"""

from __future__ import annotations

import pytest

from simulator.planner.calibration import PUBLISHED, Published, calibration_rows

#: What the model gives for each entry of ``PUBLISHED``, in order (output or input tok/s).
MODELLED: tuple[float, ...] = (
    22_767, 15_166, 3_203, 32_430, 19_501, 3_415, 5_166, 2_789, 397, 6_678, 4_455, 681,
    31_842, 31_842, 3_281, 5_756, 27_378, 5_670, 331, 30_041,
)  # fmt: skip

#: Points the model cannot bring within the band without a per-point fudge (reported in
#: docs/capacity.md); strict, so a point that comes back within the band fails the run.
OUTSIDE_BAND = {
    16: "H200 8B 500/2000 (a derived figure): the model is memory-bound there and credits "
    "the H200's bandwidth; the published H200 8B figures are only 1.0-1.17x the H100's",
}

BAND = 0.25


def _label(p: Published, modelled: float) -> str:
    return (
        f"{p.gpu}-{p.model}-{p.weights_dtype}-tp{p.tp}-{p.input_len}/{p.output_len}"
        f"-published {p.value:,.0f}-model {modelled:,.0f}-ratio {modelled / p.value:.2f}"
    )


def test_every_published_point_has_a_modelled_figure() -> None:
    assert len(MODELLED) == len(PUBLISHED)


@pytest.mark.parametrize(
    ("published", "modelled"),
    [
        pytest.param(
            p,
            m,
            id=_label(p, m),
            marks=[pytest.mark.xfail(strict=True, reason=OUTSIDE_BAND[i])]
            if i in OUTSIDE_BAND
            else [],
        )
        for i, (p, m) in enumerate(zip(PUBLISHED, MODELLED, strict=False))
    ],
)
def test_model_is_within_25_percent_of_the_published_figure(
    published: Published, modelled: float
) -> None:
    row = calibration_rows((published,))[0]
    assert row.modelled == pytest.approx(modelled, rel=0.005), "update MODELLED and the docs"
    ratio = row.modelled / published.value
    assert 1 - BAND <= ratio <= 1 + BAND, (
        f"published {published.value:,.0f}, model {row.modelled:,.0f}, ratio {ratio:.2f}"
    )


def test_mean_absolute_error_stays_as_documented() -> None:
    errors = [abs(m / p.value - 1) for p, m in zip(PUBLISHED, MODELLED, strict=True)]
    assert sum(errors) / len(errors) < 0.10
    inside = [e for i, e in enumerate(errors) if i not in OUTSIDE_BAND]
    assert max(inside) < BAND
