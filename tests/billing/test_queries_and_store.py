"""Usage queries and stored price books, on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from billing.ledger import Ledger
from billing.pricing import ActivePriceBook, parse_price_book_yaml
from billing.pricing_store import PriceBookStore
from billing.queries import GroupBy, UsageFilter, usage_totals
from billing.usage import UsageStatus
from tests.billing.conftest import make_record

T0 = datetime(2025, 6, 1, 10, 15, tzinfo=UTC)


async def seed(engine: AsyncEngine) -> None:
    records = [
        make_record("a", created_at=T0, cost_micros=1000, internal_cost_micros=400),
        make_record("b", created_at=T0.replace(hour=11), cost_micros=2000, key_id="k2"),
        make_record(
            "c",
            created_at=T0.replace(day=2),
            model="agent-large",
            agent_type="worker",
            pool=None,
            worker=None,
            catalog_model="gpt-4o-mini",
            cost_micros=3_000_001,
            gpu_seconds=0.0,
        ),
        make_record("d", created_at=T0, tenant_id="t2", cost_micros=5),
    ]
    await Ledger(engine).write(records)


async def test_usage_grouped_and_filtered(engine: AsyncEngine) -> None:
    await seed(engine)
    t1 = UsageFilter(tenant_id="t1")
    by_day = await usage_totals(engine, t1, GroupBy.DAY)
    assert [(r.group, r.requests, r.cost_usd) for r in by_day] == [
        ("2025-06-01", 2, "0.003000"),
        ("2025-06-02", 1, "3.000001"),
    ]
    first = by_day[0]
    assert (first.prompt_tokens, first.cached_tokens, first.completion_tokens) == (2400, 400, 600)
    assert first.gpu_seconds == 0.5
    assert (first.internal_cost_usd, first.margin_usd) == ("0.000400", "0.002600")

    by_hour = await usage_totals(engine, t1, GroupBy.HOUR)
    assert [r.group for r in by_hour] == [
        "2025-06-01T10:00:00Z",
        "2025-06-01T11:00:00Z",
        "2025-06-02T10:00:00Z",
    ]
    by_pool = await usage_totals(engine, t1, GroupBy.POOL)
    assert {r.group: r.requests for r in by_pool} == {None: 1, "h100-small": 2}
    by_key = await usage_totals(engine, UsageFilter(), GroupBy.KEY)
    assert {r.group: r.requests for r in by_key} == {"k1": 3, "k2": 1}

    window = UsageFilter(start=T0, end=T0.replace(hour=11))  # end is exclusive
    assert [(r.group, r.requests) for r in await usage_totals(engine, window, GroupBy.TENANT)] == [
        ("t1", 1),
        ("t2", 1),
    ]
    narrow = UsageFilter(tenant_id="t1", model="agent-large", agent_type="worker")
    assert [r.cost_usd for r in await usage_totals(engine, narrow, GroupBy.MODEL)] == ["3.000001"]
    assert await usage_totals(engine, UsageFilter(key_id="nobody")) == []


BOOK = """
books:
  - name: standard
    effective_from: 2025-01-01T00:00:00Z
    rates: [{id: default, input_per_million: "1.00"}]
"""


async def test_price_book_versions_are_shared(engine: AsyncEngine) -> None:
    store = PriceBookStore(engine)
    assert await store.latest_version() is None
    first = await store.apply(parse_price_book_yaml(BOOK), source=BOOK, note="initial")
    assert first.version == 1
    # The same document again is not a new version.
    assert (await store.apply(parse_price_book_yaml(BOOK), source=BOOK)).version == 1
    changed = BOOK.replace('"1.00"', '"1.50"')
    assert (await store.apply(parse_price_book_yaml(changed), source=changed)).version == 2

    # Another replica with version 1 active picks up version 2.
    replica = ActivePriceBook(first)
    assert await store.refresh(replica)
    assert replica.book.version == 2
    assert replica.book.document.books[0].rates[0].input_per_million == 1.5
    assert not await store.refresh(replica)
    old = await store.get(1)
    assert old is not None and old.document == first.document
    assert await store.source(2) == changed
    assert [v.version for v in await store.versions()] == [2, 1]


async def test_requests_count_billable_rows_and_refusals_apart(engine: AsyncEngine) -> None:
    """``requests`` counts served requests only; refusals are ``rejected``, upstream
    errors and interrupted streams ``failed``; a summary call adds tokens and cost but
    is not a request; a stream still in flight counts nowhere yet."""
    at = {"created_at": T0, "cached_tokens": 0}
    refused = {**at, "prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 0}
    records = [
        make_record("served", **at, prompt_tokens=10, completion_tokens=5, cost_micros=100),
        make_record("left", **at, status=UsageStatus.CLIENT_CANCELLED, prompt_tokens=10),
        make_record("429", **refused, status=UsageStatus.REJECTED),
        make_record("401", **refused, status=UsageStatus.REJECTED),
        make_record("502", **at, status=UsageStatus.UPSTREAM_ERROR, cost_micros=0),
        make_record("cut", **at, status=UsageStatus.INTERRUPTED, cost_micros=0),
        make_record("live", **at, status=UsageStatus.PROVISIONAL, cost_micros=77),
        make_record(
            "served.summary1",
            **at,
            agent_type="summarizer",
            parent_request_id="served",
            prompt_tokens=40,
            completion_tokens=8,
            cost_micros=50,
        ),
    ]
    await Ledger(engine).write(records)
    (row,) = await usage_totals(engine, UsageFilter(tenant_id="t1"), GroupBy.DAY)
    assert (row.requests, row.rejected, row.failed) == (2, 2, 2)
    assert (row.prompt_tokens, row.completion_tokens) == (10 + 10 + 40, 5 + 300 + 8)
    assert row.cost_usd == "0.001384"  # 100 + 1234 (cancelled) + 50; nothing in flight
    tenant = row.tenant_view()
    assert set(tenant) == {
        "group", "requests", "rejected", "prompt_tokens", "cached_tokens",
        "completion_tokens", "cost_usd",
    }  # fmt: skip
    by_agent = await usage_totals(engine, UsageFilter(tenant_id="t1"), GroupBy.AGENT_TYPE)
    assert [(r.group, r.requests, r.prompt_tokens) for r in by_agent] == [
        ("coordinator", 2, 20),
        ("summarizer", 0, 40),
    ]
