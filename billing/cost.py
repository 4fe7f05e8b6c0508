"""Cost: a pure function of a record's fields and a price book.

::

    uncached = prompt_tokens - cached_tokens
    subtotal = uncached          * input_per_million        / 1e6
             + cached_tokens     * cached_input_per_million / 1e6   (input price if unset)
             + completion_tokens * output_per_million       / 1e6   (reasoning included)
             + per_request
             + gpu_seconds       * per_gpu_second
    charge   = max(subtotal, minimum) * (1 - tenant discount)
    cost     = charge rounded half-even to whole micro-USD          (the only rounding)

Requests whose status is not charged (by default ``upstream_error`` and
``rejected``) cost 0 but still record the matched rate. Everything is
:class:`~decimal.Decimal` until the final rounding, so a record's cost can be
recomputed exactly from its stored fields and the stored price book version.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from billing.money import usd_to_micros
from billing.pricing import PriceBook
from billing.usage import UsageRecord

_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class CostQuote:
    """The result of pricing one request."""

    cost_micros: int
    rate_id: str | None
    price_book_version: int


def compute_cost(
    book: PriceBook,
    *,
    tenant_id: str,
    model: str,
    pool: str | None,
    agent_type: str | None,
    at: dt.datetime,
    status: str,
    prompt_tokens: int,
    cached_tokens: int,
    completion_tokens: int,
    gpu_seconds: float,
) -> CostQuote:
    """Price one request; a request no rate matches costs 0 with ``rate_id`` None."""
    match = book.match(tenant_id=tenant_id, model=model, pool=pool, agent_type=agent_type, at=at)
    if match is None:
        return CostQuote(0, None, book.version)
    if status not in book.document.charged_statuses:
        return CostQuote(0, match.rate_id, book.version)
    rate = match.rate
    cached_price = (
        rate.cached_input_per_million
        if rate.cached_input_per_million is not None
        else rate.input_per_million
    )
    # Terms that are zero are skipped (most books price tokens only): adding a zero
    # Decimal or multiplying by one never changes the value that is rounded.
    subtotal = Decimal(prompt_tokens - cached_tokens) * rate.input_per_million / _MILLION
    if cached_tokens:
        subtotal += Decimal(cached_tokens) * cached_price / _MILLION
    if completion_tokens:
        subtotal += Decimal(completion_tokens) * rate.output_per_million / _MILLION
    if rate.per_request:
        subtotal += rate.per_request
    if rate.per_gpu_second and gpu_seconds:
        subtotal += Decimal(repr(gpu_seconds)) * rate.per_gpu_second
    charge = max(subtotal, rate.minimum)
    discount = book.discount(tenant_id)
    if discount:
        charge *= 1 - discount
    return CostQuote(usd_to_micros(charge), match.rate_id, book.version)


def price_record(record: UsageRecord, book: PriceBook) -> CostQuote:
    """Price a usage record with its own fields (see :func:`compute_cost`)."""
    return compute_cost(
        book,
        tenant_id=record.tenant_id,
        model=record.model,
        pool=record.pool,
        agent_type=record.agent_type,
        at=record.created_at,
        status=record.status.value,
        prompt_tokens=record.prompt_tokens,
        cached_tokens=record.cached_tokens,
        completion_tokens=record.completion_tokens,
        gpu_seconds=record.gpu_seconds,
    )


def with_cost(record: UsageRecord, book: PriceBook) -> UsageRecord:
    """The record with ``cost_micros``, ``rate_id`` and ``price_book_version`` filled in."""
    quote = price_record(record, book)
    return record.replace(
        cost_micros=quote.cost_micros,
        rate_id=quote.rate_id,
        price_book_version=quote.price_book_version,
    )
