"""The usage record: validation, wire format, money rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from billing.money import micros_to_decimal, micros_to_usd_float, micros_to_usd_str
from billing.usage import UsageRecord, UsageSource, UsageStatus, from_epoch_us, to_epoch_us
from tests.billing.conftest import make_record


def test_bytes_round_trip_keeps_every_field() -> None:
    record = make_record(
        "req-1",
        reasoning_tokens=40,
        tool_calls=2,
        tokens_before_compression=9000,
        tokens_after_compression=4000,
        status=UsageStatus.CLIENT_CANCELLED,
        usage_source=UsageSource.ESTIMATED,
        session_id="s-9",
        internal_cost_micros=77,
        created_at=datetime(2025, 6, 1, 12, 30, 1, 123456, tzinfo=UTC),
    )
    again = UsageRecord.from_bytes(record.to_bytes())
    assert again == record
    assert again.compression_saved_tokens == 5000
    assert again.route == "pool:h100-small/http://10.0.1.10:30000"


def test_catalog_route_and_other_time_zones() -> None:
    moment = datetime(2025, 6, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
    record = make_record(
        "r", pool=None, worker=None, catalog_model="gpt-4o-mini", created_at=moment
    )
    assert record.route == "catalog:gpt-4o-mini"
    assert from_epoch_us(to_epoch_us(moment)) == moment
    assert UsageRecord.from_bytes(record.to_bytes()).created_at == moment


@pytest.mark.parametrize(
    "overrides",
    [
        {"request_id": ""},
        {"created_at": datetime(2025, 1, 1)},
        {"prompt_tokens": -1},
        {"cached_tokens": 5000},
    ],
)
def test_invalid_records_are_refused(overrides: dict[str, object]) -> None:
    fields = dict(overrides)
    request_id = str(fields.pop("request_id", "r"))
    with pytest.raises(ValueError):
        make_record(request_id, **fields)


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1,2]", b'{"v": 99}', b'{"v": 1}'])
def test_bad_payloads_raise_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        UsageRecord.from_bytes(payload)


def test_money_rendering_is_exact() -> None:
    assert micros_to_usd_str(1234) == "0.001234"
    assert micros_to_usd_str(12_000_000) == "12.000000"
    assert micros_to_usd_str(-5) == "-0.000005"
    assert micros_to_usd_float(1234) == 0.001234
    assert str(micros_to_decimal(1_500_001)) == "1.500001"
