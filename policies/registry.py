"""Build runtime policies from the ``compression:`` configuration.

``build_policies(config.compression, summarizer=..., store=...)`` at start-up
gives the gateway a ``dict`` name → :class:`CompressionPolicy`; token
counters are loaded once per tokenizer name and shared.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.budget import TokenBudget
from policies.chain import CompressionPolicy
from policies.config import (
    CompressionPolicyConfig,
    DedupToolOutputsConfig,
    MaskObservationsConfig,
    RollingSummaryConfig,
    StepConfig,
    TokenBudgetConfig,
    TruncateToolOutputsConfig,
)
from policies.dedup import DedupToolOutputs
from policies.draft import Step
from policies.masking import MaskObservations
from policies.summary import RollingSummary, Summarizer
from policies.summary_store import InMemorySummaryStore, SummaryStore
from policies.tokens import TokenCounter, TokenizerName, load_counter
from policies.truncation import TruncateToolOutputs
from tollway.errors import ConfigError


def build_step(
    config: StepConfig,
    *,
    policy: str,
    summarizer: Summarizer | None = None,
    store: SummaryStore | None = None,
    path: str = "",
) -> Step:
    """The runtime step for one step configuration."""
    if isinstance(config, TruncateToolOutputsConfig):
        return TruncateToolOutputs(
            max_tokens=config.max_tokens,
            per_tool=config.per_tool,
            head_fraction=config.head_fraction,
            trigger_tokens=config.trigger_tokens,
        )
    if isinstance(config, DedupToolOutputsConfig):
        return DedupToolOutputs(
            min_tokens=config.min_tokens, keep=config.keep, trigger_tokens=config.trigger_tokens
        )
    if isinstance(config, MaskObservationsConfig):
        return MaskObservations(
            keep=config.keep,
            trigger_tokens=config.trigger_tokens,
            exclude_tools=config.exclude_tools,
            clear_tool_arguments=config.clear_tool_arguments,
            step=config.step,
            clear_at_least_tokens=config.clear_at_least_tokens,
            min_tokens=config.min_tokens,
        )
    if isinstance(config, TokenBudgetConfig):
        return TokenBudget(
            budget_tokens=config.budget_tokens,
            cut_at=config.cut_at,
            keep_first_user=config.keep_first_user,
            step_tokens=config.step_tokens,
        )
    if isinstance(config, RollingSummaryConfig):
        if summarizer is None:
            raise ConfigError("rolling_summary needs a summarizer", path=path)
        return RollingSummary(
            summarizer=summarizer,
            store=store if store is not None else InMemorySummaryStore(),
            namespace=policy,
            trigger_tokens=config.trigger_tokens,
            keep_recent_tokens=config.keep_recent_tokens,
            chunk_tokens=config.chunk_tokens,
            keep_first_user=config.keep_first_user,
            cut_at=config.cut_at,
            ttl_seconds=config.ttl_seconds,
            timeout_s=config.timeout_s,
            max_lookback=config.max_lookback,
        )
    raise ConfigError(f"unknown step {config!r}", path=path)  # pragma: no cover


def build_policy(
    name: str,
    config: CompressionPolicyConfig,
    *,
    counter: TokenCounter | None = None,
    summarizer: Summarizer | None = None,
    store: SummaryStore | None = None,
) -> CompressionPolicy:
    """One runtime policy; ``counter`` defaults to loading ``config.tokenizer``."""
    steps = [
        build_step(
            step,
            policy=name,
            summarizer=summarizer,
            store=store,
            path=f"compression.{name}.steps[{index}]",
        )
        for index, step in enumerate(config.chain())
    ]
    return CompressionPolicy(
        name,
        steps,
        counter=counter if counter is not None else load_counter(config.tokenizer),
        trigger_tokens=config.trigger_tokens,
        verify_output=config.verify_output,
    )


def build_policies(
    configs: Mapping[str, CompressionPolicyConfig],
    *,
    summarizer: Summarizer | None = None,
    store: SummaryStore | None = None,
) -> dict[str, CompressionPolicy]:
    """Every configured policy by name, sharing one counter per tokenizer."""
    counters: dict[TokenizerName, TokenCounter] = {}
    policies: dict[str, CompressionPolicy] = {}
    shared_store = store if store is not None else InMemorySummaryStore()
    for name, config in configs.items():
        if config.tokenizer not in counters:
            counters[config.tokenizer] = load_counter(config.tokenizer)
        policies[name] = build_policy(
            name,
            config,
            counter=counters[config.tokenizer],
            summarizer=summarizer,
            store=shared_store,
        )
    return policies
