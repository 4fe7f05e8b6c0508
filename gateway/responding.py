"""Turning an upstream response into the client's, with metering and idempotency.

JSON bodies are parsed once: brought to OpenAI's shape, priced (``usage.cost``,
``x-tollway-cost-usd``), their usage record made durable before the response is
sent, and stored for idempotent replays. A 200 whose body is not a JSON object,
or whose ``usage`` is not token counts (:func:`gateway.shapes.checked_usage`),
raises :class:`~tollway.errors.UpstreamUnusableAnswer`: the client gets a 502 in
OpenAI's shape and the pipeline meters the request as failed, once. Streams are relayed by
:class:`~gateway.relay.StreamRelay`, with the cost added to the usage chunk, a
provisional record journaled at the first byte, the final record made durable
before ``[DONE]``, and the request finished when the stream
closes however it ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.responses import Response, StreamingResponse

from backends.base import UpstreamResponse
from billing.cost import CostQuote
from billing.money import micros_to_usd_str
from billing.usage import UsageSource
from gateway.embeddings import input_tokens
from gateway.idempotency import StoredResponse, recorded_stream, replayable_headers
from gateway.metering import Metering
from gateway.outcome import RequestRecord
from gateway.relay import DEFAULT_MAX_EVENT_BYTES, Opening, StreamOutcome, StreamRelay
from gateway.responses import JSON
from gateway.shapes import normalize_body, tool_calls_of, usage_of
from gateway.usagefields import usage_fields
from policies.tokens import TokenCounter
from tollway.errors import UpstreamUnusableAnswer

Closer = Callable[[RequestRecord, float], None]
#: Brings a parsed body to its API's shape in place; returns the usage billed (or None).
Shaper = Callable[[dict[str, Any]], dict[str, Any] | None]


def _stream_rewrite(upstream_model: str, public: str) -> tuple[bytes, bytes] | None:
    if upstream_model == public:
        return None
    return (
        b'"model":' + orjson.dumps(upstream_model),
        b'"model":' + orjson.dumps(public),
    )


class Responder:
    """Builds the responses of the inference routes."""

    def __init__(
        self,
        metering: Metering | None,
        counter: TokenCounter,
        close: Closer,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
    ) -> None:
        self.metering = metering
        self.counter = counter
        self.close = close
        self.max_event_bytes = max_event_bytes

    async def json(
        self,
        upstream: UpstreamResponse,
        record: RequestRecord,
        public_model: str,
        body: dict[str, Any],
        headers: dict[str, str],
        shape: Shaper | None = None,
    ) -> Response:
        """The JSON response; ``shape`` brings the body to its API's shape and returns
        its billable usage (default: a completion's ``usage``)."""
        data = normalize_body(upstream.body, public_model)
        if data is None:
            raise UpstreamUnusableAnswer("The upstream's answer is not a JSON object.")
        record.usage = usage_of(data) if shape is None else shape(data)
        record.tool_calls = tool_calls_of(data)
        if self.metering is not None and record.tenant_id:
            gpu_seconds = upstream.gpu_seconds()
            if record.usage is None:
                record.usage = self.estimated_usage(body, completion=0)
                source = UsageSource.ESTIMATED
            else:
                source = UsageSource.UPSTREAM
            quote = self.metering.quote(record, gpu_seconds)
            if isinstance(data.get("usage"), dict):
                data["usage"].update(usage_fields(quote))
            headers["x-tollway-cost-usd"] = micros_to_usd_str(quote.cost_micros)
            record.ended = time.perf_counter()
            await self.metering.commit(
                self.metering.usage_record(record, gpu_seconds, quote, source)
            )
            record.metered = True
        content = orjson.dumps(data)
        if record.lease is not None:
            stored = StoredResponse(
                200,
                replayable_headers({**headers, "content-type": JSON}),
                body=content,
                request_id=record.request_id,
            )
            await record.lease.complete(stored)
            record.lease = None
        return Response(content, status_code=200, headers=headers, media_type=JSON)

    def prompt_estimate(self, record: RequestRecord, body: dict[str, Any]) -> int:
        """The prompt tokens of a request whose usage is not known yet."""
        if record.tokens_after_compression is not None:
            return record.tokens_after_compression
        return int(self.estimated_usage(body, completion=0)["prompt_tokens"])

    def estimated_usage(self, body: dict[str, Any], completion: int) -> dict[str, Any]:
        """Usage counted offline, for upstreams that reported none."""
        messages = body.get("messages")
        if isinstance(messages, list):
            prompt = self.counter.count_messages(messages)
        elif "input" in body:  # embeddings
            prompt = input_tokens(body["input"], self.counter)
        else:
            prompt = self.counter.count_text(str(body.get("prompt", "")))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def stream(
        self,
        upstream: UpstreamResponse,
        record: RequestRecord,
        include_usage: bool,
        upstream_model: str,
        body: dict[str, Any],
        headers: dict[str, str],
        opening: Opening | None = None,
    ) -> Response:
        """The streaming response; ``opening``: what :func:`gateway.relay.read_opening`
        read of the stream already."""
        metering = self.metering if record.tenant_id else None

        priced: list[CostQuote] = []  # the usage event's quote, reused for the record

        def on_usage(outcome: StreamOutcome) -> dict[str, Any] | None:
            record.usage = outcome.usage
            if metering is None:
                return None
            priced[:] = [metering.quote(record, upstream.gpu_seconds())]
            return usage_fields(priced[0])

        async def before_done(outcome: StreamOutcome) -> None:
            record.first_byte_at = outcome.first_byte_at
            record.tool_calls = outcome.tool_calls
            if metering is None:
                return
            source = UsageSource.UPSTREAM
            if record.usage is None:
                record.usage = self.estimated_usage(body, outcome.content_events)
                source = UsageSource.ESTIMATED
            gpu_seconds = upstream.gpu_seconds()  # frozen since the usage event, if any
            record.ended = time.perf_counter()
            quote = priced[0] if priced and source is UsageSource.UPSTREAM else None
            quote = quote or metering.quote(record, gpu_seconds)
            await metering.commit(metering.usage_record(record, gpu_seconds, quote, source))
            record.metered = True

        def first_byte(outcome: StreamOutcome) -> None:
            if metering is not None:
                metering.provisional(record, lambda: self.prompt_estimate(record, body))

        def stream_closed(outcome: StreamOutcome, cancelled: bool) -> None:
            record.first_byte_at = outcome.first_byte_at
            record.tool_calls = outcome.tool_calls
            if not record.metered:
                if cancelled:
                    record.status, record.http_status = "client_cancelled", 499
                elif outcome.error is not None:
                    record.status = "upstream_error"
                    record.error_code = outcome.error.code
                if record.usage is None or cancelled:
                    record.usage = self.estimated_usage(body, outcome.content_events)
                    record.usage_estimated = True
            self.close(record, upstream.gpu_seconds())

        relay = StreamRelay(
            upstream,
            include_usage=include_usage,
            rewrite=_stream_rewrite(upstream_model, record.model or ""),
            on_usage=on_usage,
            before_done=before_done,
            on_close=stream_closed,
            max_event_bytes=self.max_event_bytes,
            opening=opening,
            on_first_byte=first_byte,
        )
        headers["cache-control"] = "no-cache"
        headers["x-accel-buffering"] = "no"
        if record.lease is None:
            return StreamingResponse(relay, headers=headers, media_type="text/event-stream")
        lease, record.lease = record.lease, None  # the recorded stream settles it
        recorded = recorded_stream(
            relay,
            lease,
            succeeded=lambda: relay.outcome.finished and relay.outcome.error is None,
            status=200,
            headers={**headers, "content-type": "text/event-stream"},
            request_id=record.request_id,
        )
        return StreamingResponse(recorded, headers=headers, media_type="text/event-stream")
