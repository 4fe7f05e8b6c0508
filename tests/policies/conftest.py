"""Fixtures for the compression-policy tests: counters, builders, reference data."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from policies.conversation import Message
from policies.tokens import EstimateCounter, TiktokenCounter, load_counter

TAU_BENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "tau-bench"


@pytest.fixture(scope="session")
def estimate() -> EstimateCounter:
    return EstimateCounter()


@pytest.fixture(scope="session")
def cl100k() -> TiktokenCounter:
    counter = load_counter("cl100k_base")
    assert isinstance(counter, TiktokenCounter)
    return counter


@pytest.fixture(scope="session")
def tau_trajectories() -> list[list[Message]]:
    path = TAU_BENCH / "gpt-4o-airline.json"
    if not path.exists():
        pytest.skip("the tau-bench reference data (../shared/datasets/tau-bench/) is not here")
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return [entry["traj"] for entry in data]


def tool_block(
    calls: Sequence[tuple[str, str, str]], *, content: str | None = None
) -> list[Message]:
    """An assistant message calling ``(id, name, result)`` tools, then their results."""
    assistant: Message = {
        "role": "assistant",
        "content": content,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": json.dumps({"q": call_id})},
            }
            for call_id, name, _ in calls
        ],
    }
    results: list[Message] = [
        {"role": "tool", "tool_call_id": call_id, "name": name, "content": result}
        for call_id, name, result in calls
    ]
    return [assistant, *results]


def system(text: str = "You are a helpful agent.") -> Message:
    return {"role": "system", "content": text}


def user(text: str) -> Message:
    return {"role": "user", "content": text}


def assistant(text: str) -> Message:
    return {"role": "assistant", "content": text}


def long_text(words: int, seed: str = "w") -> str:
    """A deterministic text of about ``words`` words (about ``words`` tokens)."""
    return " ".join(f"{seed}{i % 97}" for i in range(words))


async def run_steps(
    messages: list[Message], *steps: Any, trigger_tokens: int = 0, scope: str | None = None
) -> Any:
    """Compress ``messages`` with a policy made of ``steps`` (estimate counter)."""
    from policies.chain import CompressionPolicy

    counter = EstimateCounter()
    policy = CompressionPolicy("test", steps, counter=counter, trigger_tokens=trigger_tokens)
    return await policy.compress(messages, scope=scope)
