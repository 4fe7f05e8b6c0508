"""Price books: matching, dates, tenants, rounding, minimums; bad books refused.

Every expected cost is a hand computation written out next to it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from billing.cost import compute_cost, price_record, with_cost
from billing.pricing import (
    ActivePriceBook,
    PriceBook,
    load_price_book,
    parse_price_book,
    parse_price_book_yaml,
)
from billing.usage import UsageStatus
from tests.billing.conftest import make_record
from tollway.errors import ConfigError

BOOK_YAML = """
discounts:
  acme: "0.10"
books:
  - name: h1
    effective_from: 2025-01-01T00:00:00Z
    effective_to: 2025-07-01T00:00:00Z
    rates:
      - id: default
        input_per_million: "1.00"
        output_per_million: "2.00"
      - id: small
        model: agent-small
        input_per_million: "0.30"
        output_per_million: "0.90"
      - id: small-h100
        model: agent-small
        pool: h100-small
        input_per_million: "0.25"
        output_per_million: "0.75"
      - id: small-h100-coord
        model: agent-small
        pool: h100-small
        agent_type: coordinator
        input_per_million: "0.20"
        cached_input_per_million: "0.05"
        output_per_million: "0.60"
        per_request: "0.0001"
        per_gpu_second: "0.0004"
        minimum: "0.00001"
      - id: tiny
        model: tiny
        input_per_million: "0.50"
        output_per_million: "0.50"
      - id: floor
        model: floor
        input_per_million: "1.00"
        minimum: "0.002"
  - name: h2
    effective_from: 2025-07-01T00:00:00Z
    rates:
      - id: default
        input_per_million: "2.00"
        output_per_million: "4.00"
  - name: acme-contract
    tenant: acme
    effective_from: 2025-05-01T00:00:00Z
    effective_to: 2025-06-15T00:00:00Z
    rates:
      - id: small
        model: agent-small
        input_per_million: "0.10"
        output_per_million: "0.10"
"""

JUNE = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def book() -> PriceBook:
    return parse_price_book_yaml(BOOK_YAML, version=7)


def quote(book: PriceBook, **fields: Any) -> tuple[int, str | None]:
    args: dict[str, Any] = {
        "tenant_id": "t1",
        "model": "agent-small",
        "pool": "h100-small",
        "agent_type": "coordinator",
        "at": JUNE,
        "status": "ok",
        "prompt_tokens": 1200,
        "cached_tokens": 200,
        "completion_tokens": 300,
        "gpu_seconds": 0.25,
    }
    args.update(fields)
    result = compute_cost(book, **args)
    assert result.price_book_version == 7
    return result.cost_micros, result.rate_id


def test_most_specific_rate_with_every_component(book: PriceBook) -> None:
    # uncached 1000 * 0.20/1e6 = 0.000200
    # cached    200 * 0.05/1e6 = 0.000010
    # output    300 * 0.60/1e6 = 0.000180
    # request                  = 0.000100
    # gpu      0.25 * 0.0004   = 0.000100
    # total                    = 0.000590 USD = 590 micro-USD
    assert quote(book) == (590, "h1/small-h100-coord")


def test_specificity_falls_back_level_by_level(book: PriceBook) -> None:
    # model + pool: 1000*0.25 + 200*0.25 (cached at input price) + 300*0.75
    #   = 250 + 50 + 225 = 525 micro-USD
    assert quote(book, agent_type="worker") == (525, "h1/small-h100")
    assert quote(book, agent_type=None) == (525, "h1/small-h100")
    # model only: 1200*0.30 + 300*0.90 = 630 micro-USD
    assert quote(book, pool="h200-large") == (630, "h1/small")
    assert quote(book, pool=None, agent_type="coordinator") == (630, "h1/small")
    # default: 1200*1.00 + 300*2.00 = 1800 micro-USD
    assert quote(book, model="agent-large") == (1800, "h1/default")


def test_effective_date_boundaries(book: PriceBook) -> None:
    last_moment = datetime(2025, 6, 30, 23, 59, 59, 999999, tzinfo=UTC)
    boundary = datetime(2025, 7, 1, tzinfo=UTC)
    assert quote(book, model="x", at=last_moment) == (1800, "h1/default")
    # h2 from the boundary on: 1200*2.00 + 300*4.00 = 3600 micro-USD
    assert quote(book, model="x", at=boundary) == (3600, "h2/default")
    # before any book: nothing matches, nothing is charged
    assert quote(book, model="x", at=datetime(2024, 12, 31, 23, 59, tzinfo=UTC)) == (0, None)


def test_tenant_book_and_discount(book: PriceBook) -> None:
    # acme's own book (in force 2025-05-01 .. 2025-06-15) wins over the more specific
    # general rate: (1200 + 300) * 0.10 = 150 micro-USD, then 10% off = 135.
    assert quote(book, tenant_id="acme") == (135, "acme-contract/small")
    # acme's book has no rate for agent-large: the general default, discounted:
    # (1200*1.00 + 300*2.00) * 0.9 = 1620
    assert quote(book, tenant_id="acme", model="agent-large") == (1620, "h1/default")
    # after the tenant book ends: the general specific rate, discounted: 590 * 0.9 = 531
    late_june = datetime(2025, 6, 20, tzinfo=UTC)
    assert quote(book, tenant_id="acme", at=late_june) == (531, "h1/small-h100-coord")


def test_rounding_half_even_once_per_record(book: PriceBook) -> None:
    args = {"model": "tiny", "pool": None, "agent_type": None, "gpu_seconds": 0.0}
    # 1 input + 1 output token at 0.50/M: 0.5 + 0.5 = 1.0 micro-USD -> 1.
    # (Rounding each part half-even first would give 0 + 0 = 0.)
    assert quote(book, prompt_tokens=1, cached_tokens=0, completion_tokens=1, **args)[0] == 1
    # 5 tokens: 2.5 micro-USD -> 2 (half to even); 7 tokens: 3.5 -> 4.
    assert quote(book, prompt_tokens=5, cached_tokens=0, completion_tokens=0, **args)[0] == 2
    assert quote(book, prompt_tokens=7, cached_tokens=0, completion_tokens=0, **args)[0] == 4
    # acme 10% off 5 tokens: 2.5 * 0.9 = 2.25 -> 2 (rounded once, after the discount)
    assert (
        quote(
            book, tenant_id="acme", prompt_tokens=5, cached_tokens=0, completion_tokens=0, **args
        )[0]
        == 2
    )


def test_minimum_charge(book: PriceBook) -> None:
    args = {"model": "floor", "pool": None, "agent_type": None, "cached_tokens": 0}
    # 100 tokens at 1.00/M = 100 micro-USD < minimum 0.002 USD = 2000 micro-USD
    assert quote(book, prompt_tokens=100, completion_tokens=0, **args)[0] == 2000
    # 3000 tokens = 3000 micro-USD > minimum
    assert quote(book, prompt_tokens=3000, completion_tokens=0, **args)[0] == 3000
    # acme: the minimum applies before the discount: 2000 * 0.9 = 1800
    assert quote(book, tenant_id="acme", prompt_tokens=100, completion_tokens=0, **args)[0] == 1800


def test_uncharged_statuses_cost_nothing_but_keep_the_rate(book: PriceBook) -> None:
    assert quote(book, status="upstream_error") == (0, "h1/small-h100-coord")
    assert quote(book, status="rejected") == (0, "h1/small-h100-coord")
    assert quote(book, status="client_cancelled") == (590, "h1/small-h100-coord")


def test_records_are_priced_from_their_own_fields(book: PriceBook) -> None:
    record = make_record("r1", created_at=JUNE, cost_micros=0, rate_id=None)
    priced = with_cost(record, book)
    assert (priced.cost_micros, priced.rate_id, priced.price_book_version) == (
        590,
        "h1/small-h100-coord",
        7,
    )
    # Recomputing from the stored record gives the same result.
    assert price_record(priced, book).cost_micros == 590
    cancelled = with_cost(record.replace(status=UsageStatus.UPSTREAM_ERROR), book)
    assert cancelled.cost_micros == 0


BAD_BOOKS: list[tuple[str, str, str]] = [
    ("books: []", "pricing:books", "at least 1"),
    (
        "books: [{name: a, effective_from: 2025-01-01, rates: [{id: r, input_per_million: 0.5}]}]",
        "books.0.rates.0.input_per_million",
        "decimal string",
    ),
    (
        'books: [{name: a, effective_from: 2025-01-01, rates: [{id: r, input_per_million: "-1"}]}]',
        "books.0.rates.0.input_per_million",
        "non-negative",
    ),
    (
        'books: [{name: a, effective_from: 2025-01-01, rates: [{id: r, input_per_million: "x"}]}]',
        "books.0.rates.0.input_per_million",
        "not a decimal",
    ),
    (
        'books: [{name: a, effective_from: 2025-01-01, rates: [{id: r, colour: "1"}]}]',
        "books.0.rates.0.colour",
        "Extra inputs",
    ),
    (
        "books: [{name: a, effective_from: '2025-01-01T00:00:00', rates: [{id: r}]}]",
        "books.0.effective_from",
        "time zone",
    ),
    (
        "books: [{name: a, effective_from: 2025-02-01, effective_to: 2025-01-01,"
        " rates: [{id: r}]}]",
        "books.0.effective_to",
        "later than",
    ),
    (
        "books: [{name: a, effective_from: 2025-01-01, rates: [{id: r}, {id: r, model: m}]}]",
        "books.0.rates.1.id",
        "duplicate rate id",
    ),
    (
        "books: [{name: a, effective_from: 2025-01-01,"
        " rates: [{id: r, model: m}, {id: s, model: m}]}]",
        "books.0.rates.1",
        "same model",
    ),
    (
        "books: [{name: a, effective_from: 2025-01-01, rates: [{id: r}]},"
        " {name: b, effective_from: 2025-06-01, rates: [{id: r}]}]",
        "books.1.effective_from",
        "overlaps books.0",
    ),
    (
        'discounts: {acme: "1.5"}\n'
        "books: [{name: a, effective_from: 2025-01-01, rates: [{id: r}]}]",
        "discounts.acme",
        "fraction",
    ),
    ("books: [oops", "pricing", "not valid YAML"),
    ("- just a list", "pricing", "must be a mapping"),
]


@pytest.mark.parametrize(("text", "path", "reason"), BAD_BOOKS)
def test_bad_books_are_refused_with_path_and_reason(text: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_price_book_yaml(text)
    assert path in caught.value.path
    assert reason in caught.value.reason


def test_a_bad_file_leaves_the_active_book_unchanged(tmp_path: Path, book: PriceBook) -> None:
    active = ActivePriceBook(book)
    bad = tmp_path / "pricing.yaml"
    bad.write_text(BOOK_YAML.replace('input_per_million: "0.30"', 'input_per_million: "abc"'))
    with pytest.raises(ConfigError) as caught:
        active.reload(bad)
    assert caught.value.path == f"{bad}:books.0.rates.1.input_per_million"
    assert active.book is book
    with pytest.raises(ConfigError, match="cannot read"):
        active.reload(tmp_path / "missing.yaml")
    assert active.book is book
    good = tmp_path / "good.yaml"
    good.write_text(BOOK_YAML)
    assert active.reload(good) is active.book
    assert load_price_book(good).document == book.document


def test_open_ended_tenant_books_may_overlap_general_ones() -> None:
    parsed = parse_price_book(
        {
            "books": [
                {"name": "g", "effective_from": "2025-01-01T00:00:00Z", "rates": [{"id": "d"}]},
                {
                    "name": "t",
                    "tenant": "acme",
                    "effective_from": "2025-01-01T00:00:00Z",
                    "rates": [{"id": "d"}],
                },
            ]
        }
    )
    assert len(parsed.document.books) == 2


def _formula_micros(book: PriceBook, tenant: str, fields: dict[str, Any]) -> int:
    """The module docstring's formula, every term computed, no term skipped."""
    from decimal import Decimal

    from billing.money import usd_to_micros

    match = book.match(
        tenant_id=tenant,
        model=fields["model"],
        pool="h100-small",
        agent_type="coordinator",
        at=JUNE,
    )
    assert match is not None
    rate, million = match.rate, Decimal(1_000_000)
    cached_price = rate.cached_input_per_million or rate.input_per_million
    prompt, cached = fields["prompt_tokens"], fields["cached_tokens"]
    subtotal = (
        Decimal(prompt - cached) * rate.input_per_million / million
        + Decimal(cached) * cached_price / million
        + Decimal(fields["completion_tokens"]) * rate.output_per_million / million
        + rate.per_request
        + Decimal(repr(fields["gpu_seconds"])) * rate.per_gpu_second
    )
    return usd_to_micros(max(subtotal, rate.minimum) * (1 - book.discount(tenant)))


@given(
    model=st.sampled_from(["agent-small", "tiny", "floor", "other"]),
    tenant=st.sampled_from(["t1", "acme"]),
    prompt=st.integers(0, 2_000_000),
    cached_share=st.floats(0, 1),
    completion=st.integers(0, 200_000),
    gpu_seconds=st.one_of(st.just(0.0), st.floats(0, 3600, allow_nan=False)),
)
def test_skipping_zero_terms_never_changes_a_cost(
    model: str, tenant: str, prompt: int, cached_share: float, completion: int, gpu_seconds: float
) -> None:
    book = parse_price_book_yaml(BOOK_YAML, version=7)
    fields = {
        "model": model,
        "prompt_tokens": prompt,
        "cached_tokens": int(prompt * cached_share),
        "completion_tokens": completion,
        "gpu_seconds": gpu_seconds,
    }
    micros, _ = quote(book, tenant_id=tenant, **fields)
    assert micros == _formula_micros(book, tenant, fields)
