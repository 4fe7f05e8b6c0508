"""Stripe settings: the meters usage is exported to, and how to reach Stripe.

In the gateway's YAML (``billing.stripe``)::

    stripe:
      api_key_env: STRIPE_API_KEY          # the secret key is read from this variable
      api_base: https://api.stripe.com     # else TOLLWAY_STRIPE_API_BASE, else Stripe's
      bucket: hour                         # hour | day: one meter event per bucket
      grace_s: 300                         # a bucket is closed this long after it ends
      meters:
        - {name: cost, event_name: tollway_cost, meter_id: mtr_123, quantity: cost_micros}
        - {name: input, event_name: tollway_input_tokens, meter_id: mtr_456,
           quantity: prompt_tokens}
        - {name: output, event_name: tollway_output_tokens, meter_id: mtr_789,
           quantity: completion_tokens}

Every meter aggregates with formula ``sum`` on Stripe's side; ``quantity`` names what
is summed into each event's whole-number value. Only what was served is billed:
``requests`` counts a tenant's billable requests (status ``ok`` or
``client_cancelled``; refused, failed and interrupted requests, and summary calls the
gateway made on a request's behalf, are not requests), the token quantities sum the
billable rows (summary calls included), and ``cost_micros`` sums what the price book
charged. Rows of streams still in flight (``provisional``) are not exported until
their final record lands.
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tollway.errors import ConfigError

DEFAULT_STRIPE_API_BASE = "https://api.stripe.com"


class Quantity(StrEnum):
    """What a meter sums (see the module docstring for which ledger rows count)."""

    COST_MICROS = "cost_micros"
    PROMPT_TOKENS = "prompt_tokens"
    CACHED_TOKENS = "cached_tokens"
    COMPLETION_TOKENS = "completion_tokens"
    REQUESTS = "requests"


class MeterSpec(BaseModel):
    """One Stripe meter Tollway reports to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=20, pattern=r"^[a-z0-9_]+$")
    event_name: str = Field(min_length=1, max_length=100)
    meter_id: str | None = None  # needed only to reconcile (event summaries)
    quantity: Quantity
    formula: Literal["sum"] = "sum"


class StripeSettings(BaseModel):
    """How usage reaches Stripe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key_env: str = "STRIPE_API_KEY"
    api_base: str | None = None
    bucket: Literal["hour", "day"] = "hour"
    grace_s: int = Field(default=300, ge=0)
    lookback_days: int = Field(default=30, ge=1, le=35)
    meters: tuple[MeterSpec, ...] = Field(min_length=1)
    max_attempts: int = Field(default=8, ge=1)
    backoff_initial_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=30.0, gt=0)
    concurrency: int = Field(default=4, ge=1)

    @property
    def bucket_us(self) -> int:
        """Bucket length in microseconds."""
        return 3_600_000_000 if self.bucket == "hour" else 86_400_000_000

    def resolved_api_base(self) -> str:
        """``api_base``, else ``TOLLWAY_STRIPE_API_BASE``, else Stripe's own address."""
        return self.api_base or os.environ.get("TOLLWAY_STRIPE_API_BASE") or DEFAULT_STRIPE_API_BASE

    def api_key(self) -> SecretStr:
        """The secret key from the environment; ConfigError when it is missing."""
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError("is not set", path=f"env.{self.api_key_env}")
        return SecretStr(value)

    def meter(self, name: str) -> MeterSpec:
        """The meter called ``name``; ConfigError when there is none."""
        for meter in self.meters:
            if meter.name == name:
                return meter
        raise ConfigError(f"no meter named {name!r}", path="billing.stripe.meters")
