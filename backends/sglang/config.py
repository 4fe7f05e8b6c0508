"""Configuration schema of one SGLang pool (the ``pools:`` entries of the YAML file).

Parsed strictly (unknown keys are errors) and frozen; the gateway's config
module composes these models into the whole file's schema.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backends.retry import RetryPolicy
from backends.sglang.circuit import CircuitConfig
from gpu_catalog.specs import GpuName, KvDtype, WeightsDtype

PolicyName = Literal["round_robin", "least_load", "power_of_two", "cache_aware"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolModelConfig(_Strict):
    """The model a pool serves and how it is laid out on the GPUs."""

    name: str = Field(
        min_length=1, description="Catalog name of the model, e.g. llama-3.1-8b-instruct."
    )
    weights_dtype: WeightsDtype = "bf16"
    kv_dtype: KvDtype = "bf16"
    tp: int = Field(default=1, ge=1, le=64, description="Tensor-parallel size per worker.")
    served_name: str | None = Field(
        default=None,
        description="The model name the workers expect in requests (SGLang's --served-model-name). "
        "Defaults to `name`.",
    )
    embedding: bool = Field(
        default=False,
        description="The workers serve an embedding model (SGLang's --is-embedding): "
        "the pool answers /v1/embeddings, not chat or completions.",
    )

    @property
    def upstream_name(self) -> str:
        """The ``model`` value sent to the workers."""
        return self.served_name or self.name


#: Paths where SGLang runs a one-token generation before it answers
#: (``/health`` too, unless the worker runs with
#: ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION=false``).
GENERATING_HEALTH_PATHS = frozenset({"/health", "/health_generate"})
#: SGLang 0.5.6.post1's ``health_generate`` (``http_server.py``) submits the
#: generation, then checks for scheduler output after ``asyncio.sleep(1)``:
#: never an answer sooner than this, in seconds.
SGLANG_HEALTH_WAIT_S = 1.0


class HealthConfig(_Strict):
    """Active health checks on each worker's ``/health``, with up/down hysteresis.

    SGLang's ``/health`` answers 503 while the server starts, then runs a
    one-token generation and answers 200 once any scheduler output arrived, checked
    once a second: about 1 s on an idle or busy worker, a few seconds behind a
    long prefill, 503 after ``SGLANG_HEALTH_CHECK_TIMEOUT`` (20 s) without
    output. The default timeout (5 s) leaves room for the 1 s wait and a prefill
    batch, and still finds a stuck scheduler four times sooner than SGLang's own
    20 s; a timeout of 1 s or less would mark every worker down.
    """

    interval_s: float = Field(default=2.0, gt=0, le=300)
    timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Probe timeout; above SGLang's 1 s health wait on generating paths.",
    )
    path: str = "/health"
    unhealthy_threshold: int = Field(
        default=2, ge=1, le=100, description="Consecutive failures that mark a worker down."
    )
    healthy_threshold: int = Field(
        default=2, ge=1, le=100, description="Consecutive successes that mark a down worker up."
    )

    @model_validator(mode="after")
    def _check_timeout(self) -> HealthConfig:
        if self.path in GENERATING_HEALTH_PATHS and self.timeout_s <= SGLANG_HEALTH_WAIT_S:
            raise ValueError(
                f"health.timeout_s {self.timeout_s:g} cannot work: SGLang answers {self.path} "
                f"after a one-token generation and a {SGLANG_HEALTH_WAIT_S:g} s wait; "
                "use 5 (the default)"
            )
        return self


class TimeoutConfig(_Strict):
    """Upstream timeouts, in seconds."""

    connect_s: float = Field(default=2.0, gt=0, le=120)
    first_byte_s: float = Field(default=120.0, gt=0, le=3600)
    total_s: float = Field(default=900.0, gt=0, le=86400)


class ResponseLimits(_Strict):
    """What a worker may send back, per response; past a limit the request fails with a 502
    (``bad_upstream_response``, or ``upstream_response_too_large`` for a body) and the
    connection is closed, never reused."""

    max_head_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Bytes of one response head (status line, headers, interim 1xx heads).",
    )
    max_headers: int = Field(
        default=100, ge=8, le=10_000, description="Header lines in one response head."
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        le=4 * 1024 * 1024 * 1024,
        description="Bytes of a body read whole: a non-streamed answer or an error answer "
        "(a stream is bounded by flow control instead).",
    )


class AdmissionConfig(_Strict):
    """The pool's KV-admission queue."""

    queue_size: int = Field(default=1024, ge=0, le=1_000_000, description="Waiters at most.")
    max_wait_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest wait before 429 with Retry-After."
    )
    quantum_tokens: int = Field(
        default=8192, ge=1, description="Deficit-round-robin quantum across tenants, in tokens."
    )
    home_wait_s: float = Field(
        default=0.1,
        ge=0,
        le=60,
        description="cache_aware: how long a request with an affinity key may wait for its home "
        "worker (the one holding its session's prefix) to get KV room under the ceiling before "
        "it goes to another worker that has room now. A move costs the whole prompt in prefill "
        "on the other worker and a partial miss on the next turn back home; waiting costs at "
        "most this, and a wait that fails adds it to the moved request's latency. Worth about "
        "one request's service time on the pool's workers. 0: move at once.",
    )
    home_prefix_discount: bool = Field(
        default=False,
        description="cache_aware: on a request's home worker, reserve only the part of its "
        "prompt that the previous turn did not leave in that worker's prefix cache (plus its "
        "output), instead of the whole prompt. The cached part still occupies KV while the "
        "request runs, so this lets the gateway admit more to the home worker than fits, and "
        "the worker queues the excess itself.",
    )


class PoolConfig(_Strict):
    """One pool of SGLang workers serving the same model on the same kind of GPU."""

    gpu: GpuName
    model: PoolModelConfig
    workers: list[str] = Field(min_length=1, description="Base URLs, e.g. http://10.0.1.10:30000.")
    policy: PolicyName = "cache_aware"
    overflow_factor: float = Field(
        default=2.0,
        ge=1.0,
        le=100,
        description="cache_aware: a worker over this multiple of the mean load is skipped.",
    )
    kv_headroom: float = Field(default=0.8, gt=0, le=1)
    max_total_tokens: int | None = Field(
        default=None,
        ge=1,
        description="KV capacity per worker in tokens when workers do not report it.",
    )
    priority_scheduling: bool = Field(
        default=False,
        description="Pass the agent type's priority to workers (SGLang's `priority` field; "
        "launch them with priority scheduling enabled).",
    )
    admission: AdmissionConfig = AdmissionConfig()
    max_requests_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Requests per second this replica sends the pool at most; a burst waits "
        "up to `max_wait_s` (aiolimiter), then 429 `upstream_saturated`.",
    )
    max_wait_s: float = Field(default=2.0, ge=0, le=60)
    gpu_hour_usd: Decimal | None = Field(
        default=None,
        ge=0,
        description="What one GPU-hour of this pool costs you; with each request's GPU-second "
        "share this gives the internal cost and the margin per request.",
    )
    max_connections_per_worker: int = Field(default=1024, ge=1, le=100_000)
    health: HealthConfig = HealthConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    response_limits: ResponseLimits = Field(
        default=ResponseLimits(),
        description="What a worker may send back: head size, header count, whole-body size.",
    )
    circuit: CircuitConfig = Field(
        default=CircuitConfig(),
        description="Each worker's circuit breaker: when it stops getting traffic and how it "
        "comes back.",
    )
    retry: RetryPolicy = Field(
        default=RetryPolicy(),
        description="Retries of a failed request on another worker, before anything reached the "
        "client, within `timeouts.total_s`.",
    )

    @field_validator("workers")
    @classmethod
    def _check_workers(cls, workers: list[str]) -> list[str]:
        seen: set[str] = set()
        cleaned: list[str] = []
        for url in workers:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"worker {url!r} is not an http(s) URL with a host")
            if parts.path not in ("", "/") or parts.query or parts.fragment:
                raise ValueError(f"worker {url!r} must be a base URL without a path or query")
            try:
                parts.port  # noqa: B018 - raises ValueError on a bad port
            except ValueError as exc:
                raise ValueError(f"worker {url!r} has an invalid port") from exc
            base = f"{parts.scheme}://{parts.netloc}"
            if base in seen:
                raise ValueError(f"worker {base!r} is listed twice")
            seen.add(base)
            cleaned.append(base)
        return cleaned
