"""The ``idempotency:`` section of the configuration file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IdempotencyConfig(BaseModel):
    """Settings of ``Idempotency-Key`` handling.

    Example (the defaults)::

        idempotency:
          enabled: true
          key_prefix: null             # limits.key_prefix ("tollway:" by default)
          ttl_s: 86400                 # how long a finished response is replayed
          lease_s: 30                  # in-progress claim, renewed every lease_s / 3
          max_request_duration_s: 900  # renewal stops after this; the claim then expires
          wait_timeout_s: 60           # a repeat waits this long for the first, then 409
          poll_initial_s: 0.05
          poll_max_s: 0.5
          max_record_bytes: 8388608    # 8 MiB per stored response
          on_oversize: tombstone       # or release
          on_store_outage: fail_closed # or fail_open
          store_timeout_s: 1.0
          conflict_retry_after_s: 1
          max_key_length: 255
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="false: Idempotency-Key is ignored and every request runs."
    )
    key_prefix: str | None = Field(
        default=None,
        pattern=r"^[^{}\s]{0,64}$",
        description="Prefix of every Redis key; no braces (the tenant hash tag follows it). "
        "Unset: `limits.key_prefix`, so one prefix separates deployments sharing a Redis.",
    )

    @property
    def prefix(self) -> str:
        """The Redis key prefix in use: ``key_prefix``, else the default ``tollway:``.

        :func:`gateway.config.parse_config` fills an unset ``key_prefix`` with
        ``limits.key_prefix``; this default serves a config built on its own.
        """
        return "tollway:" if self.key_prefix is None else self.key_prefix

    ttl_s: float = Field(
        default=86_400.0,
        gt=0,
        le=30 * 86_400,
        description="How long a finished request's response is kept and replayed.",
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "Lifetime of an in-progress claim; renewed every lease_s / 3 while the request "
            "runs, so the claim of a replica that died expires within lease_s."
        ),
    )
    max_request_duration_s: float = Field(
        default=900.0,
        gt=0,
        le=7 * 86_400,
        description="A claim is not renewed past this age (a leaked lease cannot live forever).",
    )
    wait_timeout_s: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description=(
            "How long a repeat waits for the first request to finish before it gets 409; "
            "a client may ask for less with `Prefer: wait=<seconds>`."
        ),
    )
    poll_initial_s: float = Field(
        default=0.05, gt=0, le=60, description="First interval between checks while waiting."
    )
    poll_max_s: float = Field(
        default=0.5, gt=0, le=60, description="Longest interval between checks while waiting."
    )
    max_record_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        le=512 * 1024 * 1024,
        description="Largest response (body, or all stream chunks) that is stored for replay.",
    )
    on_oversize: Literal["tombstone", "release"] = Field(
        default="tombstone",
        description=(
            "A response over max_record_bytes. tombstone: remember that the request finished, "
            "without its body; a repeat gets 409 (code idempotency_response_not_stored) and "
            "is never run, nor billed, twice. release: forget the key, so a repeat runs (and is "
            "billed) again."
        ),
    )
    on_store_outage: Literal["fail_closed", "fail_open"] = Field(
        default="fail_closed",
        description=(
            "While the store (Redis) is unreachable, a request with a key gets 503 "
            "(fail_closed) or runs without the guarantee, logged and counted (fail_open)."
        ),
    )
    store_timeout_s: float = Field(
        default=1.0, gt=0, le=30, description="Time limit of one store call."
    )
    conflict_retry_after_s: float = Field(
        default=1.0, gt=0, le=3600, description="Retry-After of a 409 for a request in progress."
    )
    max_key_length: int = Field(
        default=255, ge=1, le=1024, description="Longest Idempotency-Key accepted (else 400)."
    )

    @model_validator(mode="after")
    def _check(self) -> IdempotencyConfig:
        if self.poll_max_s < self.poll_initial_s:
            raise ValueError("poll_max_s must be at least poll_initial_s")
        if self.max_request_duration_s < self.lease_s:
            raise ValueError("max_request_duration_s must be at least lease_s")
        return self
