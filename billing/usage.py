"""The usage record: one per request, immutable, enough to recompute its cost.

A :class:`UsageRecord` is built by the gateway when a request ends (successfully or
not), priced with :func:`billing.cost.price_record`, made durable in a usage buffer
(:mod:`billing.buffer`) and finally written once to the SQL ledger
(:mod:`billing.ledger`). ``to_bytes``/``from_bytes`` are the buffer's wire format
(compact JSON, versioned).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

WIRE_VERSION = 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UsageStatus(StrEnum):
    """How the request ended.

    ``provisional`` is the record a stream journals at its first byte; the stream's
    final record supersedes it in the ledger. One nobody superseded within the grace
    period is settled as ``interrupted`` (the gateway died mid-stream).
    """

    OK = "ok"
    UPSTREAM_ERROR = "upstream_error"
    CLIENT_CANCELLED = "client_cancelled"
    REJECTED = "rejected"
    PROVISIONAL = "provisional"
    INTERRUPTED = "interrupted"


#: Requests that were served, in full or until the client left: what ``requests`` in
#: usage reports and Stripe's ``requests`` quantity count, and the rows whose tokens
#: they sum. The price book's default ``charged_statuses`` are the same two.
BILLABLE_STATUSES: tuple[UsageStatus, ...] = (UsageStatus.OK, UsageStatus.CLIENT_CANCELLED)
#: Requests refused before any model work (authentication, validation, rate limits,
#: budget, unknown model): counted apart, as ``rejected``, and never billed.
REFUSED_STATUSES: tuple[UsageStatus, ...] = (UsageStatus.REJECTED,)
#: Ledger rows a later record of the same request replaces (see :mod:`billing.ledger`).
SUPERSEDABLE_STATUSES: tuple[UsageStatus, ...] = (
    UsageStatus.PROVISIONAL,
    UsageStatus.INTERRUPTED,
)


class UsageSource(StrEnum):
    """Where the token counts came from."""

    UPSTREAM = "upstream"  # reported by the upstream's ``usage`` object
    COUNTED = "counted"  # counted by Tollway's tokenizer
    ESTIMATED = "estimated"  # estimated (for example a stream cut short)


def to_epoch_us(moment: datetime) -> int:
    """An aware datetime as integer microseconds since the Unix epoch (UTC)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: usage times must be timezone-aware")
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_epoch_us(value: int) -> datetime:
    """Integer microseconds since the Unix epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(value // 1_000_000, tz=UTC).replace(microsecond=value % 1_000_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class UsageRecord:
    """What one request used and cost.

    Token counts follow OpenAI's conventions: ``prompt_tokens`` includes
    ``cached_tokens``, and ``completion_tokens`` includes ``reasoning_tokens``.
    The route is a pool and worker (``pool``, ``worker``) or a hosted catalog model
    (``catalog_model``). Money is integer micro-USD: ``cost_micros`` is what the
    tenant is charged (from price book ``price_book_version``, rate ``rate_id``);
    ``internal_cost_micros`` is the GPU cost of the request's GPU-second share.
    ``parent_request_id`` links a model call the gateway made on a request's behalf
    (a rolling summary, agent type ``summarizer``) to that request; None for a
    client's own request.
    """

    request_id: str
    tenant_id: str
    key_id: str
    model: str
    created_at: datetime
    agent_type: str | None = None
    session_id: str | None = None
    pool: str | None = None
    worker: str | None = None
    catalog_model: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None
    tool_calls: int = 0
    tokens_before_compression: int | None = None
    tokens_after_compression: int | None = None
    ttft_ms: float | None = None
    latency_ms: float = 0.0
    status: UsageStatus = UsageStatus.OK
    usage_source: UsageSource = UsageSource.UPSTREAM
    gpu_seconds: float = 0.0
    internal_cost_micros: int = 0
    price_book_version: int | None = None
    rate_id: str | None = None
    cost_micros: int = 0
    parent_request_id: str | None = None

    def __post_init__(self) -> None:
        if not self.request_id:
            raise ValueError("request_id must not be empty")
        if self.created_at.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        for name in ("prompt_tokens", "cached_tokens", "completion_tokens", "tool_calls"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.cached_tokens > self.prompt_tokens:
            raise ValueError("cached_tokens must not exceed prompt_tokens")

    @property
    def route(self) -> str:
        """The route as shown in ``x-tollway-route``: ``pool:NAME/WORKER`` or ``catalog:MODEL``."""
        if self.catalog_model is not None:
            return f"catalog:{self.catalog_model}"
        if self.pool is not None:
            return f"pool:{self.pool}/{self.worker}" if self.worker else f"pool:{self.pool}"
        return ""

    @property
    def compression_saved_tokens(self) -> int:
        """Prompt tokens removed by context compression (0 when not compressed)."""
        if self.tokens_before_compression is None or self.tokens_after_compression is None:
            return 0
        return max(0, self.tokens_before_compression - self.tokens_after_compression)

    @property
    def created_at_us(self) -> int:
        """``created_at`` as microseconds since the Unix epoch."""
        return to_epoch_us(self.created_at)

    def replace(self, **changes: Any) -> UsageRecord:
        """A copy with some fields changed (for example the priced cost)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields; ``created_at`` as epoch microseconds."""
        data = {field.name: getattr(self, field.name) for field in _FIELDS}
        data["created_at"] = self.created_at_us
        data["status"] = self.status.value
        data["usage_source"] = self.usage_source.value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageRecord:
        """The inverse of :meth:`to_dict`; unknown keys are ignored (newer writers)."""
        values = {name: data[name] for name in _FIELD_NAMES if name in data}
        values["created_at"] = from_epoch_us(int(data["created_at"]))
        values["status"] = UsageStatus(data.get("status", "ok"))
        values["usage_source"] = UsageSource(data.get("usage_source", "upstream"))
        return cls(**values)

    def to_bytes(self) -> bytes:
        """The buffer wire format: compact JSON with a version tag."""
        data = self.to_dict()
        data["v"] = WIRE_VERSION
        return orjson.dumps(data)

    @classmethod
    def from_bytes(cls, payload: bytes) -> UsageRecord:
        """Parse :meth:`to_bytes` output; raises ``ValueError`` on a bad payload."""
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a usage record: {exc}") from exc
        if not isinstance(data, dict) or data.get("v") != WIRE_VERSION:
            raise ValueError("not a usage record of a known wire version")
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a usage record: {exc}") from exc


_FIELDS = dataclasses.fields(UsageRecord)
_FIELD_NAMES = tuple(field.name for field in _FIELDS)
