"""Stripe export against the local stand-in: faults, duplicates, late records, reconcile."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import Ledger
from billing.meters import StripeSettings
from billing.reconcile import reconcile
from billing.stripe_export import StripeConnection, StripeExporter, connect_stripe
from billing.tables import export_batches
from billing.usage import UsageRecord, UsageStatus
from tests.billing.conftest import make_record
from tests.billing.stripe_standin import MeterEvent, StripeStandin
from tollway.errors import InvalidRequest

DAY0 = datetime(2025, 6, 2, tzinfo=UTC)
CUSTOMERS = {"t1": "cus_A", "t2": "cus_A", "t3": "cus_B"}  # t4 has no customer
METERS = {"mtr_cost": "tollway_cost", "mtr_in": "tollway_input", "mtr_out": "tollway_output"}


@dataclass
class Clock:
    now: float

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock((DAY0 + timedelta(hours=6)).timestamp())  # buckets 00..04 are closed


@pytest.fixture
async def standin(clock: Clock) -> AsyncIterator[StripeStandin]:
    server = StripeStandin(meters=METERS, clock=clock)
    yield server
    await server.stop()


@pytest.fixture
async def connection(
    standin: StripeStandin, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StripeConnection]:
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_standin")
    monkeypatch.setenv("TOLLWAY_STRIPE_API_BASE", await standin.start())
    conn = connect_stripe(settings())
    yield conn
    await conn.aclose()


def settings(**overrides: object) -> StripeSettings:
    data: dict[str, object] = {
        "bucket": "hour",
        "grace_s": 300,
        "backoff_initial_s": 0.01,
        "meters": [
            {
                "name": "cost",
                "event_name": "tollway_cost",
                "meter_id": "mtr_cost",
                "quantity": "cost_micros",
            },
            {
                "name": "input",
                "event_name": "tollway_input",
                "meter_id": "mtr_in",
                "quantity": "prompt_tokens",
            },
            {
                "name": "output",
                "event_name": "tollway_output",
                "meter_id": "mtr_out",
                "quantity": "completion_tokens",
            },
        ],
    }
    data.update(overrides)
    return StripeSettings.model_validate(data)


def random_records(count: int, seed: int = 7) -> list[UsageRecord]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        prompt = rng.randrange(10, 5000)
        records.append(
            make_record(
                f"req-{seed}-{i}",
                tenant_id=rng.choice(["t1", "t2", "t3", "t4"]),
                created_at=DAY0 + timedelta(seconds=rng.randrange(0, 6 * 3600)),
                prompt_tokens=prompt,
                cached_tokens=rng.randrange(0, prompt),
                completion_tokens=rng.randrange(0, 2000),
                cost_micros=rng.randrange(0, 50_000),
            )
        )
    return records


def expected(records: list[UsageRecord], before: datetime) -> dict[tuple[str, str], int]:
    sums: dict[tuple[str, str], int] = defaultdict(int)
    for r in records:
        customer = CUSTOMERS.get(r.tenant_id)
        if customer is None or r.created_at >= before:
            continue
        sums[(customer, "tollway_cost")] += r.cost_micros
        sums[(customer, "tollway_input")] += r.prompt_tokens
        sums[(customer, "tollway_output")] += r.completion_tokens
    return dict(sums)


async def no_sleep(_seconds: float) -> None:
    return None


async def test_export_with_faults_equals_the_ledger(
    engine: AsyncEngine, standin: StripeStandin, connection: StripeConnection, clock: Clock
) -> None:
    records = random_records(300)
    await Ledger(engine).write(records)
    exporter = StripeExporter(
        engine, connection.client, settings(), CUSTOMERS, clock=clock, sleep=no_sleep
    )
    standin.inject = [429, 500, 429, 503, 500, 429]
    standin.lose_responses = 3  # recorded by Stripe, but the answer never arrives

    report = await exporter.export()
    closed = DAY0 + timedelta(hours=5)
    assert standin.totals() == expected(records, closed)
    assert report.unmapped_tenants == {"t4"}
    assert report.planned == 2 * 5 * 3  # two customers, five closed hours, three meters
    assert report.sent + report.duplicates == report.planned
    assert report.duplicates == 3  # each lost response was retried and seen as a duplicate
    assert report.retries == 6 + 3
    assert standin.overlaps == 0  # one call at a time per customer and meter
    assert len({e.identifier for e in standin.events}) == len(standin.events)

    # Nothing new: nothing is sent again.
    again = await exporter.export()
    assert (again.planned, again.sent, again.duplicates) == (0, 0, 0)
    # Every batch resent (a crash after sending, before marking): no double count.
    async with engine.begin() as conn:
        await conn.execute(update(export_batches).values(status="pending"))
    resent = await exporter.export()
    assert resent.sent + resent.duplicates == report.planned
    assert standin.totals() == expected(records, closed)

    # A late record for an exported hour goes out as a follow-up batch (seq 1).
    late = make_record(
        "late",
        tenant_id="t3",
        created_at=DAY0 + timedelta(hours=1, minutes=5),
        cost_micros=777,
        prompt_tokens=10,
        cached_tokens=0,
        completion_tokens=5,
    )
    await Ledger(engine).write([late])
    assert (await exporter.export()).planned == 3
    assert standin.totals() == expected([*records, late], closed)

    # Time passes: the 05:00 bucket closes and is exported.
    clock.now += 3600
    await exporter.export()
    everything = expected([*records, late], DAY0 + timedelta(days=1))
    assert standin.totals() == everything

    rows = await reconcile(
        engine, connection.client, settings(), CUSTOMERS, DAY0, DAY0 + timedelta(hours=6)
    )
    assert len(rows) == 6 and all(row.matches for row in rows)
    event_of = {"cost": "tollway_cost", "input": "tollway_input", "output": "tollway_output"}
    assert {(r.customer_id, event_of[r.meter]): r.stripe_value for r in rows} == everything

    # A deliberate mismatch at Stripe is detected, and so is unexported usage.
    standin.events.append(
        MeterEvent("rogue", "tollway_cost", "cus_B", 5, int(DAY0.timestamp()) + 60, clock.now)
    )
    await Ledger(engine).write(
        [make_record("unexported", tenant_id="t1", created_at=DAY0 + timedelta(hours=2))]
    )
    rows = await reconcile(
        engine, connection.client, settings(), CUSTOMERS, DAY0, DAY0 + timedelta(hours=6)
    )
    bad = {(r.customer_id, r.meter) for r in rows if not r.matches}
    assert bad == {("cus_B", "cost"), ("cus_A", "cost"), ("cus_A", "input"), ("cus_A", "output")}
    rogue = next(r for r in rows if (r.customer_id, r.meter) == ("cus_B", "cost"))
    assert rogue.stripe_value == rogue.ledger_value + 5


async def test_retries_run_out_then_resume_and_refusals_fail(
    sqlite_engine: AsyncEngine, standin: StripeStandin, connection: StripeConnection, clock: Clock
) -> None:
    await Ledger(sqlite_engine).write(
        [make_record("r1", tenant_id="t3", created_at=DAY0 + timedelta(minutes=1))]
    )
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    exporter = StripeExporter(
        sqlite_engine,
        connection.client,
        settings(
            max_attempts=3,
            meters=[{"name": "cost", "event_name": "tollway_cost", "quantity": "cost_micros"}],
        ),
        CUSTOMERS,
        clock=clock,
        sleep=sleep,
        rng=lambda: 1.0,
    )
    standin.inject = [500, 429, 502, 500]
    report = await exporter.export()
    assert (report.planned, report.sent, report.still_pending, report.retries) == (1, 0, 1, 3)
    assert delays == [0.01, 0.02, 0.04]  # exponential backoff (jitter at its maximum)
    report = await exporter.export()  # the batch is still pending and goes out now
    assert (report.planned, report.sent, report.retries) == (0, 1, 1)
    assert standin.totals() == {("cus_B", "tollway_cost"): 1234}

    # A batch Stripe refuses (here: a non-whole value would be; we inject a 400) fails.
    await Ledger(sqlite_engine).write(
        [make_record("r2", tenant_id="t3", created_at=DAY0 + timedelta(hours=1))]
    )
    standin.inject = [400]
    report = await exporter.export()
    assert (report.planned, report.failed) == (1, 1)
    # A batch attempted more than 23 hours ago is held for review, not resent.
    async with sqlite_engine.begin() as conn:
        await conn.execute(update(export_batches).values(status="pending", attempts=1))
    clock.now += 24 * 3600
    report = await exporter.export()
    assert report.review == 2 and report.sent == 0


async def test_reconcile_needs_whole_buckets(
    sqlite_engine: AsyncEngine,
) -> None:
    with pytest.raises(InvalidRequest):
        await reconcile(
            sqlite_engine, None, settings(), CUSTOMERS, DAY0 + timedelta(minutes=1), DAY0
        )


async def test_quantities_count_only_billable_requests(
    engine: AsyncEngine, connection: StripeConnection, clock: Clock
) -> None:
    """12 served, 7 rate-limited: a ``requests`` meter exports 12 (it exported 19).
    Token meters sum billable rows (a summary call's tokens included, its row not a
    request); upstream errors, interrupted and in-flight streams add nothing."""
    hour = DAY0 + timedelta(hours=1)
    served = [
        make_record(f"ok-{i}", created_at=hour, prompt_tokens=100, cached_tokens=0)
        for i in range(10)
    ]
    served += [
        make_record(f"gone-{i}", created_at=hour, status=UsageStatus.CLIENT_CANCELLED)
        for i in range(2)
    ]
    refused = [
        make_record(
            f"429-{i}",
            created_at=hour,
            status=UsageStatus.REJECTED,
            prompt_tokens=0,
            cached_tokens=0,
            completion_tokens=0,
            cost_micros=0,
        )
        for i in range(7)
    ]
    unbilled = [
        make_record(f"{status.value}-1", created_at=hour, status=status, cost_micros=0)
        for status in (UsageStatus.UPSTREAM_ERROR, UsageStatus.INTERRUPTED)
    ]
    unbilled.append(make_record("in-flight", created_at=hour, status=UsageStatus.PROVISIONAL))
    summary = make_record(
        "ok-0.summary1", created_at=hour, agent_type="summarizer", parent_request_id="ok-0"
    )
    await Ledger(engine).write([*served, *refused, *unbilled, summary])
    meters = [
        {"name": "requests", "event_name": "tollway_requests", "quantity": "requests"},
        {"name": "input", "event_name": "tollway_input", "quantity": "prompt_tokens"},
        {"name": "cost", "event_name": "tollway_cost", "quantity": "cost_micros"},
    ]
    exporter = StripeExporter(
        engine, connection.client, settings(meters=meters), CUSTOMERS, clock=clock
    )
    await exporter.plan()
    async with engine.connect() as conn:
        values = dict(
            (await conn.execute(select(export_batches.c.meter, export_batches.c.value))).all()
        )
    assert values["requests"] == 12
    assert values["input"] == 10 * 100 + 2 * 1200 + 1200
    assert values["cost"] == 13 * 1234
    # Reconciliation counts the ledger the same way (the stream in flight included).
    rows = await reconcile(
        engine, None, settings(meters=meters), CUSTOMERS, DAY0, DAY0 + timedelta(hours=6)
    )
    assert {r.meter: r.ledger_value for r in rows} == values
