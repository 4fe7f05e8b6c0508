"""Every policy over every request of the 200 tau-bench trajectories: 100% valid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from policies.config import CompressionPolicyConfig
from policies.conversation import Message
from policies.registry import build_policy
from policies.summary_store import InMemorySummaryStore
from policies.validity import is_valid, problems_of

POLICY_CONFIGS = {
    "truncate": {"steps": [{"type": "truncate_tool_outputs", "max_tokens": 200}]},
    "dedup": {"steps": [{"type": "dedup_tool_outputs"}]},
    "mask": {"steps": [{"type": "mask_observations", "keep": 1, "clear_tool_arguments": True}]},
    "mask_stepped": {"steps": [{"type": "mask_observations", "keep": 2, "step": 3}]},
    "budget": {"budget_tokens": 1500},
    "budget_turn": {"steps": [{"type": "token_budget", "budget_tokens": 1500, "cut_at": "turn"}]},
    "summary": {
        "steps": [
            {
                "type": "rolling_summary",
                "trigger_tokens": 2500,
                "keep_recent_tokens": 1000,
                "chunk_tokens": 500,
            }
        ]
    },
    "sketch": {"mask_tool_results_after": 3, "budget_tokens": 2400},
}


class CountingSummarizer:
    def __init__(self) -> None:
        self.calls = 0

    async def summarize(self, messages: Sequence[Message]) -> str:
        self.calls += 1
        return f"{len(messages)} earlier messages"


def requests(trajectories: list[list[Message]]) -> list[list[Message]]:
    """One request per assistant turn: the conversation up to that turn."""
    return [
        trajectory[:index]
        for trajectory in trajectories
        for index, message in enumerate(trajectory)
        if message["role"] == "assistant" and index > 0
    ]


@pytest.mark.parametrize("name", sorted(POLICY_CONFIGS))
async def test_every_policy_keeps_every_request_valid(
    name: str, tau_trajectories: list[list[Message]]
) -> None:
    summarizer = CountingSummarizer()
    policy = build_policy(
        name,
        CompressionPolicyConfig.model_validate(POLICY_CONFIGS[name]),
        summarizer=summarizer,
        store=InMemorySummaryStore(),
    )
    changed = 0
    all_requests = requests(tau_trajectories)
    assert len(all_requests) == 2454
    for request in all_requests:
        result = await policy.compress(request, scope="tau")
        assert result.skipped is None or result.skipped == "below_trigger", result.skipped
        assert is_valid(result.messages), (name, problems_of(result.messages))
        changed += result.changed
    assert changed > 50


def test_deterministic_across_processes(tmp_path: Path) -> None:
    script = (
        "import asyncio, json, sys\n"
        "from tests.policies.test_tau_bench import POLICY_CONFIGS, CountingSummarizer\n"
        "from tests.policies.conftest import TAU_BENCH\n"
        "from policies import CompressionPolicyConfig, build_policy\n"
        "trajs = [e['traj'] for e in json.loads((TAU_BENCH / 'gpt-4o-airline.json').read_text())]\n"
        "out = []\n"
        "for name, raw in sorted(POLICY_CONFIGS.items()):\n"
        "    p = build_policy(name, CompressionPolicyConfig.model_validate(raw),\n"
        "                     summarizer=CountingSummarizer())\n"
        "    for t in trajs[:20]:\n"
        "        out.append(asyncio.run(p.compress(t[:-1], scope='x')).messages)\n"
        "sys.stdout.write(json.dumps(out))\n"
    )
    if not (Path(__file__).resolve().parents[2] / ".." / "shared").exists():
        pytest.skip("no reference data")
    root = Path(__file__).resolve().parents[2]
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=root, env=env, capture_output=True, check=True
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert len(json.loads(outputs[0])) == 20 * len(POLICY_CONFIGS)
