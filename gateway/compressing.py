"""Context compression on the request path, per agent type.

The agent type's profile names a policy under ``compression:``; the policy
rewrites ``messages`` (always into a valid conversation) and reports what it
did, which becomes the ``x-tollway-compression`` header, the usage record's
savings fields and a metric. Rolling summaries are written by the
``summarizer`` agent type, through the gateway's own routing.

Each summary the model actually writes is metered as its own usage record:
agent type ``summarizer``, the summarizer's model and route, the same tenant and
key as the request that needed it, ``parent_request_id`` naming that request,
priced from the price book. A summary found in the store costs nothing and
leaves no record (the policy calls the summarizer only on a miss).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import orjson

from backends.base import UpstreamRequest
from billing.usage import UsageSource
from gateway.config import TollwayConfig
from gateway.metering import Metering
from gateway.outcome import RequestRecord
from gateway.redis_summaries import RedisSummaryStore
from gateway.registry import ModelRegistry
from gateway.shapes import usage_of
from policies.chain import CompressionPolicy
from policies.registry import build_policies
from policies.summary import Summarizer, summary_request
from policies.summary_store import InMemorySummaryStore, SummaryStore
from tollway.errors import UpstreamError
from tollway.resp import RespClient
from tollway.token_estimate import estimate_json_tokens

SUMMARIZER = "summarizer"
_CHAT_PATH = "/v1/chat/completions"
_MAX_REQUEST_ID = 128  # the ledger's request_id column


def summary_request_id(parent: str, number: int) -> str:
    """The request id of the ``number``-th summary call made for request ``parent``
    (its own ledger row; within the ledger's 128 characters whatever ``parent`` is)."""
    plain = f"{parent}.summary{number}"
    if len(plain) <= _MAX_REQUEST_ID:
        return plain
    return f"summary-{hashlib.sha256(parent.encode()).hexdigest()}-{number}"


class RoutedSummarizer:
    """Summaries written by the ``summarizer`` agent type's model, through the pools."""

    def __init__(
        self, config: TollwayConfig, registry: ModelRegistry, metering: Metering | None = None
    ) -> None:
        profile = config.agent_types.get(SUMMARIZER)
        self.model = profile.model if profile is not None else None
        self.registry = registry
        self.metering = metering

    async def summarize(self, messages: Sequence[dict[str, Any]]) -> str:
        """A summary not made for any request (not metered: nobody to attribute it to)."""
        return await self.write(messages, None, None)

    def for_request(self, record: RequestRecord) -> Summarizer:
        """A summarizer whose calls are metered as made on behalf of ``record``."""
        return _RequestSummarizer(self, record)

    async def write(
        self,
        messages: Sequence[dict[str, Any]],
        call: RequestRecord | None,
        parent_id: str | None,
    ) -> str:
        """Ask the summarizer model for a summary; ``call`` (when given) is the record of
        this call, made for request ``parent_id``, filled in and metered however the
        call ends."""
        if self.model is None:
            raise UpstreamError("no `summarizer` agent type is configured")
        entry = self.registry.entry(self.model)
        backend = self.registry.backend(entry)
        body = {
            "model": backend.upstream_model,
            "messages": summary_request(messages),
            "max_tokens": 600,
            "temperature": 0,
        }
        if call is not None:
            call.model, call.route = entry.name, backend.route
        metered = False
        try:
            response = await backend.send(
                UpstreamRequest(
                    path=_CHAT_PATH,
                    body=orjson.dumps(body),
                    stream=False,
                    request_id=call.request_id if call is not None else "summary",
                    tenant=(call.tenant_id or "") if call is not None else "tollway-summarizer",
                    kv_tokens=estimate_json_tokens(orjson.dumps(messages)) + 600,
                    payload=body,
                )
            )
            data = orjson.loads(response.body)
            if call is not None:
                call.route, call.worker = response.route, response.worker
                call.usage = usage_of(data) if isinstance(data, dict) else None
                await self._meter(call, parent_id, response.gpu_seconds())
                metered = True
            content = data["choices"][0]["message"].get("content") or ""
            return str(content)
        finally:
            if call is not None and not metered:
                call.status = "upstream_error"
                self._meter_failed(call, parent_id)

    async def _meter(self, call: RequestRecord, parent_id: str | None, gpu_seconds: float) -> None:
        if self.metering is None:
            return
        call.ended = time.perf_counter()
        source = UsageSource.UPSTREAM if call.usage is not None else UsageSource.ESTIMATED
        usage = self.metering.usage_record(
            call, gpu_seconds, self.metering.quote(call, gpu_seconds), source
        )
        await self.metering.commit(usage.replace(parent_request_id=parent_id))

    def _meter_failed(self, call: RequestRecord, parent_id: str | None) -> None:
        """A call that failed or timed out: recorded (not charged by default), without
        waiting, since this may run while the request is being cancelled."""
        if self.metering is None:
            return
        call.ended = time.perf_counter()
        usage = self.metering.usage_record(
            call, 0.0, self.metering.quote(call, 0.0), UsageSource.ESTIMATED
        )
        self.metering.submit(usage.replace(parent_request_id=parent_id))


class _RequestSummarizer:
    """The routed summarizer bound to one request: each call gets its own usage record."""

    def __init__(self, routed: RoutedSummarizer, parent: RequestRecord) -> None:
        self.routed = routed
        self.parent = parent
        self.calls = 0

    async def summarize(self, messages: Sequence[dict[str, Any]]) -> str:
        self.calls += 1
        parent = self.parent
        call = RequestRecord(
            request_id=summary_request_id(parent.request_id, self.calls),
            endpoint=_CHAT_PATH,
            tenant_id=parent.tenant_id,
            key_id=parent.key_id,
            key_prefix=parent.key_prefix,
            agent_type=SUMMARIZER,
            session_id=parent.session_id,
        )
        return await self.routed.write(messages, call, parent.request_id)


class Compressor:
    """Applies each agent type's compression policy."""

    def __init__(
        self,
        config: TollwayConfig,
        registry: ModelRegistry,
        redis: RespClient | None,
        prefix: str = "tollway:",
        metering: Metering | None = None,
    ) -> None:
        store: SummaryStore = (
            RedisSummaryStore(redis, prefix=prefix) if redis is not None else InMemorySummaryStore()
        )
        self.summarizer = RoutedSummarizer(config, registry, metering)
        self.policies: dict[str, CompressionPolicy] = build_policies(
            config.compression, summarizer=self.summarizer, store=store
        )

    async def apply(
        self, policy_name: str | None, body: dict[str, Any], record: RequestRecord
    ) -> str | None:
        """Compress ``body["messages"]`` in place; the header value, or None when no policy."""
        policy = self.policies.get(policy_name) if policy_name else None
        messages = body.get("messages")
        if policy is None or not isinstance(messages, list):
            return None
        scope = f"{record.tenant_id}:{record.session_id}" if record.session_id else None
        summarizer = self.summarizer.for_request(record) if record.tenant_id else None
        result = await policy.compress(messages, scope=scope, summarizer=summarizer)
        if result.changed:
            body["messages"] = result.messages
        record.compression_policy = result.policy
        record.tokens_before_compression = result.tokens_before
        record.tokens_after_compression = result.tokens_after
        return result.header_value()
