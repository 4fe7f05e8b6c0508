"""The gateway's configuration file: schema, loading, and validation.

One YAML file, parsed strictly (unknown keys are errors) into frozen pydantic
models, then cross-checked (every route names a pool or catalog entry that
exists: :mod:`gateway.configrefs`). A bad file raises
:class:`tollway.errors.ConfigError` whose ``path`` is the YAML path of the bad
key (``pools.h100-small.workers[1]``) and whose message says why. Environment
overrides live in :mod:`gateway.settings`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from backends.catalog import CatalogEntryConfig
from backends.sglang.config import PoolConfig
from gateway.configrefs import check_references, split_route
from gateway.idempotency.config import IdempotencyConfig
from gateway.limits.config import LimitsConfig
from gateway.logconfig import LoggingConfig
from gateway.responsesapi.config import ResponsesConfig
from gateway.tracing import TracingConfig
from policies.config import CompressionPolicyConfig
from tollway.errors import ConfigError

_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    """HTTP-level limits of the gateway itself."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)
    max_request_id_length: int = Field(default=128, ge=16, le=1024)
    access_log: bool = Field(
        default=True, description="One JSON line per request on the `tollway.access` logger."
    )
    max_messages: int = Field(default=4096, ge=1, le=1_000_000)
    max_json_depth: int = Field(default=64, ge=4, le=1000, description="Nesting of the body.")
    max_upstream_event_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description="Largest SSE event an upstream may send; a larger one fails the stream (502).",
    )
    max_header_bytes: int = Field(
        default=32 * 1024, ge=1024, le=1024 * 1024, description="Request line plus headers."
    )
    max_headers: int = Field(default=100, ge=8, le=10_000)
    header_read_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="From connect (or the first byte) to headers."
    )
    body_read_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="From the end of the headers to the body's end."
    )
    client_write_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Longest time the gateway may be unable to write to a client that does "
        "not read (its write buffer full); then the connection closes.",
    )
    keep_alive_timeout_s: int = Field(default=5, ge=1, le=3600)
    drain_timeout_s: int = Field(
        default=30, ge=1, le=3600, description="After SIGTERM: longest wait for in-flight work."
    )
    shutdown_delay_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="After SIGTERM: keep accepting (readiness 503) this long, then drain.",
    )


class ApiKeyConfig(_Strict):
    """A statically configured API key; only its SHA-256 digest is stored."""

    tenant: str = Field(min_length=1, max_length=128)
    name: str = Field(default="default", min_length=1, max_length=128)
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")


class AuthConfig(_Strict):
    """How ``/v1`` callers authenticate."""

    mode: Literal["keys", "none"] = Field(
        default="keys", description="`none` switches authentication off (benchmarks, local use)."
    )
    keys: list[ApiKeyConfig] = Field(default_factory=list)


class RequestTimeouts(_Strict):
    """Per-request upstream timeouts that override the pool's (connect stays per pool)."""

    first_byte_s: float | None = Field(default=None, gt=0, le=3600)
    total_s: float | None = Field(default=None, gt=0, le=86400)


class ModelConfig(_Strict):
    """A public model name and where it goes."""

    route: str = Field(description="`pool:<name>` or `catalog:<name>`.")
    fallbacks: list[str] = Field(default_factory=list)
    owned_by: str | None = Field(
        default=None, description="Shown in /v1/models (default: the provider, or `tollway`)."
    )
    timeouts: RequestTimeouts | None = None

    @field_validator("route")
    @classmethod
    def _check_route(cls, value: str) -> str:
        split_route(value)
        return value

    @field_validator("fallbacks")
    @classmethod
    def _check_fallbacks(cls, values: list[str]) -> list[str]:
        for value in values:
            split_route(value)
        return values


class AgentLimitsConfig(_Strict):
    """Rate limits of one agent type, per tenant."""

    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    max_concurrent: int | None = Field(default=None, ge=1)


class AgentTypeConfig(_Strict):
    """An agent type's profile: where its requests go and how they are treated."""

    model: str = Field(description="The public model (under `models`) this agent type uses.")
    fallbacks: list[str] = Field(
        default_factory=list, description="Routes tried when the model's routes fail."
    )
    priority: int = Field(default=0, ge=0, le=1000, description="Higher is admitted first.")
    compression: str | None = Field(default=None, description="A policy under `compression`.")
    default_max_tokens: int | None = Field(
        default=None, ge=1, description="Used when a request sets no max_tokens."
    )
    max_tokens: int | None = Field(
        default=None, ge=1, description="Requests asking for more are clamped to this."
    )
    timeouts: RequestTimeouts | None = Field(
        default=None, description="Override the model's and the pool's timeouts."
    )
    limits: AgentLimitsConfig | None = Field(
        default=None,
        description="Per tenant: what all of a tenant's requests as this agent type may use, "
        "exact across replicas.",
    )
    serve_unknown_models: bool = Field(
        default=False,
        description="A request that names no agent type, gets this one as its default (the "
        "key's or routing.default_agent_type) and sends a `model` that is not a public model "
        "is served with this profile's model; off: 404 model_not_found.",
    )

    @field_validator("fallbacks")
    @classmethod
    def _check_fallbacks(cls, values: list[str]) -> list[str]:
        for value in values:
            split_route(value)
        return values


class RoutingConfig(_Strict):
    """How requests find their agent type."""

    default_agent_type: str | None = Field(
        default=None, description="Agent type of requests that name none (after the key's)."
    )
    unknown_agent_type: Literal["reject", "default"] = Field(
        default="reject",
        description="`reject`: 400 naming it; `default`: use `default_agent_type` instead.",
    )


class MeteringConfig(_Strict):
    """How usage records are made durable."""

    durable_before_response: bool = Field(
        default=True,
        description="Await the usage buffer before the client sees a response finish, so "
        "every completed request is billed even if the process dies right after.",
    )
    journal: bool = Field(
        default=False,
        description="Write each usage record to a local journal file (one write, no fsync) "
        "before the response finishes and move it to the usage buffer right after, "
        "instead of awaiting the buffer: survives the process being killed, not the host "
        "crashing; takes precedence over durable_before_response.",
    )
    writer: Literal["inline", "external"] = Field(
        default="inline",
        description="`inline`: this gateway moves buffered records into SQL (one leader among "
        "replicas). `external`: a separate `tollway billing worker` does, and serving "
        "processes spend no CPU on SQL.",
    )
    claim_idle_ms: int = Field(
        default=30_000,
        ge=100,
        description="Usage records a dead replica's ledger writer took but never wrote are "
        "taken over after this long.",
    )
    writer_linger_ms: int = Field(
        default=100,
        ge=0,
        le=10_000,
        description="After moving records, the inline ledger writer waits this long before "
        "its next round, so records reach SQL in batches (one transaction per round) "
        "instead of one commit per request; the ledger lags by about this much.",
    )
    provisional_grace_s: float = Field(
        default=900.0,
        gt=0,
        description="A stream's provisional usage record (journaled at its first byte) that "
        "no final record superseded this long after the request started is settled as "
        "`interrupted` by the inline ledger writer: the gateway died mid-stream. Longer "
        "than the longest stream; a final record arriving later still replaces it.",
    )


class MetricsConfig(_Strict):
    """What ``/metrics`` exposes beyond the always-on series."""

    tenant_labels: bool = Field(
        default=False,
        description="Add per-tenant counters (requests by status, cost). Leave off when "
        "tenants are many: every tenant is a series.",
    )
    require_admin_token: bool = Field(
        default=False,
        description="Serve `/metrics` only with `Authorization: Bearer <admin token>` (403 "
        "when no admin token is configured). Off by default: scrapers reach it without one, "
        "so keep the gateway's port off untrusted networks or switch this on.",
    )


class TollwayConfig(_Strict):
    """The whole configuration file."""

    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    admin_token: SecretStr | None = None
    pools: dict[str, PoolConfig] = Field(default_factory=dict)
    catalog: dict[str, CatalogEntryConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    agent_types: dict[str, AgentTypeConfig] = Field(default_factory=dict)
    routing: RoutingConfig = RoutingConfig()
    compression: dict[str, CompressionPolicyConfig] = Field(default_factory=dict)
    limits: LimitsConfig = LimitsConfig()
    idempotency: IdempotencyConfig = IdempotencyConfig()
    responses: ResponsesConfig = ResponsesConfig()
    pricing: str | None = Field(default=None, description="Path of the price book (YAML).")
    metering: MeteringConfig = MeteringConfig()
    tracing: TracingConfig = TracingConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("pools", "catalog", "models", "agent_types", "compression")
    @classmethod
    def _check_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        import re

        for name in value:
            if not re.match(_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a valid name")
        return value


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(data: Any) -> TollwayConfig:
    """Validate already-parsed YAML data into a frozen :class:`TollwayConfig`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the configuration must be a mapping at the top level")
    try:
        config = TollwayConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = _format_loc(tuple(first["loc"]))
        msg = first["msg"]
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        raise ConfigError(msg, path=loc) from None
    check_references(config)
    if config.idempotency.key_prefix is None:  # one prefix for every Redis key by default
        shared = config.idempotency.model_copy(update={"key_prefix": config.limits.key_prefix})
        config = config.model_copy(update={"idempotency": shared})
    return config


def load_config(path: str | Path) -> TollwayConfig:
    """Read and validate a YAML configuration file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {str(file)!r}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_config(data)
