"""The planner's two input files, parsed strictly (unknown keys are errors, models frozen).

A **workload** file describes agent traffic; a **pools** file describes the GPU
pools that serve it and what a GPU-hour costs. Both are YAML. A bad file raises
:class:`tollway.errors.ConfigError` whose ``path`` is the dotted YAML path of the
bad key (``agents.coder.turns.mean``).

Every quantity that varies between sessions or turns is a *distribution*: a
plain number (constant) or a mapping with ``dist`` set to ``constant``
(``value``), ``exponential`` (``mean``), ``uniform`` (``low``, ``high``) or
``lognormal`` (``mean``, ``cv`` = standard deviation / mean), each with optional
``min`` / ``max`` clamps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backends.sglang.config import PolicyName
from gpu_catalog.specs import GpuName, KvDtype, WeightsDtype, get_model
from tollway.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Clamped(_Strict):
    min: float | None = Field(default=None, ge=0, description="Lower clamp of every draw.")
    max: float | None = Field(default=None, gt=0, description="Upper clamp of every draw.")

    @model_validator(mode="after")
    def _ordered(self) -> _Clamped:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self


class Constant(_Clamped):
    """Always ``value``."""

    dist: Literal["constant"]
    value: float = Field(ge=0)


class Exponential(_Clamped):
    """Exponential with the given ``mean`` (memoryless waits, Poisson gaps)."""

    dist: Literal["exponential"]
    mean: float = Field(gt=0)


class Uniform(_Clamped):
    """Uniform on ``[low, high]``."""

    dist: Literal["uniform"]
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    @model_validator(mode="after")
    def _bounds(self) -> Uniform:
        if self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class LogNormal(_Clamped):
    """Log-normal with the given ``mean`` and coefficient of variation ``cv``."""

    dist: Literal["lognormal"]
    mean: float = Field(gt=0)
    cv: float = Field(default=1.0, ge=0)


Dist = Annotated[Constant | Exponential | Uniform | LogNormal, Field(discriminator="dist")]
#: A distribution or a plain non-negative number (a constant).
Quantity = Annotated[float, Field(ge=0)] | Dist


class Compression(_Strict):
    """How the agent's context-compression policy shrinks the conversation.

    * ``max_context_tokens``: keep the system prompt and the newest turns that
      fit; older turns are dropped (the prefix after the system prompt changes,
      so the cache misses from there).
    * ``mask_tool_results_after``: tool results older than this many turns are
      replaced by a stub of ``mask_ratio`` × their length (the prefix changes at
      the first newly masked result).
    """

    max_context_tokens: int | None = Field(default=None, ge=1)
    mask_tool_results_after: int | None = Field(default=None, ge=1)
    mask_ratio: float = Field(default=0.1, ge=0, le=1)


class AgentType(_Strict):
    """One kind of agent: how its sessions arrive, how long they run, what each turn costs."""

    pool: str = Field(min_length=1, description="Name of the pool (pools file) that serves it.")
    sessions_per_minute: float = Field(gt=0, description="Mean session arrival rate (Poisson).")
    priority: int = Field(default=0, description="Higher is admitted first when a pool is full.")
    max_sessions: int | None = Field(
        default=None, ge=1, description="Stop arrivals after this many sessions."
    )
    turns: Quantity = Field(description="Model calls per session (rounded, at least 1).")
    system_prompt_tokens: int = Field(
        default=0, ge=0, description="Shared by every session of this agent type."
    )
    first_turn_tokens: Quantity = Field(description="The task message of the first turn.")
    turn_input_tokens: Quantity = Field(
        description="Tokens appended before each later turn (tool results, user messages)."
    )
    output_tokens: Quantity = Field(description="Tokens generated per turn.")
    tool_wait_s: Quantity = Field(default=0.0, description="Seconds between a turn and the next.")
    compression: Compression = Compression()


class Targets(_Strict):
    """Latency objectives the search must meet (seconds)."""

    ttft_p99_s: float = Field(gt=0)
    itl_p99_s: float = Field(gt=0)
    min_completed_fraction: float = Field(default=0.99, ge=0, le=1)


class Workload(_Strict):
    """The whole workload file."""

    seed: int = 0
    duration_s: float = Field(gt=0, description="Sessions arrive during this window.")
    drain_s: float = Field(
        default=3600, ge=0, description="How long after the window in-flight sessions may run."
    )
    targets: Targets | None = None
    agents: dict[str, AgentType] = Field(min_length=1)


class PoolModel(_Strict):
    """The model a pool serves and how it is laid out on its GPUs."""

    name: str = Field(min_length=1)
    weights_dtype: WeightsDtype = "bf16"
    kv_dtype: KvDtype = "bf16"
    tp: int = Field(default=1, ge=1, le=64)

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        try:
            return get_model(value).name
        except KeyError as exc:
            raise ValueError(str(exc.args[0])) from None


class PoolSearch(_Strict):
    """What ``--search`` may vary for this pool."""

    gpus: list[GpuName] | None = Field(default=None, min_length=1)
    max_workers: int = Field(default=16, ge=1, le=1024)


class Pool(_Strict):
    """One pool of identical SGLang workers (each a TP group of ``model.tp`` GPUs)."""

    gpu: GpuName
    model: PoolModel
    workers: int = Field(default=1, ge=1, le=4096)
    policy: PolicyName = "cache_aware"
    overflow_factor: float = Field(default=1.25, ge=1)
    kv_headroom: float = Field(default=0.8, gt=0, le=1)
    queue_size: int = Field(default=1024, ge=0)
    max_queue_wait_s: float = Field(default=60.0, gt=0)
    mem_fraction_static: float | None = Field(default=None, gt=0, lt=1)
    max_running_requests: int | None = Field(default=None, ge=1)
    max_prefill_tokens: int = Field(default=16384, ge=1)
    search: PoolSearch = PoolSearch()


class PoolsFile(_Strict):
    """The whole pools file: pools and GPU-hour prices (USD)."""

    pools: dict[str, Pool] = Field(min_length=1)
    prices: dict[GpuName, float] = Field(default_factory=dict)

    @field_validator("prices")
    @classmethod
    def _positive(cls, value: dict[str, float]) -> dict[str, float]:
        for gpu, price in value.items():
            if price < 0:
                raise ValueError(f"price of {gpu} must be >= 0")
        return value

    def price(self, gpu: str) -> float:
        """USD per GPU-hour of ``gpu`` (0 when not configured)."""
        return next((float(price) for name, price in self.prices.items() if name == gpu), 0.0)


_M = TypeVar("_M", bound=BaseModel)


_BRANCH_TAGS = frozenset({"constrained-float", "float", "int", "constrained-int"})
_DIST_TAGS = frozenset({"constant", "exponential", "uniform", "lognormal"})


def _is_branch(part: str, previous: str) -> bool:
    """Whether ``part`` names a union branch pydantic inserted, not a YAML key."""
    if "[" in part or part in _BRANCH_TAGS:
        return True
    return part in _DIST_TAGS and previous.startswith("tagged-union")


def _wrong_branch(error: Any) -> bool:
    """An error from the union branch the input was obviously not meant for."""
    parts = [str(p) for p in error["loc"]]
    given_mapping = isinstance(error.get("input"), dict)
    if set(parts) & _BRANCH_TAGS:
        return given_mapping
    return any(p.startswith("tagged-union") for p in parts) and not given_mapping


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("agents", "coder", "turns")`` → ``agents.coder.turns``; list items as ``[i]``."""
    out = ""
    previous = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _is_branch(part, previous):
            out += f".{part}" if out else part
        previous = str(part)
    return out


def _validate(model: type[_M], data: Any, what: str) -> _M:
    if not isinstance(data, dict):
        raise ConfigError(f"the {what} file must be a mapping at the top level")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        # A quantity is a number or a distribution; when a mapping was given, the
        # distribution's error explains, not "should be a number".
        specific = [e for e in errors if not _wrong_branch(e)] or errors
        first = max(specific, key=lambda e: len(e["loc"]))
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(msg, path=format_loc(tuple(first["loc"]))) from None


def _read_yaml(path: str | Path) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path} is not valid YAML{where}") from None


def parse_workload(data: Any) -> Workload:
    """Validate already-parsed YAML into a :class:`Workload`."""
    return _validate(Workload, data, "workload")


def parse_pools(data: Any) -> PoolsFile:
    """Validate already-parsed YAML into a :class:`PoolsFile`."""
    return _validate(PoolsFile, data, "pools")


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload file."""
    return parse_workload(_read_yaml(path))


def load_pools(path: str | Path) -> PoolsFile:
    """Read and validate a pools file."""
    return parse_pools(_read_yaml(path))


def check_references(workload: Workload, pools: PoolsFile) -> None:
    """Every agent type must name a defined pool."""
    for name, agent in workload.agents.items():
        if agent.pool not in pools.pools:
            raise ConfigError(
                f"pool {agent.pool!r} is not defined in the pools file "
                f"(defined: {', '.join(sorted(pools.pools))})",
                path=f"agents.{name}.pool",
            )
