"""The speculation gate: when admission may overlap dispatch, and how that is bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.limits import LimitSpec, RateStatus, Ticket
from gateway.limits.plan import Planner
from gateway.limits.specs import AdmissionRequest
from gateway.speculation import SpeculationGate

KEY = ("tenant", "key")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ticket(
    requests: tuple[int, int] | None = None,
    tokens: tuple[int, int] | None = None,
    engine: str = "redis",
) -> Ticket:
    plan = Planner("t:").plan(
        AdmissionRequest(request_id="r", tenant_id="t", key_id="k", key_limits=LimitSpec(rpm=10)),
        0,
    )
    return Ticket(
        "r",
        plan,
        "m",
        engine,
        RateStatus(requests[0], requests[1], 0) if requests else None,
        RateStatus(tokens[0], tokens[1], 0) if tokens else None,
    )


def test_no_answer_yet_means_no_speculation() -> None:
    gate = SpeculationGate()
    assert not gate.try_speculate(KEY, 10)
    assert gate.speculated == 0


def test_a_fresh_answer_far_from_the_limits_allows_it_until_the_headroom() -> None:
    clock = Clock()
    gate = SpeculationGate(headroom=0.25, clock=clock)
    gate.admitted(KEY, ticket(requests=(100, 30)))
    # 30 left, 25 must stay: 5 speculations, each charged one request.
    assert [gate.try_speculate(KEY, 1) for _ in range(7)] == [True] * 5 + [False] * 2
    assert gate.speculated == 5
    gate.admitted(KEY, ticket(requests=(100, 40)))  # Redis's next answer replaces the guess
    assert gate.try_speculate(KEY, 1)


def test_tokens_are_charged_by_the_estimate() -> None:
    gate = SpeculationGate(headroom=0.5, clock=Clock())
    gate.admitted(KEY, ticket(tokens=(1000, 800)))
    assert gate.try_speculate(KEY, 200)  # 600 left >= 500
    assert not gate.try_speculate(KEY, 200)  # would leave 400
    assert gate.try_speculate(KEY, 100)  # leaves exactly 500


def test_an_old_answer_allows_nothing() -> None:
    clock = Clock()
    gate = SpeculationGate(max_age_s=1.0, clock=clock)
    gate.admitted(KEY, ticket(requests=(100, 100)))
    clock.now += 1.01
    assert not gate.try_speculate(KEY, 1)


def test_a_refusal_turns_it_off_for_the_cooldown_and_counts_a_loss() -> None:
    clock = Clock()
    gate = SpeculationGate(cooldown_s=10.0, clock=clock)
    gate.admitted(KEY, ticket())
    assert gate.try_speculate(KEY, 1)
    gate.refused(KEY, speculative=True)
    assert gate.lost == 1
    gate.admitted(KEY, ticket())  # an admission during the cool-down does not end it
    clock.now += 9.9
    assert not gate.try_speculate(KEY, 1)
    clock.now += 0.2
    gate.admitted(KEY, ticket())
    assert gate.try_speculate(KEY, 1)
    gate.refused(KEY, speculative=False)
    assert gate.lost == 1


def test_keys_are_separate_and_fallback_tickets_leave_no_hint() -> None:
    gate = SpeculationGate(clock=Clock())
    gate.admitted(KEY, ticket())
    assert not gate.try_speculate(("tenant", "other"), 1)
    gate.admitted(KEY, ticket(engine="memory"))  # Redis was down: a local answer
    assert not gate.try_speculate(KEY, 1)
    gate.admitted(KEY, None)
    assert not gate.try_speculate(KEY, 1)


@given(
    limit=st.integers(1, 10_000),
    left=st.integers(0, 10_000),
    headroom=st.floats(0, 1),
    sizes=st.lists(st.integers(1, 500), max_size=60),
)
def test_speculation_never_eats_into_the_headroom(
    limit: int, left: int, headroom: float, sizes: list[int]
) -> None:
    """However many requests arrive before Redis's next answer, the ones let through
    fit in what was left minus the headroom, for requests and for tokens alike."""
    left = min(left, limit)
    gate = SpeculationGate(headroom=headroom, clock=Clock())
    gate.admitted(KEY, ticket(requests=(limit, left), tokens=(limit * 100, left * 100)))
    allowed = [size for size in sizes if gate.try_speculate(KEY, size)]
    assert len(allowed) <= max(0, left - headroom * limit)
    assert sum(allowed) <= max(0.0, left * 100 - headroom * limit * 100)
    assert gate.speculated == len(allowed)
