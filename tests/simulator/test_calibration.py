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
    21_948, 14_593, 3_203, 32_430, 19_634, 3_413, 4_425, 2_879, 397, 6_659, 4_318, 680,
    31_842, 31_842, 3_273, 5_750, 24_893, 5_672, 331, 30_041,
)  # fmt: skip

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
    [pytest.param(p, m, id=_label(p, m)) for p, m in zip(PUBLISHED, MODELLED, strict=False)],
)
def test_model_is_within_25_percent_of_the_published_figure(
    published: Published, modelled: float
) -> None:
    row = calibration_rows((published,))[0]
    ratio = row.modelled / published.value
    assert 1 - BAND <= ratio <= 1 + BAND, (
        f"published {published.value:,.0f}, model {row.modelled:,.0f}, ratio {ratio:.2f}"
    )
    assert row.modelled == pytest.approx(modelled, rel=0.005), "update MODELLED and the docs"


def test_mean_absolute_error_stays_as_documented() -> None:
    errors = [abs(m / p.value - 1) for p, m in zip(PUBLISHED, MODELLED, strict=True)]
    assert sum(errors) / len(errors) < 0.09
    assert max(errors) < BAND
