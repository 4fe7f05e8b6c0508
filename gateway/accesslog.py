"""One structured JSON line per request: never a secret, never message content."""

from __future__ import annotations

import logging
import time

import orjson

from gateway.outcome import RequestRecord

log = logging.getLogger("tollway.access")


def access_line(record: RequestRecord) -> bytes:
    """The JSON log line of a finished request."""
    prompt, cached, completion = record.tokens()
    return orjson.dumps(
        {
            "ts": time.time(),
            "event": "request",
            "request_id": record.request_id,
            "endpoint": record.endpoint,
            "tenant_id": record.tenant_id,
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
            "ttft_ms": None if record.ttft_s is None else round(record.ttft_s * 1000, 3),
            "latency_ms": round(record.latency_s * 1000, 3),
        }
    )


class AccessLog:
    """Writes access lines to the ``tollway.access`` logger when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def write(self, record: RequestRecord) -> None:
        if self.enabled and log.isEnabledFor(logging.INFO):
            log.info(access_line(record).decode())
