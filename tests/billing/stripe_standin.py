"""A local stand-in of Stripe's meter-event endpoints, for the real ``stripe`` SDK.

Faithful to what the exporter relies on:

* ``POST /v1/billing/meter_events``: form-encoded ``event_name``, ``identifier``,
  ``timestamp``, ``payload[stripe_customer_id]``, ``payload[value]`` (a whole
  number); the timestamp within the past 35 days and at most 5 minutes ahead; an
  identifier already received in the last 24 hours is refused with a 400
  ``invalid_request_error`` "An event already exists with identifier ...".
* ``Idempotency-Key``: a repeat with the same parameters replays the first
  response (``Idempotent-Replayed: true``); with other parameters it is a 400
  ``idempotency_error``. Injected 429 and 5xx answers are not saved under the key
  (they model requests that never started executing).
* One concurrent call per customer and meter: an overlapping call gets a 429 and
  is counted in :attr:`StripeStandin.overlaps`.
* ``GET /v1/billing/meters/{id}/event_summaries`` with ``customer``, ``start_time``
  and ``end_time`` (minute-aligned): one summary with the summed value.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DAY = 86_400


@dataclass
class MeterEvent:
    identifier: str
    event_name: str
    customer: str
    value: int
    timestamp: int
    received_at: float


@dataclass
class StripeStandin:
    """The stand-in's state; ``start()`` serves it on a loopback port."""

    meters: dict[str, str]  # meter id -> event name
    clock: Callable[[], float] = time.time
    latency_s: float = 0.002
    events: list[MeterEvent] = field(default_factory=list)
    inject: list[int] = field(default_factory=list)  # statuses for the next meter-event calls
    lose_responses: int = 0  # record the event, then answer 500 (a lost response)
    requests: int = 0
    overlaps: int = 0
    _idempotent: dict[str, tuple[dict[str, str], int, dict[str, Any]]] = field(default_factory=dict)
    _in_flight: set[tuple[str, str]] = field(default_factory=set)
    _runner: web.AppRunner | None = None
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def start(self) -> str:
        """Serve on 127.0.0.1 on a free port; returns the base URL."""
        app = web.Application()
        app.router.add_post("/v1/billing/meter_events", self._create_event)
        app.router.add_get("/v1/billing/meters/{meter}/event_summaries", self._summaries)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    def totals(self) -> dict[tuple[str, str], int]:
        """Sum of received values per (customer, event name)."""
        sums: dict[tuple[str, str], int] = defaultdict(int)
        for event in self.events:
            sums[(event.customer, event.event_name)] += event.value
        return dict(sums)

    # -- handlers ------------------------------------------------------------------------

    @staticmethod
    def _error(
        status: int, type_: str, message: str, code: str | None = None, param: str | None = None
    ) -> web.Response:
        error: dict[str, Any] = {"type": type_, "message": message}
        if code:
            error["code"] = code
        if param:
            error["param"] = param
        return web.json_response({"error": error}, status=status, headers={"Request-Id": "req_x"})

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "").startswith("Bearer sk_")

    async def _create_event(self, request: web.Request) -> web.Response:
        self.requests += 1
        if not self._authorized(request):
            return self._error(401, "invalid_request_error", "Invalid API Key provided")
        if not request.content_type == "application/x-www-form-urlencoded":
            return self._error(400, "invalid_request_error", "expected a form-encoded body")
        form = {key: str(value) for key, value in (await request.post()).items()}
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._idempotent:
            params, status, body = self._idempotent[key]
            if params != form:
                return self._error(
                    400,
                    "idempotency_error",
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with.",
                )
            return web.json_response(body, status=status, headers={"Idempotent-Replayed": "true"})
        if self.inject:
            status = self.inject.pop(0)
            if status == 429:
                return self._error(
                    429,
                    "invalid_request_error",
                    "Request rate limit exceeded. Learn more about rate limits here "
                    "https://stripe.com/docs/rate-limits.",
                    code="rate_limit",
                )
            return self._error(status, "api_error", "Something went wrong on Stripe's end.")
        lane = (form.get("payload[stripe_customer_id]", ""), form.get("event_name", ""))
        if lane in self._in_flight:
            self.overlaps += 1
            return self._error(
                429,
                "invalid_request_error",
                "Too many concurrent requests for this customer and meter.",
                code="rate_limit",
            )
        self._in_flight.add(lane)
        try:
            await asyncio.sleep(self.latency_s)
            status, body = self._record(form)
        finally:
            self._in_flight.discard(lane)
        if status == 200 and self.lose_responses > 0:
            self.lose_responses -= 1
            return self._error(500, "api_error", "Something went wrong on Stripe's end.")
        if key is not None:
            self._idempotent[key] = (form, status, body)
        return web.json_response(body, status=status)

    def _record(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        now = self.clock()
        for name in ("event_name", "payload[stripe_customer_id]", "payload[value]"):
            if not form.get(name):
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "code": "parameter_missing",
                        "param": name,
                        "message": f"Missing required param: {name}.",
                    }
                }
        try:
            value = int(form["payload[value]"])
        except ValueError:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "param": "payload[value]",
                    "message": "The value must be a whole number.",
                }
            }
        timestamp = int(form.get("timestamp") or now)
        if timestamp < now - 35 * DAY or timestamp > now + 300:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "param": "timestamp",
                    "message": "Timestamp must be within the past 35 calendar days "
                    "and no more than 5 minutes in the future.",
                }
            }
        identifier = form.get("identifier") or f"auto_{next(self._ids)}"
        if len(identifier) > 100:
            return 400, {
                "error": {
                    "type": "invalid_request_error",
                    "param": "identifier",
                    "message": "identifier is too long (max 100).",
                }
            }
        for event in self.events:
            if event.identifier == identifier and now - event.received_at < DAY:
                return 400, {
                    "error": {
                        "type": "invalid_request_error",
                        "message": f"An event already exists with identifier {identifier}.",
                    }
                }
        event = MeterEvent(
            identifier,
            form["event_name"],
            form["payload[stripe_customer_id]"],
            value,
            timestamp,
            now,
        )
        self.events.append(event)
        return 200, {
            "object": "billing.meter_event",
            "created": int(now),
            "event_name": event.event_name,
            "identifier": identifier,
            "livemode": False,
            "payload": {"stripe_customer_id": event.customer, "value": str(value)},
            "timestamp": timestamp,
        }

    async def _summaries(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._error(401, "invalid_request_error", "Invalid API Key provided")
        meter = request.match_info["meter"]
        if meter not in self.meters:
            return self._error(
                404,
                "invalid_request_error",
                f"No such billing meter: '{meter}'",
                code="resource_missing",
            )
        query = request.query
        for name in ("customer", "start_time", "end_time"):
            if name not in query:
                return self._error(
                    400,
                    "invalid_request_error",
                    f"Missing required param: {name}.",
                    code="parameter_missing",
                    param=name,
                )
        start, end = int(query["start_time"]), int(query["end_time"])
        if start % 60 or end % 60:
            return self._error(
                400,
                "invalid_request_error",
                "start_time and end_time must be aligned with minute boundaries.",
            )
        value = sum(
            event.value
            for event in self.events
            if event.event_name == self.meters[meter]
            and event.customer == query["customer"]
            and start <= event.timestamp < end
        )
        summary = {
            "id": f"mtrusg_{next(self._ids)}",
            "object": "billing.meter_event_summary",
            "aggregated_value": float(value),
            "start_time": start,
            "end_time": end,
            "livemode": False,
            "meter": meter,
        }
        return web.json_response(
            {
                "object": "list",
                "data": [summary],
                "has_more": False,
                "url": f"/v1/billing/meters/{meter}/event_summaries",
            }
        )
