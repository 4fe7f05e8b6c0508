"""Export ledger usage to Stripe meters, exactly once per customer, meter and bucket.

1. **Plan.** Sum the ledger per tenant and closed time bucket (a bucket closes
   ``grace_s`` after it ends), map tenants to Stripe customers, and compare each
   (customer, meter, bucket) total with what earlier batches already carry. A
   positive difference becomes a new *export batch* row, saved in SQL *before*
   anything is sent, under a deterministic identifier
   ``tw-<meter>-<bucket start>-<seq>-<customer>`` (``seq`` 0 first, 1, 2, ... for
   records that arrived late).
2. **Send.** Each pending batch is sent as one ``POST /v1/billing/meter_events``
   with ``identifier`` = the batch identifier and the same ``Idempotency-Key`` on
   every attempt. Success, or Stripe's 400 for an identifier it already has, marks
   the batch sent. 429, 5xx, 409 and connection errors are retried here with
   exponential backoff and jitter (the SDK's own retries are off); other errors
   mark the batch failed. Batches of one customer and meter go one call at a time.

Stripe deduplicates identifiers for at least 24 hours: a batch that has been
attempted but is still unconfirmed after 23 hours is set to ``review`` instead of
being sent again, because a resend could no longer be recognised as a duplicate.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe
from sqlalchemy import ColumnElement, and_, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from stripe.params.billing import MeterEventCreateParams

from billing.boundary import foreign_errors
from billing.meters import Quantity, StripeSettings
from billing.tables import export_batches, insert_ignoring_conflicts, usage_ledger
from billing.usage import BILLABLE_STATUSES, UsageStatus
from tollway.backoff import Backoff

log = logging.getLogger("tollway.billing.stripe")

CustomerLookup = Mapping[str, str] | Callable[[str], str | None]
REVIEW_AFTER_US = 23 * 3_600_000_000
# Stripe's v1 meter-event endpoint refuses a reused identifier with a 400 whose
# message starts with this; newer API versions also carry this error code.
_DUPLICATE_CODE = "duplicate_meter_event"
_DUPLICATE_MESSAGE = "An event already exists with identifier"


@dataclass(frozen=True, slots=True)
class StripeConnection:
    """A StripeClient and the HTTP client it owns (close it with :meth:`aclose`)."""

    client: stripe.StripeClient
    http: stripe.AIOHTTPClient

    async def aclose(self) -> None:
        """Close the pooled HTTP connections."""
        close: Callable[[], Awaitable[None]] = self.http.close_async  # untyped in the SDK
        await close()


def connect_stripe(settings: StripeSettings) -> StripeConnection:
    """A StripeClient on the configured base address, with the SDK's own retries off
    (this module retries 429 and 5xx itself, keeping one idempotency key)."""
    base = settings.resolved_api_base()
    http = stripe.AIOHTTPClient(timeout=settings.timeout_s)
    client = stripe.StripeClient(
        settings.api_key().get_secret_value(),
        base_addresses={"api": base, "meter_events": base},
        max_network_retries=0,
        http_client=http,
    )
    return StripeConnection(client, http)


def resolve_customer(customers: CustomerLookup, tenant_id: str) -> str | None:
    """The Stripe customer of a tenant, or None when it has none."""
    if callable(customers):
        return customers(tenant_id)
    return customers.get(tenant_id)


def quantity_column(quantity: Quantity) -> ColumnElement[Any]:
    """SQL sum of a meter's quantity over (settled) ledger rows.

    ``requests`` counts the client's billable requests and token quantities sum
    billable rows (:data:`~billing.usage.BILLABLE_STATUSES`, summary calls included);
    refused requests, upstream errors and interrupted streams add nothing.
    ``cost_micros`` sums what the price book charged, whatever the status.
    """
    c = usage_ledger.c
    billable = c.status.in_([status.value for status in BILLABLE_STATUSES])
    if quantity is Quantity.REQUESTS:
        counted = and_(billable, c.parent_request_id.is_(None))
        return func.coalesce(func.sum(case((counted, 1), else_=0)), 0)
    if quantity is Quantity.COST_MICROS:
        return func.coalesce(func.sum(c.cost_micros), 0)
    return func.coalesce(func.sum(case((billable, c[quantity.value]), else_=0)), 0)


def settled_rows() -> ColumnElement[bool]:
    """Ledger rows meters count: not ``provisional`` (a stream in flight, whose final
    record replaces the row)."""
    return usage_ledger.c.status != UsageStatus.PROVISIONAL.value


def batch_identifier(meter: str, bucket_start_us: int, seq: int, customer: str) -> str:
    """The deterministic meter event identifier of a batch (at most 100 characters)."""
    identifier = f"tw-{meter}-{bucket_start_us // 1_000_000}-{seq}-{customer}"
    if len(identifier) <= 100:
        return identifier
    digest = hashlib.sha256(customer.encode()).hexdigest()[:32]
    return f"tw-{meter}-{bucket_start_us // 1_000_000}-{seq}-h{digest}"


@dataclass(slots=True)
class ExportReport:
    """What one export run did."""

    planned: int = 0
    sent: int = 0
    duplicates: int = 0
    retries: int = 0
    failed: int = 0
    still_pending: int = 0
    review: int = 0
    unmapped_tenants: set[str] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "planned": self.planned,
            "sent": self.sent,
            "duplicates": self.duplicates,
            "retries": self.retries,
            "failed": self.failed,
            "still_pending": self.still_pending,
            "review": self.review,
            "unmapped_tenants": sorted(self.unmapped_tenants),
        }


def is_duplicate_identifier(exc: stripe.StripeError) -> bool:
    """Whether Stripe refused a meter event because it already has its identifier."""
    if exc.http_status != 400:
        return False
    if exc.code == _DUPLICATE_CODE:
        return True
    body = exc.json_body
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return isinstance(message, str) and message.startswith(_DUPLICATE_MESSAGE)


def is_retryable(exc: stripe.StripeError) -> bool:
    """429, 409 (a concurrent request), 5xx and connection errors are worth retrying."""
    if isinstance(exc, stripe.APIConnectionError) or exc.http_status is None:
        return True
    return exc.http_status in (409, 429) or exc.http_status >= 500


class StripeExporter:
    """Plans export batches from the ledger and delivers them to Stripe."""

    def __init__(
        self,
        engine: AsyncEngine,
        client: stripe.StripeClient,
        settings: StripeSettings,
        customers: CustomerLookup,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.engine = engine
        self.client = client
        self.settings = settings
        self.customers = customers
        self._clock = clock
        self._sleep = sleep
        self._rng = rng

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    async def export(self) -> ExportReport:
        """Plan new batches for closed buckets, then send every pending batch."""
        report = ExportReport()
        await self.plan(report)
        await self.send_pending(report)
        return report

    async def plan(self, report: ExportReport | None = None) -> ExportReport:
        """Save batches for the not-yet-exported usage of closed buckets."""
        report = report if report is not None else ExportReport()
        size = self.settings.bucket_us
        now = self._now_us()
        cutoff = (now - self.settings.grace_s * 1_000_000) // size * size
        since = (now - self.settings.lookback_days * 86_400_000_000) // size * size
        bucket = (usage_ledger.c.created_at_us // literal(size)).label("bucket")
        columns = [quantity_column(m.quantity).label(m.name) for m in self.settings.meters]
        usage = (
            select(usage_ledger.c.tenant_id, bucket, *columns)
            .where(
                usage_ledger.c.created_at_us >= since,
                usage_ledger.c.created_at_us < cutoff,
                settled_rows(),
            )
            .group_by(usage_ledger.c.tenant_id, bucket)
        )
        done = (
            select(
                export_batches.c.customer_id,
                export_batches.c.meter,
                export_batches.c.bucket_start_us,
                func.sum(export_batches.c.value).label("value"),
                func.max(export_batches.c.seq).label("seq"),
            )
            .where(export_batches.c.bucket_start_us >= since)
            .group_by(
                export_batches.c.customer_id,
                export_batches.c.meter,
                export_batches.c.bucket_start_us,
            )
        )
        with foreign_errors("planning the Stripe export"):
            async with self.engine.connect() as conn:
                usage_rows = (await conn.execute(usage)).all()
                done_rows = (await conn.execute(done)).all()
        totals: dict[tuple[str, str, int], int] = defaultdict(int)
        for row in usage_rows:
            customer = resolve_customer(self.customers, row.tenant_id)
            if customer is None:
                report.unmapped_tenants.add(row.tenant_id)
                continue
            for meter in self.settings.meters:
                totals[(customer, meter.name, int(row.bucket) * size)] += int(
                    row._mapping[meter.name]
                )
        exported = {(r.customer_id, r.meter, int(r.bucket_start_us)): r for r in done_rows}
        new_rows = []
        for (customer, meter_name, bucket_start), total in sorted(totals.items()):
            previous = exported.get((customer, meter_name, bucket_start))
            delta = total - (int(previous.value) if previous is not None else 0)
            if delta <= 0:
                continue
            seq = int(previous.seq) + 1 if previous is not None else 0
            meter = self.settings.meter(meter_name)
            new_rows.append(
                {
                    "identifier": batch_identifier(meter_name, bucket_start, seq, customer),
                    "customer_id": customer,
                    "meter": meter_name,
                    "event_name": meter.event_name,
                    "bucket_start_us": bucket_start,
                    "bucket_end_us": bucket_start + size,
                    "seq": seq,
                    "value": delta,
                    "status": "pending",
                    "attempts": 0,
                    "created_at_us": now,
                }
            )
        if new_rows:
            with foreign_errors("saving Stripe export batches"):
                async with self.engine.begin() as conn:
                    # Same ledger state, same identifiers: a concurrent planner's rows win.
                    stmt = insert_ignoring_conflicts(export_batches, self.engine.dialect.name)
                    await conn.execute(stmt, new_rows)
        report.planned += len(new_rows)
        return report

    async def send_pending(self, report: ExportReport | None = None) -> ExportReport:
        """Send every pending batch; one call at a time per customer and meter."""
        report = report if report is not None else ExportReport()
        with foreign_errors("reading Stripe export batches"):
            async with self.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(export_batches)
                        .where(export_batches.c.status == "pending")
                        .order_by(
                            export_batches.c.customer_id,
                            export_batches.c.meter,
                            export_batches.c.bucket_start_us,
                            export_batches.c.seq,
                        )
                    )
                ).all()
        lanes: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for row in rows:
            lanes[(row.customer_id, row.meter)].append(row)
        gate = asyncio.Semaphore(self.settings.concurrency)

        async def lane(batches: list[Any]) -> None:
            async with gate:
                for batch in batches:
                    await self._deliver(batch, report)

        await asyncio.gather(*(lane(batches) for batches in lanes.values()))
        return report

    async def _mark(self, identifier: str, **values: Any) -> None:
        with foreign_errors("updating a Stripe export batch"):
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(export_batches)
                    .where(export_batches.c.identifier == identifier)
                    .values(**values)
                )

    def _backoff(self, attempt: int) -> float:
        backoff = Backoff(
            self.settings.backoff_initial_s, self.settings.backoff_max_s, jitter="equal"
        )
        return backoff.delay(attempt, self._rng)

    async def _deliver(self, batch: Any, report: ExportReport) -> None:
        attempts = int(batch.attempts)
        if attempts > 0 and self._now_us() - int(batch.created_at_us) > REVIEW_AFTER_US:
            await self._mark(batch.identifier, status="review")
            report.review += 1
            return
        params: MeterEventCreateParams = {
            "event_name": batch.event_name,
            "identifier": batch.identifier,
            "timestamp": int(batch.bucket_start_us) // 1_000_000,
            "payload": {"stripe_customer_id": batch.customer_id, "value": str(batch.value)},
        }
        error = ""
        for attempt in range(self.settings.max_attempts):
            attempts += 1
            try:
                await self.client.v1.billing.meter_events.create_async(
                    params, options={"idempotency_key": batch.identifier}
                )
            except stripe.StripeError as exc:
                error = f"{exc.http_status}: {exc.user_message or exc.__class__.__name__}"
                if is_duplicate_identifier(exc):
                    await self._mark(
                        batch.identifier,
                        status="sent",
                        attempts=attempts,
                        sent_at_us=self._now_us(),
                        last_error="duplicate identifier: already delivered",
                    )
                    report.duplicates += 1
                    return
                if not is_retryable(exc):
                    await self._mark(
                        batch.identifier, status="failed", attempts=attempts, last_error=error
                    )
                    report.failed += 1
                    log.error("Stripe refused batch %s: %s", batch.identifier, error)
                    return
                await self._mark(batch.identifier, attempts=attempts, last_error=error)
                report.retries += 1
                await self._sleep(self._backoff(attempt))
                continue
            await self._mark(
                batch.identifier,
                status="sent",
                attempts=attempts,
                sent_at_us=self._now_us(),
                last_error=None,
            )
            report.sent += 1
            return
        report.still_pending += 1
        log.warning(
            "batch %s still pending after %d attempts: %s", batch.identifier, attempts, error
        )
