"""The ``limits:`` section of the configuration file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LimitsConfig(BaseModel):
    """Settings of the admission engine (rate limits, concurrency, budgets).

    Example::

        limits:
          on_redis_outage: fail_open      # or fail_closed (503)
          key_prefix: "tollway:"
          redis_timeout_s: 0.25
          outage_retry_s: 1.0
          max_request_duration_s: 900
          clock: redis                    # or local
          upstream_max_wait_s: 2.0
          settle_batch_ms: 0
          speculate: true
          speculate_headroom: 0.25
          speculate_max_age_s: 1.0
          speculate_cooldown_s: 10.0
          budget_resync_check_s: 5.0
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    on_redis_outage: Literal["fail_open", "fail_closed"] = Field(
        default="fail_open",
        description=(
            "fail_open: serve with this replica's own in-process limits, log a warning and "
            "count it; fail_closed: answer 503 while Redis is unreachable."
        ),
    )
    key_prefix: str = Field(
        default="tollway:",
        pattern=r"^[^{}\s]{0,64}$",
        description="Prefix of every Redis key; no braces (the tenant hash tag follows it).",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Connect and whole-call timeout of one Redis call.",
    )
    outage_retry_s: float = Field(
        default=1.0,
        ge=0,
        le=300,
        description="After a Redis error, skip Redis for this long before trying it again.",
    )
    max_request_duration_s: float = Field(
        default=900.0,
        gt=0,
        le=7 * 86400,
        description=(
            "A concurrency slot or budget reservation older than this is dropped, so a "
            "replica that died mid-request cannot hold them forever."
        ),
    )
    clock: Literal["redis", "local"] = Field(
        default="redis",
        description=(
            "Time source of the rate buckets: the Redis server's clock (one clock for all "
            "replicas) or each replica's own clock (must be NTP-synchronised)."
        ),
    )
    upstream_max_wait_s: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="How long a request may wait for an upstream's request-rate limiter.",
    )

    settle_batch_ms: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description=(
            "A settlement (after the response) may wait this long to share a write with "
            "the next Redis call, so it costs no round trip of its own; a concurrency slot "
            "is released at most this much later. 0 (the default) sends each at once: at "
            "concurrency 1 the settlement then runs while the gateway waits for the next "
            "request, instead of delaying that request's admission in Redis."
        ),
    )

    speculate: bool = Field(
        default=True,
        description=(
            "With Redis: dispatch a request to a self-hosted pool while its admission is "
            "still in flight, when this replica's last answer for the key left at least "
            "speculate_headroom of every rate limit; nothing reaches the client before "
            "Redis answers, and a refusal is answered as without speculation (its "
            "upstream work is wasted). Never for catalog routes or agent-type limits."
        ),
    )
    speculate_headroom: float = Field(
        default=0.25,
        ge=0,
        le=1,
        description="Share of each requests- and tokens-per-minute limit that must be left "
        "(after this replica's speculations since the last answer) to speculate.",
    )
    speculate_max_age_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="A key's last admission answer older than this allows no speculation.",
    )
    speculate_cooldown_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="After any refusal for a key (a limit, its budget, or Redis down), no "
        "speculation for it for this long.",
    )

    budget_resync_check_s: float = Field(
        default=5.0,
        ge=0,
        le=3600,
        description=(
            "How often each replica checks that the budget counters are whole (with Redis: "
            "that the key <key_prefix>budget-synced exists); when they are not (first "
            "start, Redis lost its data, a new process without Redis), they are raised to "
            "the day's and month's spend in the usage ledger. 0 switches this off."
        ),
    )

    @field_validator("budget_resync_check_s")
    @classmethod
    def _not_too_often(cls, value: float) -> float:
        if 0 < value < 0.1:
            raise ValueError("must be 0 (off) or at least 0.1")
        return value

    @property
    def max_request_duration_ms(self) -> int:
        """``max_request_duration_s`` in whole milliseconds."""
        return int(self.max_request_duration_s * 1000)
