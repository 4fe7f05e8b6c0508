"""The per-worker circuit breaker: transitions, windows, probes, health checks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from backends.sglang.circuit import CircuitBreaker, CircuitConfig, CircuitState

CLOSED, HALF_OPEN, OPEN = CircuitState.CLOSED, CircuitState.HALF_OPEN, CircuitState.OPEN


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(
    clock: Clock, changes: list[tuple[CircuitState, CircuitState]] | None = None, **config: object
) -> CircuitBreaker:
    hook = None if changes is None else (lambda old, new: changes.append((old, new)))
    return CircuitBreaker(CircuitConfig.model_validate(config), clock=clock, on_change=hook)


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.config.consecutive_failures):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state is OPEN


def test_state_values_match_the_dashboards() -> None:
    assert (int(CLOSED), int(HALF_OPEN), int(OPEN)) == (0, 1, 2)


def test_config_is_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        CircuitConfig.model_validate({"consecutive_failure": 3})
    with pytest.raises(ValidationError):
        CircuitConfig(error_rate=1.5)
    with pytest.raises(ValidationError):
        CircuitConfig().open_duration_s = 3  # type: ignore[misc]


def test_consecutive_failures_open_and_a_success_resets_the_streak() -> None:
    clock = Clock()
    changes: list[tuple[CircuitState, CircuitState]] = []
    b = make(clock, changes, consecutive_failures=3, min_requests=1000)
    for _ in range(2):
        b.record_failure()
    b.record_success()
    for _ in range(2):
        b.record_failure()
    assert b.state is CLOSED
    b.record_failure()
    assert b.state is OPEN
    assert changes == [(CLOSED, OPEN)]
    assert not b.allow() and not b.available()


def test_error_rate_opens_only_with_enough_requests() -> None:
    clock = Clock()
    b = make(clock, consecutive_failures=100, error_rate=0.5, min_requests=10, window_s=10)
    for _ in range(4):
        b.record_success()
        b.record_failure()
    assert b.state is CLOSED  # 4/8 but only 8 requests
    b.record_success()
    assert b.state is CLOSED  # 4/9 below the rate
    b.record_failure()
    assert b.state is OPEN  # 5/10


def test_window_forgets_old_results() -> None:
    clock = Clock()
    b = make(clock, consecutive_failures=100, error_rate=0.5, min_requests=6, window_s=10)
    for _ in range(5):
        b.record_failure()
    assert b.state is CLOSED  # too few requests for the rate to count
    clock.advance(11)
    assert b.window_counts() == (0, 0)
    b.record_failure()
    for _ in range(5):
        b.record_success()
    # 1 of 6 failed; with the old failures it would be 6 of 11
    assert b.window_counts() == (5, 1)
    assert b.state is CLOSED


def test_window_slides_bucket_by_bucket() -> None:
    clock = Clock()
    b = make(clock, consecutive_failures=100, min_requests=1000, window_s=10)
    b.record_failure()
    clock.advance(5)
    b.record_success()
    clock.advance(5)
    assert b.window_counts() == (1, 0)
    clock.advance(5)
    assert b.window_counts() == (0, 0)


def test_open_waits_then_half_opens_with_limited_probes() -> None:
    clock = Clock()
    changes: list[tuple[CircuitState, CircuitState]] = []
    b = make(clock, changes, open_duration_s=10, half_open_max_probes=2, close_after_successes=2)
    trip(b)
    assert b.retry_after_s() == pytest.approx(10)
    clock.advance(9.99)
    assert not b.allow()
    assert b.retry_after_s() == pytest.approx(0.01)
    clock.advance(0.01)
    assert b.state is HALF_OPEN
    assert b.available()
    assert b.allow() and b.allow()
    assert not b.available() and not b.allow()
    assert b.probes_in_flight == 2
    b.record_success()
    assert b.state is HALF_OPEN and b.allow()
    b.record_success()
    assert b.state is CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert b.window_counts() == (0, 0)


def test_a_failed_probe_reopens_for_a_full_duration() -> None:
    clock = Clock()
    b = make(clock, open_duration_s=5)
    trip(b)
    clock.advance(5)
    assert b.allow()
    clock.advance(1)
    b.record_failure()
    assert b.state is OPEN
    assert b.opened_count == 2
    clock.advance(4.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.state is HALF_OPEN


def test_available_takes_no_probe_slot() -> None:
    clock = Clock()
    b = make(clock, open_duration_s=1, half_open_max_probes=1)
    trip(b)
    clock.advance(1)
    for _ in range(5):
        assert b.available()
    assert b.probes_in_flight == 0
    assert b.allow()
    assert not b.available()


def test_release_frees_a_probe_slot_without_a_verdict() -> None:
    clock = Clock()
    b = make(clock, open_duration_s=1, half_open_max_probes=1)
    trip(b)
    clock.advance(1)
    assert b.allow()
    b.release()
    assert b.state is HALF_OPEN and b.allow()


def test_a_probe_that_never_reports_frees_its_slot_eventually() -> None:
    clock = Clock()
    b = make(clock, open_duration_s=3, half_open_max_probes=1)
    trip(b)
    clock.advance(3)
    assert b.allow()
    clock.advance(2.9)
    assert not b.allow()
    clock.advance(0.1)
    assert b.allow()


def test_health_checks_feed_the_breaker() -> None:
    clock = Clock()
    b = make(clock, consecutive_failures=3, open_duration_s=10, close_after_successes=2)
    # closed: failed checks count, passed checks do not excuse request failures
    b.record_failure()
    b.record_probe(True)
    b.record_probe(False)
    assert b.state is CLOSED
    b.record_probe(False)
    assert b.state is OPEN
    # open: a failed check keeps it open for another full duration
    clock.advance(8)
    b.record_probe(False)
    clock.advance(8)
    assert b.state is OPEN
    b.record_probe(True)  # a passed check does not cut the wait short
    assert b.state is OPEN
    clock.advance(2)
    assert b.state is HALF_OPEN
    # half-open: passed checks count towards closing, and take no probe slot
    b.record_probe(True)
    assert b.state is HALF_OPEN and b.probes_in_flight == 0
    b.record_probe(True)
    assert b.state is CLOSED


def test_failed_health_check_reopens_a_half_open_breaker() -> None:
    clock = Clock()
    b = make(clock, open_duration_s=1)
    trip(b)
    clock.advance(1)
    assert b.state is HALF_OPEN
    b.record_probe(False)
    assert b.state is OPEN


def test_late_results_while_open_change_nothing() -> None:
    clock = Clock()
    b = make(clock, open_duration_s=10)
    trip(b)
    b.record_success()
    b.record_failure()
    assert b.state is OPEN
    assert b.retry_after_s() == pytest.approx(10)


def test_reset_closes_and_reports() -> None:
    clock = Clock()
    changes: list[tuple[CircuitState, CircuitState]] = []
    b = make(clock, changes)
    trip(b)
    b.reset()
    assert b.state is CLOSED and b.allow()
    assert changes[-1] == (OPEN, CLOSED)
    b.reset()
    assert changes[-1] == (OPEN, CLOSED)  # no change, no call


def test_disabled_breaker_always_admits() -> None:
    clock = Clock()
    b = make(clock, enabled=False, consecutive_failures=1)
    for _ in range(10):
        assert b.allow()
        b.record_failure()
        b.record_probe(False)
    assert b.state is CLOSED


# -- properties --------------------------------------------------------------------------------

Op = tuple[str, float]
ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(
                ["allow", "success", "failure", "release", "probe_ok", "probe_fail", "available"]
            ),
            st.just(0.0),
        ),
        st.tuples(st.just("advance"), st.floats(0, 20)),
    ),
    max_size=80,
)
configs = st.builds(
    CircuitConfig,
    consecutive_failures=st.integers(1, 6),
    error_rate=st.floats(0.05, 1.0),
    window_s=st.floats(1, 30),
    min_requests=st.integers(1, 10),
    open_duration_s=st.floats(0.5, 15),
    half_open_max_probes=st.integers(1, 3),
    close_after_successes=st.integers(1, 4),
)


@settings(max_examples=300, deadline=None)
@given(config=configs, sequence=ops)
def test_random_sequences_keep_the_invariants(config: CircuitConfig, sequence: list[Op]) -> None:
    clock = Clock()
    changes: list[tuple[CircuitState, CircuitState]] = []
    b = CircuitBreaker(config, clock=clock, on_change=lambda o, n: changes.append((o, n)))
    last_open: float | None = None
    for name, amount in sequence:
        before = len(changes)
        if name == "advance":
            clock.advance(amount)
        elif name == "allow":
            admitted = b.allow()
            if last_open is not None and clock.now - last_open < config.open_duration_s:
                assert not admitted, "an open breaker admitted before open_duration_s"
        elif name == "available":
            b.available()
        elif name == "success":
            b.record_success()
        elif name == "failure":
            b.record_failure()
        elif name == "release":
            b.release()
        elif name == "probe_ok":
            b.record_probe(True)
        else:
            b.record_probe(False)
        for old, new in changes[before:]:
            assert old is not new
            assert (old, new) in {
                (CLOSED, OPEN),
                (OPEN, HALF_OPEN),
                (HALF_OPEN, OPEN),
                (HALF_OPEN, CLOSED),
            }
            if new is OPEN:
                last_open = clock.now
        # the state is always one of the three, and consistent with what it admits
        state = b.state
        assert state in (CLOSED, HALF_OPEN, OPEN)
        assert 0 <= b.probes_in_flight <= config.half_open_max_probes
        if state is OPEN:
            assert not b.available()
            assert 0 < b.retry_after_s() <= config.open_duration_s
        else:
            assert b.retry_after_s() == 0
        if state is CLOSED:
            assert b.available()
            assert b.probes_in_flight == 0
    # the callback's history replays into the current state
    current = CLOSED
    for old, new in changes:
        assert old is current
        current = new
    assert current is b.state
