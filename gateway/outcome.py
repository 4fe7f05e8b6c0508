"""What happened to one request: the record metrics, logs and metering read."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from gateway.idempotency import Lease
    from gateway.limits import Ticket

Status = Literal["ok", "upstream_error", "client_cancelled", "rejected"]


@dataclass(slots=True)
class RequestRecord:
    """Filled in as a request moves through the pipeline; finished exactly once."""

    request_id: str
    endpoint: str
    started: float = field(default_factory=time.perf_counter)
    #: Wall-clock arrival (Unix seconds); see :attr:`created_at`.
    arrived: float = field(default_factory=time.time)
    tenant_id: str | None = None
    key_id: str | None = None
    key_prefix: str | None = None
    agent_type: str | None = None
    session_id: str | None = None
    model: str | None = None
    route: str | None = None
    worker: str | None = None
    stream: bool = False
    status: Status = "ok"
    http_status: int = 200
    error_code: str | None = None
    usage: dict[str, Any] | None = None
    #: ``usage`` was estimated by the gateway (a stream that broke or was cut short).
    usage_estimated: bool = False
    first_byte_at: float | None = None
    ended: float | None = None
    tool_calls: int = 0
    tokens_before_compression: int | None = None
    tokens_after_compression: int | None = None
    compression_policy: str | None = None
    #: Set once the request's usage record went to the usage buffer.
    metered: bool = False
    cost_micros: int = 0
    #: The limits engine's ticket, settled when the request ends.
    ticket: Ticket | None = None
    #: Dispatched before its admission answered (see :mod:`gateway.speculation`).
    speculative: bool = False
    #: The ticket of the agent type's per-tenant limits, when its profile has some.
    agent_ticket: Ticket | None = None
    #: The idempotency lease of a request that has a key, settled when it ends.
    lease: Lease | None = None
    #: The OpenTelemetry trace id of the request's span, when tracing is on.
    trace_id: str | None = None

    @property
    def created_at(self) -> dt.datetime:
        """Arrival as an aware UTC datetime (computed when needed, off the hot path)."""
        return dt.datetime.fromtimestamp(self.arrived, dt.UTC)

    @property
    def latency_s(self) -> float:
        """Seconds from arrival to the end of the response."""
        return (self.ended or time.perf_counter()) - self.started

    @property
    def ttft_s(self) -> float | None:
        """Seconds from arrival to the first upstream byte, when there was one."""
        return None if self.first_byte_at is None else self.first_byte_at - self.started

    def tokens(self) -> tuple[int, int, int]:
        """(prompt, cached, completion) tokens from the usage, zeros without one."""
        usage = self.usage or {}
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens", 0) if isinstance(details, dict) else 0
        return (
            int(usage.get("prompt_tokens") or 0),
            int(cached or 0),
            int(usage.get("completion_tokens") or 0),
        )
