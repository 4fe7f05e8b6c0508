"""The compression configuration schema: both forms, strictness, building."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from policies.budget import TokenBudget
from policies.config import CompressionPolicyConfig
from policies.masking import MaskObservations
from policies.registry import build_policies, build_policy
from policies.summary import RollingSummary
from policies.truncation import TruncateToolOutputs
from tollway.errors import ConfigError

EXAMPLE = """
compression:
  agentic:
    tokenizer: estimate
    trigger_tokens: 16000
    steps:
      - {type: truncate_tool_outputs, max_tokens: 4000, per_tool: {read_file: 8000}}
      - {type: dedup_tool_outputs}
      - {type: mask_observations, keep: 3, step: 4, clear_at_least_tokens: 2000,
         exclude_tools: [todo_list]}
      - {type: rolling_summary, trigger_tokens: 60000, keep_recent_tokens: 20000}
      - {type: token_budget, budget_tokens: 96000, cut_at: turn}
  sketch: {mask_tool_results_after: 3, budget_tokens: 24000}
"""


class NullSummarizer:
    async def summarize(self, messages: object) -> str:
        return ""


def test_example_parses_and_builds() -> None:
    raw = yaml.safe_load(EXAMPLE)["compression"]
    configs = {name: CompressionPolicyConfig.model_validate(v) for name, v in raw.items()}
    policies = build_policies(configs, summarizer=NullSummarizer())
    agentic = policies["agentic"]
    assert agentic.trigger_tokens == 16000
    assert [step.kind for step in agentic.steps] == [
        "truncate_tool_outputs",
        "dedup_tool_outputs",
        "mask_observations",
        "rolling_summary",
        "token_budget",
    ]
    assert isinstance(agentic.steps[0], TruncateToolOutputs)
    assert agentic.steps[0].limit_for("read_file") == 8000
    assert isinstance(agentic.steps[3], RollingSummary)
    sketch = policies["sketch"]
    assert isinstance(sketch.steps[0], MaskObservations) and sketch.steps[0].keep == 3
    assert isinstance(sketch.steps[1], TokenBudget) and sketch.steps[1].budget_tokens == 24000
    assert sketch.counter is agentic.counter


@pytest.mark.parametrize(
    ("raw", "where"),
    [
        ({"steps": [{"type": "mask_observations", "kepp": 3}]}, "kepp"),
        ({"steps": [{"type": "shrink"}]}, "type"),
        ({"steps": [{"type": "token_budget"}]}, "budget_tokens"),
        ({"budget_tokens": 1000, "steps": []}, "not both"),
        ({}, "needs 'steps'"),
        ({"budget_tokens": 10}, "budget_tokens"),
        ({"tokenizer": "gpt2", "budget_tokens": 1000}, "tokenizer"),
        (
            {
                "steps": [
                    {"type": "rolling_summary", "trigger_tokens": 10, "keep_recent_tokens": 20}
                ]
            },
            "keep_recent_tokens",
        ),
    ],
)
def test_strictness(raw: dict[str, object], where: str) -> None:
    with pytest.raises(ValidationError) as info:
        CompressionPolicyConfig.model_validate(raw)
    assert where in str(info.value)


def test_frozen_and_summary_needs_a_summarizer() -> None:
    config = CompressionPolicyConfig.model_validate(
        {"steps": [{"type": "rolling_summary", "trigger_tokens": 100, "keep_recent_tokens": 10}]}
    )
    with pytest.raises(ValidationError):
        config.trigger_tokens = 5  # type: ignore[misc]
    with pytest.raises(ConfigError) as info:
        build_policy("agentic", config)
    assert info.value.path == "compression.agentic.steps[0]"
