"""One structured line per request: never a secret, never message content.

The fields (request id, tenant, key id, model, agent type, route, status,
tokens, cost, latency, error code, and the trace id when tracing is on) ride
on the log record as ``fields``; the JSON formatter of :mod:`gateway.logconfig`
writes them as one object, the text formatter as ``key=value`` pairs. The
record's message is the same object as JSON text, for handlers that only read
messages.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from gateway.outcome import RequestRecord

log = logging.getLogger("tollway.access")


def access_fields(record: RequestRecord) -> dict[str, Any]:
    """The logged fields of a finished request."""
    prompt, cached, completion = record.tokens()
    return {
        "ts": time.time(),
        "event": "request",
        "request_id": record.request_id,
        "endpoint": record.endpoint,
        "tenant_id": record.tenant_id,
        "key_id": record.key_id,
        "key_prefix": record.key_prefix,
        "agent_type": record.agent_type,
        "model": record.model,
        "route": record.route,
        "stream": record.stream,
        "status": record.status,
        "http_status": record.http_status,
        "error_code": record.error_code,
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "completion_tokens": completion,
        "cost_usd": record.cost_micros / 1_000_000,
        "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 3),
        "latency_ms": round(record.latency_s * 1000, 3),
        "trace_id": record.trace_id,
    }


class _Message:
    """The record's message, encoded only when a handler asks for it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return orjson.dumps(self.fields).decode()


class AccessLog:
    """Writes access lines to the ``tollway.access`` logger when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def write(self, record: RequestRecord) -> None:
        if self.enabled and log.isEnabledFor(logging.INFO):
            fields = access_fields(record)
            log.info("%s", _Message(fields), extra={"fields": fields})
