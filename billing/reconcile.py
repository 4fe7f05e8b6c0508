"""Reconcile: ledger totals against export batches and Stripe's meter event summaries.

For a period (aligned to the export bucket), per customer and meter: what the
ledger holds, what Tollway's sent batches carry, and what Stripe aggregated
(``GET /v1/billing/meters/{id}/event_summaries``). All three agree when every
closed bucket was exported once and only once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import stripe
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe.params.billing import MeterEventSummaryListParams

from billing.boundary import foreign_errors
from billing.meters import StripeSettings
from billing.stripe_export import (
    CustomerLookup,
    quantity_column,
    resolve_customer,
    settled_rows,
)
from billing.tables import export_batches, usage_ledger
from billing.usage import to_epoch_us
from tollway.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class ReconcileRow:
    """One customer and meter over the period."""

    customer_id: str
    meter: str
    ledger_value: int
    exported_value: int
    stripe_value: int | None  # None: the meter has no meter_id to ask Stripe with

    @property
    def matches(self) -> bool:
        """Ledger, exported batches and Stripe (when asked) all agree."""
        return self.ledger_value == self.exported_value and self.stripe_value in (
            None,
            self.ledger_value,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {**asdict(self), "matches": self.matches}


async def _stripe_total(
    client: stripe.StripeClient, meter_id: str, customer: str, start_s: int, end_s: int
) -> int:
    total = 0.0
    starting_after: str | None = None
    while True:
        params: MeterEventSummaryListParams = {
            "customer": customer,
            "start_time": start_s,
            "end_time": end_s,
            "limit": 100,
        }
        if starting_after:
            params["starting_after"] = starting_after
        with foreign_errors("reading Stripe meter event summaries"):
            page = await client.v1.billing.meters.event_summaries.list_async(meter_id, params)
        for summary in page.data:
            total += float(summary.aggregated_value)
        if not page.has_more or not page.data:
            return round(total)
        starting_after = page.data[-1].id


async def reconcile(
    engine: AsyncEngine,
    client: stripe.StripeClient | None,
    settings: StripeSettings,
    customers: CustomerLookup,
    start: dt.datetime,
    end: dt.datetime,
) -> list[ReconcileRow]:
    """Compare the ledger, the sent batches and Stripe for ``[start, end)``.

    ``start`` and ``end`` must be aligned to the export bucket (hour or day, UTC).
    Without a client only the ledger and the batches are compared.
    """
    start_us, end_us = to_epoch_us(start), to_epoch_us(end)
    size = settings.bucket_us
    if start_us % size or end_us % size or end_us <= start_us:
        raise InvalidRequest(
            f"the period must be whole {settings.bucket}s (UTC) with start before end",
            param="start",
        )
    columns = [quantity_column(m.quantity).label(m.name) for m in settings.meters]
    usage = (
        select(usage_ledger.c.tenant_id, *columns)
        .where(
            usage_ledger.c.created_at_us >= start_us,
            usage_ledger.c.created_at_us < end_us,
            settled_rows(),
        )
        .group_by(usage_ledger.c.tenant_id)
    )
    sent = (
        select(
            export_batches.c.customer_id,
            export_batches.c.meter,
            func.sum(export_batches.c.value).label("value"),
        )
        .where(
            export_batches.c.status == "sent",
            export_batches.c.bucket_start_us >= start_us,
            export_batches.c.bucket_start_us < end_us,
        )
        .group_by(export_batches.c.customer_id, export_batches.c.meter)
    )
    with foreign_errors("reading the ledger for reconciliation"):
        async with engine.connect() as conn:
            usage_rows = (await conn.execute(usage)).all()
            sent_rows = (await conn.execute(sent)).all()
    ledger: dict[tuple[str, str], int] = defaultdict(int)
    for row in usage_rows:
        customer = resolve_customer(customers, row.tenant_id)
        if customer is None:
            continue
        for meter in settings.meters:
            ledger[(customer, meter.name)] += int(row._mapping[meter.name])
    exported = {(r.customer_id, r.meter): int(r.value) for r in sent_rows}
    result = []
    for customer, meter_name in sorted(set(ledger) | set(exported)):
        meter = settings.meter(meter_name)
        stripe_value = None
        if client is not None and meter.meter_id:
            stripe_value = await _stripe_total(
                client, meter.meter_id, customer, start_us // 1_000_000, end_us // 1_000_000
            )
        result.append(
            ReconcileRow(
                customer_id=customer,
                meter=meter_name,
                ledger_value=ledger.get((customer, meter_name), 0),
                exported_value=exported.get((customer, meter_name), 0),
                stripe_value=stripe_value,
            )
        )
    return result
