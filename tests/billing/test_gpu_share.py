"""GPU-second share with a fake clock: exact piecewise accrual."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.gpu_share import GpuShareAccountant, internal_cost_micros


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_requests_split_the_worker_time() -> None:
    clock = FakeClock()
    acct = GpuShareAccountant(clock)
    a = acct.start("w1")  # t=100
    clock.now = 102.0
    b = acct.start("w1")  # a alone for 2 s
    clock.now = 104.0
    c = acct.start("w1")  # a, b share 2 s -> 1 s each
    clock.now = 107.0  # a, b, c share 3 s -> 1 s each
    assert acct.in_flight("w1") == 3
    share_a = acct.finish(a)
    clock.now = 109.0  # b, c share 2 s -> 1 s each
    share_b = acct.finish(b)
    clock.now = 110.0  # c alone 1 s
    share_c = acct.finish(c)
    assert share_a == pytest.approx(2 + 1 + 1, abs=1e-12)
    assert share_b == pytest.approx(1 + 1 + 1, abs=1e-12)
    assert share_c == pytest.approx(1 + 1 + 1, abs=1e-12)
    # The shares add up to the worker's busy time (100 -> 110).
    assert share_a + share_b + share_c == pytest.approx(10.0, abs=1e-12)
    assert acct.in_flight("w1") == 0


def test_workers_are_independent_and_idle_time_is_free() -> None:
    clock = FakeClock()
    acct = GpuShareAccountant(clock)
    a = acct.start("w1")
    b = acct.start("w2")
    clock.now += 4
    assert acct.finish(a) == pytest.approx(4.0)
    clock.now += 100  # w1 idle
    c = acct.start("w1")
    clock.now += 1
    assert acct.finish(c) == pytest.approx(1.0)
    assert acct.finish(b) == pytest.approx(105.0)
    assert acct.finish(b) == 0.0  # finishing twice accrues nothing


def test_thirds_sum_exactly() -> None:
    clock = FakeClock()
    acct = GpuShareAccountant(clock)
    handles = [acct.start("w") for _ in range(3)]
    clock.now += 1.0
    shares = [acct.finish(h) for h in handles]
    assert shares[0] == pytest.approx(1 / 3)
    assert sum(shares) == pytest.approx(1.0)


def test_internal_cost_at_gpu_hour_price() -> None:
    # 90 GPU-seconds at 3.60 USD per GPU-hour = 0.09 USD = 90,000 micro-USD.
    assert internal_cost_micros(90.0, Decimal("3.60")) == 90_000
    assert internal_cost_micros(0.5, "2.50") == 347  # 0.000347222.. USD -> 347 micro-USD
