"""Retry policy: backoff schedule, which errors are retried, deadline and hooks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from backends.retry import RetryPolicy, is_retryable, retry_call
from backends.sglang.transport import ConnectFailed, error_from_upstream
from tollway.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    TollwayError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamStreamBroken,
    UpstreamTimeout,
    UpstreamUnavailable,
)


class FakeTime:
    """A clock and a sleep that only move each other."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def const(value: float) -> Callable[[], float]:
    return lambda: value


# -- the policy --------------------------------------------------------------------------------


def test_defaults_and_strict_schema() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay_s, policy.max_delay_s, policy.jitter) == (
        3,
        0.1,
        2.0,
        "full",
    )
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate({"max_attempts": 3, "retries": 2})
    with pytest.raises(ValidationError):
        RetryPolicy(base_delay_s=1.0, max_delay_s=0.5)
    with pytest.raises(ValidationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValidationError):
        policy.max_attempts = 5  # type: ignore[misc]


def test_exponential_caps_without_jitter() -> None:
    policy = RetryPolicy(max_attempts=6, base_delay_s=0.1, max_delay_s=1.0, jitter="none")
    assert list(policy.delays()) == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])


def test_full_jitter_scales_the_cap() -> None:
    policy = RetryPolicy(max_attempts=4, base_delay_s=0.5, max_delay_s=10)
    assert list(policy.delays(const(0.5))) == pytest.approx([0.25, 0.5, 1.0])
    assert list(policy.delays(const(0.0))) == [0.0, 0.0, 0.0]


@given(
    attempts=st.integers(1, 10),
    base=st.floats(0, 5),
    extra=st.floats(0, 50),
    draws=st.lists(st.floats(0, 1, exclude_max=True), min_size=10, max_size=10),
)
def test_delays_stay_within_bounds(
    attempts: int, base: float, extra: float, draws: list[float]
) -> None:
    policy = RetryPolicy(max_attempts=attempts, base_delay_s=base, max_delay_s=base + extra)
    feed = iter(draws)
    delays = list(policy.delays(lambda: next(feed)))
    assert len(delays) == attempts - 1
    assert all(0 <= d <= policy.max_delay_s for d in delays)


# -- what is retryable -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [
        ConnectFailed("refused"),
        UpstreamUnavailable("no worker"),
        UpstreamTimeout("first byte"),
        UpstreamStreamBroken("cut before the first byte"),
        UpstreamError("502"),
        error_from_upstream(429, b'{"error": {"message": "slow down"}}', "w"),
        error_from_upstream(502, b"bad gateway", "w"),
        error_from_upstream(503, b"", "w"),
        error_from_upstream(504, b"", "w"),
        error_from_upstream(408, b"", "w"),
    ],
)
def test_retryable(exc: TollwayError) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        UpstreamRejected("bad", upstream_status=400),
        error_from_upstream(400, b'{"error": {"message": "context too long"}}', "w"),
        error_from_upstream(422, b"", "w"),
        error_from_upstream(500, b'{"object": "error", "message": "boom"}', "w"),
        error_from_upstream(501, b"", "w"),
        error_from_upstream(505, b"", "w"),
        error_from_upstream(599, b"", "w"),
        InvalidRequest("bad field"),
        AuthenticationFailed("who"),
        RateLimited("the tenant's own limit", retry_after=3),
        QuotaExceeded("budget"),
        ServiceUnavailable("draining"),
        Conflict("in progress"),
        TollwayError("internal"),
    ],
)
def test_not_retryable(exc: TollwayError) -> None:
    assert not is_retryable(exc)


@pytest.mark.parametrize(
    ("status", "cls", "http", "code"),
    [
        (429, UpstreamRateLimited, 429, "upstream_rate_limited"),
        (408, UpstreamTimeout, 504, "upstream_timeout"),
        (504, UpstreamTimeout, 504, "upstream_timeout"),
        (502, UpstreamError, 502, "bad_gateway"),
        (503, UpstreamUnavailable, 503, "upstream_unavailable"),
        (500, UpstreamServerError, 502, "upstream_server_error"),
        (501, UpstreamServerError, 502, "upstream_server_error"),
        (505, UpstreamServerError, 502, "upstream_server_error"),
        (599, UpstreamServerError, 502, "upstream_server_error"),
    ],
)
def test_upstream_status_mapping(status: int, cls: type, http: int, code: str) -> None:
    error = error_from_upstream(status, b"", "w")
    assert type(error) is cls
    assert (error.status_code, error.code) == (http, code)


@pytest.mark.parametrize(
    ("header", "expected"), [("7", "7"), ("0.2", "1"), ("soon", None), ("-1", None)]
)
def test_upstream_429_passes_retry_after_on(header: str, expected: str | None) -> None:
    error = error_from_upstream(429, b"", "w", {"retry-after": header})
    assert isinstance(error, UpstreamRateLimited)
    assert error.headers.get("retry-after") == expected
    assert error.to_body()["error"]["type"] == "requests"


def test_foreign_exceptions_are_not_retryable() -> None:
    assert not is_retryable(ValueError("x"))


# -- retry_call --------------------------------------------------------------------------------


async def test_retries_until_success_with_new_attempt_numbers() -> None:
    t = FakeTime()
    seen: list[int] = []
    hooks: list[tuple[int, str, float]] = []

    async def attempt(n: int) -> str:
        seen.append(n)
        if n < 3:
            raise UpstreamUnavailable(f"worker {n} refused")
        return f"ok from {n}"

    policy = RetryPolicy(max_attempts=4, base_delay_s=0.1, max_delay_s=1)
    result = await retry_call(
        attempt,
        policy,
        on_retry=lambda n, exc, d: hooks.append((n, exc.message, d)),
        sleep=t.sleep,
        clock=t.clock,
        rand=const(0.5),
    )
    assert result == "ok from 3"
    assert seen == [1, 2, 3]
    assert t.slept == pytest.approx([0.05, 0.1])
    assert hooks == [(1, "worker 1 refused", 0.05), (2, "worker 2 refused", 0.1)]


async def test_non_retryable_error_is_raised_at_once() -> None:
    t = FakeTime()
    calls = 0

    async def attempt(n: int) -> None:
        nonlocal calls
        calls += 1
        raise UpstreamRejected("context too long", upstream_status=400)

    with pytest.raises(UpstreamRejected):
        await retry_call(attempt, RetryPolicy(), sleep=t.sleep, clock=t.clock)
    assert calls == 1
    assert t.slept == []


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    t = FakeTime()

    async def attempt(n: int) -> None:
        raise UpstreamTimeout(f"timeout {n}")

    with pytest.raises(UpstreamTimeout, match="timeout 3"):
        await retry_call(attempt, RetryPolicy(max_attempts=3), sleep=t.sleep, rand=const(1.0))
    assert t.slept == pytest.approx([0.1, 0.2])


async def test_single_attempt_policy_never_retries() -> None:
    t = FakeTime()

    async def attempt(n: int) -> None:
        raise UpstreamUnavailable("down")

    with pytest.raises(UpstreamUnavailable):
        await retry_call(attempt, RetryPolicy(max_attempts=1), sleep=t.sleep)
    assert t.slept == []


async def test_never_sleeps_past_the_deadline() -> None:
    t = FakeTime()
    calls: list[float] = []

    async def attempt(n: int) -> None:
        calls.append(t.now)
        raise UpstreamUnavailable("down")

    policy = RetryPolicy(max_attempts=10, base_delay_s=1.0, max_delay_s=8, jitter="none")
    with pytest.raises(UpstreamUnavailable):
        await retry_call(attempt, policy, deadline=t.now + 5.0, sleep=t.sleep, clock=t.clock)
    # sleeps of 1 then 2 end at +3; the next (4) would end at +7, past the deadline
    assert t.slept == [1.0, 2.0]
    assert calls == [100.0, 101.0, 103.0]
    assert t.now <= 105.0


async def test_deadline_already_passed_means_one_attempt() -> None:
    t = FakeTime()
    calls = 0

    async def attempt(n: int) -> None:
        nonlocal calls
        calls += 1
        raise UpstreamUnavailable("down")

    with pytest.raises(UpstreamUnavailable):
        await retry_call(attempt, RetryPolicy(), deadline=t.now, sleep=t.sleep, clock=t.clock)
    assert calls == 1


async def test_foreign_exceptions_and_cancellation_propagate() -> None:
    t = FakeTime()

    async def broken(n: int) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await retry_call(broken, RetryPolicy(), sleep=t.sleep)

    async def cancelled(n: int) -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await retry_call(cancelled, RetryPolicy(), sleep=t.sleep)
    assert t.slept == []


async def test_custom_retryable_predicate() -> None:
    t = FakeTime()

    async def attempt(n: int) -> int:
        if n == 1:
            raise RateLimited("provider busy")
        return n

    assert (
        await retry_call(
            attempt, RetryPolicy(), retryable=lambda e: isinstance(e, RateLimited), sleep=t.sleep
        )
        == 2
    )


async def test_real_sleep_is_used_by_default() -> None:
    async def attempt(n: int) -> int:
        if n == 1:
            raise UpstreamUnavailable("down")
        return n

    policy = RetryPolicy(base_delay_s=0.01, max_delay_s=0.01, jitter="none")
    assert await retry_call(attempt, policy) == 2
