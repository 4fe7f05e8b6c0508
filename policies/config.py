"""The ``compression:`` section of the configuration file: named policy chains.

Each entry names a policy; an agent type (or an API key) selects one by name.
A policy is a chain of steps applied in order, written in full::

    compression:
      agentic:
        tokenizer: estimate          # or cl100k_base, o200k_base (exact, offline)
        trigger_tokens: 16000        # below this the request is left byte-identical
        steps:
          - {type: truncate_tool_outputs, max_tokens: 4000, per_tool: {read_file: 8000}}
          - {type: dedup_tool_outputs}
          - {type: mask_observations, keep: 3, step: 4, clear_at_least_tokens: 2000}
          - {type: token_budget, budget_tokens: 24000}

or, for the common case, in the short form of the design sketch, which
expands to ``truncate_tool_outputs`` → ``dedup_tool_outputs`` →
``mask_observations`` → ``token_budget`` (each only when its key is given)::

    compression:
      agentic: {mask_tool_results_after: 3, budget_tokens: 24000}

Parsing is strict (unknown keys are errors) and the models are frozen.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from policies.tokens import TokenizerName


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TruncateToolOutputsConfig(_Strict):
    """Keep the head and tail of tool results over a token limit."""

    type: Literal["truncate_tool_outputs"]
    max_tokens: int = Field(default=2000, ge=64, description="Limit for every tool's results.")
    per_tool: dict[str, Annotated[int, Field(ge=64)]] = Field(
        default_factory=dict, description="Limits for named tools, overriding `max_tokens`."
    )
    head_fraction: float = Field(default=0.6, gt=0, lt=1, description="Share kept from the head.")
    trigger_tokens: int = Field(default=0, ge=0, description="Act only above this many tokens.")


class DedupToolOutputsConfig(_Strict):
    """Replace repeated identical results of the same tool with a reference."""

    type: Literal["dedup_tool_outputs"]
    keep: Literal["first", "last"] = "first"
    min_tokens: int = Field(default=32, ge=16)
    trigger_tokens: int = Field(default=0, ge=0)


class MaskObservationsConfig(_Strict):
    """Mask all but the last ``keep`` tool results, advancing in steps."""

    type: Literal["mask_observations"]
    keep: int = Field(default=3, ge=0, description="Most recent tool results left as they are.")
    trigger_tokens: int = Field(default=0, ge=0, description="Mask only above this many tokens.")
    exclude_tools: list[str] = Field(default_factory=list, description="Never masked.")
    clear_tool_arguments: bool = Field(
        default=False, description="Also replace the masked calls' arguments with `{}`."
    )
    step: int = Field(default=1, ge=1, description="The mask advances this many results at once.")
    clear_at_least_tokens: int = Field(
        default=0, ge=0, description="...and only when that clears at least this many tokens."
    )
    min_tokens: int = Field(default=32, ge=16, description="Smaller results are never masked.")


class TokenBudgetConfig(_Strict):
    """Drop the oldest whole turns to fit a budget."""

    type: Literal["token_budget"]
    budget_tokens: int = Field(ge=64)
    cut_at: Literal["user", "turn"] = Field(
        default="user", description="Cut before user messages only, or also before assistant ones."
    )
    keep_first_user: bool = True
    step_tokens: int = Field(default=0, ge=0, description="Cut points at least this far apart.")


class RollingSummaryConfig(_Strict):
    """Replace old turns with a stored, reused summary made by the summarizer model."""

    type: Literal["rolling_summary"]
    trigger_tokens: int = Field(ge=1)
    keep_recent_tokens: int = Field(default=8000, ge=0)
    chunk_tokens: int = Field(default=4000, ge=1, description="The summary advances in chunks.")
    keep_first_user: bool = True
    cut_at: Literal["user", "turn"] = "user"
    ttl_seconds: int = Field(default=86_400, ge=60, le=30 * 86_400)
    timeout_s: float = Field(default=30.0, gt=0, le=600)
    max_lookback: int = Field(default=8, ge=0, le=64)

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.keep_recent_tokens >= self.trigger_tokens:
            raise ValueError("keep_recent_tokens must be below trigger_tokens")
        return self


StepConfig = Annotated[
    TruncateToolOutputsConfig
    | DedupToolOutputsConfig
    | MaskObservationsConfig
    | TokenBudgetConfig
    | RollingSummaryConfig,
    Field(discriminator="type"),
]


class CompressionPolicyConfig(_Strict):
    """One named compression policy: a tokenizer, a trigger and a chain of steps.

    Give either ``steps`` or the short-form keys (``truncate_tool_outputs_tokens``,
    ``dedup_tool_outputs``, ``mask_tool_results_after``, ``budget_tokens``), not both.
    """

    tokenizer: TokenizerName = Field(
        default="estimate", description="`estimate` (fast) or an exact offline BPE."
    )
    trigger_tokens: int = Field(
        default=0, ge=0, description="At or below this many tokens the request is untouched."
    )
    steps: list[StepConfig] | None = None
    truncate_tool_outputs_tokens: int | None = Field(default=None, ge=64)
    dedup_tool_outputs: bool = False
    mask_tool_results_after: int | None = Field(
        default=None, ge=0, description="Short form: mask all but this many recent results."
    )
    budget_tokens: int | None = Field(default=None, ge=64)
    verify_output: bool = Field(
        default=True, description="Check each output's validity; forward the input if broken."
    )

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        short = (
            self.truncate_tool_outputs_tokens is not None
            or self.dedup_tool_outputs
            or self.mask_tool_results_after is not None
            or self.budget_tokens is not None
        )
        if self.steps is not None and short:
            raise ValueError("give either 'steps' or the short-form keys, not both")
        if self.steps is None and not short:
            raise ValueError("a policy needs 'steps' (may be empty) or a short-form key")
        return self

    def chain(self) -> list[StepConfig]:
        """The steps, the short form expanded."""
        if self.steps is not None:
            return list(self.steps)
        chain: list[StepConfig] = []
        if self.truncate_tool_outputs_tokens is not None:
            chain.append(
                TruncateToolOutputsConfig(
                    type="truncate_tool_outputs", max_tokens=self.truncate_tool_outputs_tokens
                )
            )
        if self.dedup_tool_outputs:
            chain.append(DedupToolOutputsConfig(type="dedup_tool_outputs"))
        if self.mask_tool_results_after is not None:
            chain.append(
                MaskObservationsConfig(type="mask_observations", keep=self.mask_tool_results_after)
            )
        if self.budget_tokens is not None:
            chain.append(TokenBudgetConfig(type="token_budget", budget_tokens=self.budget_tokens))
        return chain
