"""The ``responses:`` section of the configuration: where stored responses live, how long."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ResponsesConfig(BaseModel):
    """Stored responses of the Responses API (``store: true``, the default)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    storage: Literal["sql", "memory"] = Field(
        default="sql",
        description="`sql`: durable in the gateway's database (the ledger's), with a hot copy "
        "in Redis when `REDIS_URL` is set; replicas share them. `memory`: this process only, "
        "lost at restart (tests, a single process without a database to spare).",
    )
    retention_s: int = Field(
        default=30 * 24 * 3600,
        ge=60,
        description="A stored response (its input and output items) is kept this long after "
        "it was created, then it is gone: not readable, not continuable.",
    )
    redis_ttl_s: int = Field(
        default=3600,
        ge=1,
        description="How long the hot copy in Redis lives (at most `retention_s`); a read "
        "after it expired comes from SQL and refreshes it.",
    )
    max_stored_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="The largest stored record (a response, its input items and the items of "
        "its `previous_response_id` chain, as JSON). A request whose record would be larger "
        "is refused with 400 before it is sent upstream (continue it without "
        "`previous_response_id`, or with `store: false`).",
    )
