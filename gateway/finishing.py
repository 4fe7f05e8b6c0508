"""A request's end: its record metered once, its limits settled, counted and logged.

Every request's :class:`~gateway.outcome.RequestRecord` is finished exactly
once, by :meth:`RecordFinisher.close` (an error, a stream's end) or, for a JSON
response, in two halves: :meth:`RecordFinisher.meter` before the response
leaves (the usage record is durable first) and :meth:`RecordFinisher.release`
once it was sent (:meth:`RecordFinisher.after_send`), off the request's
critical path. Observing never fails a request: errors here are logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from starlette.background import BackgroundTask

from billing.usage import UsageSource
from gateway.admitting import Admitter
from gateway.metering import Metering
from gateway.outcome import RequestRecord

log = logging.getLogger("tollway.request")

#: Called with each finished record (metrics and the access log).
Finisher = Callable[[RequestRecord], None]


class _AfterSend(BackgroundTask):
    """Runs ``release(record)`` once the response is sent: a :class:`BackgroundTask`
    without its per-request inspection of the callable."""

    def __init__(self, release: Callable[[RequestRecord], None], record: RequestRecord) -> None:
        self.release = release
        self.record = record

    async def __call__(self) -> None:
        self.release(self.record)


class RecordFinisher:
    """Meters, settles and hands on (to ``finish``) each request's record."""

    def __init__(
        self, finish: Finisher, metering: Metering | None, admitter: Admitter | None
    ) -> None:
        self.finish = finish
        self.metering = metering
        self.admitter = admitter

    @staticmethod
    def abandon(record: RequestRecord) -> None:
        """Free the idempotency key of a request that did not complete."""
        if record.lease is not None:
            record.lease.abandon_soon()
            record.lease = None

    def close(self, record: RequestRecord, gpu_seconds: float = 0.0) -> None:
        """Finish a record: meter it (if not yet), settle its limits, count it, log it."""
        self.meter(record, gpu_seconds)
        self.release(record)

    def after_send(self, record: RequestRecord) -> BackgroundTask:
        """The response's background task that releases ``record`` once it was sent."""
        return _AfterSend(self.release, record)

    def meter(self, record: RequestRecord, gpu_seconds: float = 0.0) -> None:
        """Meter a record that the responder did not (errors, bodies that are not JSON)."""
        if record.ended is None:
            record.ended = time.perf_counter()
        try:
            if self.metering is not None and not record.metered and record.tenant_id:
                upstream = record.usage is not None and not record.usage_estimated
                source = UsageSource.UPSTREAM if upstream else UsageSource.ESTIMATED
                if record.status == "client_cancelled":
                    source = UsageSource.COUNTED
                quote = self.metering.quote(record, gpu_seconds)
                self.metering.submit(self.metering.usage_record(record, gpu_seconds, quote, source))
                record.metered = True
        except Exception:  # noqa: BLE001 - observing must never fail a request
            log.exception("metering request %s failed", record.request_id)

    def release(self, record: RequestRecord) -> None:
        """Settle a finished record's limits, count it, log it."""
        try:
            if self.admitter is not None:
                for ticket in (record.ticket, record.agent_ticket):
                    if ticket is not None:
                        self.admitter.settle(ticket, record)
                record.ticket = record.agent_ticket = None
            self.finish(record)
        except Exception:  # noqa: BLE001 - observing must never fail a request
            log.exception("finishing request %s failed", record.request_id)
