"""Context compression on the request path, per agent type.

The agent type's profile names a policy under ``compression:``; the policy
rewrites ``messages`` (always into a valid conversation) and reports what it
did, which becomes the ``x-tollway-compression`` header, the usage record's
savings fields and a metric. Rolling summaries are written by the
``summarizer`` agent type, through the gateway's own routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from redis.asyncio import Redis

from backends.base import UpstreamRequest
from gateway.config import TollwayConfig
from gateway.outcome import RequestRecord
from gateway.registry import ModelRegistry
from policies.chain import CompressionPolicy
from policies.registry import build_policies
from policies.summary import summary_request
from policies.summary_store import InMemorySummaryStore, RedisSummaryStore, SummaryStore
from tollway.errors import UpstreamError

SUMMARIZER = "summarizer"


class RoutedSummarizer:
    """Summaries written by the ``summarizer`` agent type's model, through the pools."""

    def __init__(self, config: TollwayConfig, registry: ModelRegistry) -> None:
        profile = config.agent_types.get(SUMMARIZER)
        self.model = profile.model if profile is not None else None
        self.registry = registry

    async def summarize(self, messages: Sequence[dict[str, Any]]) -> str:
        if self.model is None:
            raise UpstreamError("no `summarizer` agent type is configured")
        backend = self.registry.backend(self.registry.entry(self.model))
        body = {
            "model": backend.upstream_model,
            "messages": summary_request(messages),
            "max_tokens": 600,
            "temperature": 0,
        }
        response = await backend.send(
            UpstreamRequest(
                path="/v1/chat/completions",
                body=orjson.dumps(body),
                stream=False,
                request_id="summary",
                tenant="tollway-summarizer",
                kv_tokens=len(orjson.dumps(messages)) // 4 + 600,
                payload=body,
            )
        )
        data = orjson.loads(response.body)
        content = data["choices"][0]["message"].get("content") or ""
        return str(content)


class Compressor:
    """Applies each agent type's compression policy."""

    def __init__(
        self,
        config: TollwayConfig,
        registry: ModelRegistry,
        redis: Redis | None,
        prefix: str = "tollway:",
    ) -> None:
        store: SummaryStore = (
            RedisSummaryStore(redis, prefix=prefix) if redis is not None else InMemorySummaryStore()
        )
        self.policies: dict[str, CompressionPolicy] = build_policies(
            config.compression, summarizer=RoutedSummarizer(config, registry), store=store
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
        result = await policy.compress(messages, scope=scope)
        if result.changed:
            body["messages"] = result.messages
        record.compression_policy = result.policy
        record.tokens_before_compression = result.tokens_before
        record.tokens_after_compression = result.tokens_after
        return result.header_value()
