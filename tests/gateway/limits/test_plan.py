"""Specs validation, the Redis key layout and UTC budget periods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from gateway.limits import AdmissionRequest, BudgetSpec, LimitsConfig, LimitSpec
from gateway.limits.plan import build_plan, period_ids


def ms(*parts: int) -> int:
    return int(datetime(*parts, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def test_limits_must_be_positive_ints() -> None:
    with pytest.raises(ValueError):
        LimitSpec(rpm=0)
    with pytest.raises(TypeError):
        LimitSpec(tpm=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BudgetSpec(daily_micro_usd=-1)
    with pytest.raises(ValueError):
        AdmissionRequest("r", "t", "k", estimated_tokens=-1)
    assert BudgetSpec(daily_micro_usd=0).daily_micro_usd == 0


def test_periods_roll_over_at_utc_midnight_and_month_end() -> None:
    assert period_ids(ms(2024, 12, 31, 23, 59, 59) + 999) == (
        "d20241231",
        ms(2025, 1, 1),
        "m202412",
        ms(2025, 1, 1),
    )
    assert period_ids(ms(2025, 1, 1)) == ("d20250101", ms(2025, 1, 2), "m202501", ms(2025, 2, 1))
    assert period_ids(ms(2024, 2, 29, 12))[2:] == ("m202402", ms(2024, 3, 1))


def test_every_key_of_one_admission_shares_the_tenant_hash_tag() -> None:
    request = AdmissionRequest(
        "r1",
        "acme",
        "key:1",
        tenant_limits=LimitSpec(rpm=10, tpm=100, max_concurrent=2),
        key_limits=LimitSpec(rpm=5, tpm=50, max_concurrent=1),
        tenant_budget=BudgetSpec(daily_micro_usd=10, monthly_micro_usd=100),
        key_budget=BudgetSpec(daily_micro_usd=5, monthly_micro_usd=50),
        estimated_tokens=7,
        reserve_micro_usd=3,
    )
    plan = build_plan(request, "tw:", ms(2024, 3, 31, 12))
    assert plan.layout.keys == (
        "tw:{t:acme}:s:t",
        "tw:{t:acme}:b:t",
        "tw:{t:acme}:s:k:key:1",
        "tw:{t:acme}:b:k:key:1",
    )
    assert plan.layout.spec == "10,100,2,10,100,5,50,1,5,50"
    assert (plan.day, plan.month, plan.tokens, plan.reserve) == ("d20240331", "m202403", 7, 3)


def test_a_scope_without_limits_is_left_out() -> None:
    request = AdmissionRequest("r", "acme", "k", key_limits=LimitSpec(rpm=5))
    plan = build_plan(request, "", 0)
    assert [s.name for s in plan.layout.scopes] == ["key"]
    assert plan.layout.spec == "5,-1,-1,-1,-1"
    assert not plan.layout.has_budget and plan.day == ""


def test_no_limit_means_an_empty_plan() -> None:
    assert build_plan(AdmissionRequest("r", "t", "k"), "p:", 0).is_empty


def test_config_is_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        LimitsConfig.model_validate({"on_redis_outage": "maybe"})
    with pytest.raises(ValidationError):
        LimitsConfig.model_validate({"unknown": 1})
    with pytest.raises(ValidationError):
        LimitsConfig(key_prefix="a{b}")
    config = LimitsConfig.model_validate({"on_redis_outage": "fail_closed", "clock": "local"})
    with pytest.raises(ValidationError):
        config.key_prefix = "x"  # type: ignore[misc]
    assert config.max_request_duration_ms == 900_000
