"""The shared backoff helper: schedule, jitter, attempts, deadline; a fake clock, no real sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from itertools import islice

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollway.backoff import Backoff, Jitter, retry


class FakeTime:
    """A clock and a sleep that only move each other."""

    def __init__(self) -> None:
        self.now = 50.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def const(value: float) -> Callable[[], float]:
    return lambda: value


def failing(
    times: int, exc: Exception, value: str = "ok"
) -> tuple[list[int], Callable[[int], Awaitable[str]]]:
    calls: list[int] = []

    async def attempt(number: int) -> str:
        calls.append(number)
        if len(calls) <= times:
            raise exc
        return value

    return calls, attempt


def test_caps_double_then_stay_at_the_maximum() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.cap(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert list(islice(backoff.delays(), 5)) == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_jitter_kinds() -> None:
    assert Backoff(1.0, 8.0, "none").delay(2, const(0.3)) == 4.0
    assert Backoff(1.0, 8.0, "full").delay(2, const(0.25)) == 1.0
    assert Backoff(1.0, 8.0, "full").delay(2, const(0.0)) == 0.0
    assert Backoff(1.0, 8.0, "equal").delay(2, const(0.0)) == 2.0
    assert Backoff(1.0, 8.0, "equal").delay(2, const(0.5)) == 3.0


@given(
    initial=st.floats(0, 10),
    extra=st.floats(0, 100),
    retry_number=st.integers(0, 60),
    r=st.floats(0, 1, exclude_max=True),
    jitter=st.sampled_from(["none", "full", "equal"]),
)
def test_delay_never_exceeds_the_cap(
    initial: float, extra: float, retry_number: int, r: float, jitter: Jitter
) -> None:
    backoff = Backoff(initial, initial + extra, jitter)
    delay = backoff.delay(retry_number, const(r))
    assert 0 <= delay <= initial + extra
    assert delay <= backoff.cap(retry_number)


def test_negative_delays_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(-1.0, 1.0)


async def test_retries_until_success_with_growing_delays() -> None:
    t = FakeTime()
    calls, attempt = failing(3, TimeoutError())
    seen: list[tuple[int, float]] = []
    result = await retry(
        attempt,
        Backoff(0.1, 0.3),
        retryable=lambda e: isinstance(e, TimeoutError),
        on_retry=lambda n, e, d: seen.append((n, d)),
        sleep=t.sleep,
        clock=t.clock,
    )
    assert result == "ok"
    assert calls == [1, 2, 3, 4]
    assert t.slept == pytest.approx([0.1, 0.2, 0.3])
    assert seen == [(1, 0.1), (2, 0.2), (3, 0.3)]


async def test_gives_up_after_the_attempts_with_the_last_error() -> None:
    t = FakeTime()
    calls, attempt = failing(10, TimeoutError("late"))
    with pytest.raises(TimeoutError, match="late"):
        await retry(attempt, Backoff(1, 1), retryable=lambda e: True, attempts=3, sleep=t.sleep)
    assert calls == [1, 2, 3]
    assert t.slept == [1, 1]


async def test_an_error_not_retryable_propagates_at_once() -> None:
    t = FakeTime()
    calls, attempt = failing(1, ValueError("bad"))
    with pytest.raises(ValueError):
        await retry(
            attempt, Backoff(1, 1), retryable=lambda e: isinstance(e, OSError), sleep=t.sleep
        )
    assert calls == [1]
    assert t.slept == []


async def test_never_sleeps_past_the_deadline() -> None:
    t = FakeTime()
    calls, attempt = failing(10, TimeoutError())
    with pytest.raises(TimeoutError):
        await retry(
            attempt,
            Backoff(1.0, 8.0),
            retryable=lambda e: True,
            deadline=t.now + 5.0,
            sleep=t.sleep,
            clock=t.clock,
        )
    assert t.slept == [1.0, 2.0]  # 1 + 2 = 3; the next 4 s would end at 7 > 5
    assert calls == [1, 2, 3]


async def test_cancellation_is_not_caught() -> None:
    t = FakeTime()

    async def cancelled(number: int) -> str:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry(cancelled, Backoff(1, 1), retryable=lambda e: True, sleep=t.sleep)
    assert t.slept == []
