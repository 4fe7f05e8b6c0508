"""Properties of every policy on generated conversations.

Valid output, byte-identical no-op below the trigger, idempotence,
determinism, and masking leaves the recent results and every user, system
and developer message as they were.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies.budget import TokenBudget
from policies.chain import CompressionPolicy
from policies.conversation import Message
from policies.dedup import DedupToolOutputs
from policies.draft import Step
from policies.masking import MaskObservations
from policies.summary import RollingSummary
from policies.summary_store import InMemorySummaryStore
from policies.tokens import EstimateCounter
from policies.truncation import TruncateToolOutputs
from policies.validity import is_valid, problems_of
from tests.policies.strategies import conversations

COUNTER = EstimateCounter()


class EchoSummarizer:
    async def summarize(self, messages: Sequence[Message]) -> str:
        return f"{len(messages)} messages about {messages[0].get('role')}"


def summary_step() -> Step:
    return RollingSummary(
        summarizer=EchoSummarizer(),
        store=InMemorySummaryStore(),
        namespace="p",
        trigger_tokens=400,
        keep_recent_tokens=200,
        chunk_tokens=150,
        cut_at="turn",
    )


POLICIES: dict[str, Callable[[], list[Step]]] = {
    "truncate": lambda: [TruncateToolOutputs(max_tokens=80, per_tool={"run": 200})],
    "dedup": lambda: [DedupToolOutputs(min_tokens=16)],
    "mask": lambda: [MaskObservations(keep=2, min_tokens=16, clear_tool_arguments=True)],
    "mask_stepped": lambda: [
        MaskObservations(keep=1, step=3, clear_at_least_tokens=100, exclude_tools=["run"])
    ],
    "budget_user": lambda: [TokenBudget(budget_tokens=300)],
    "budget_turn": lambda: [TokenBudget(budget_tokens=300, cut_at="turn", step_tokens=100)],
    "summary": lambda: [summary_step()],
    "chain": lambda: [
        TruncateToolOutputs(max_tokens=200),
        DedupToolOutputs(),
        MaskObservations(keep=2, step=2),
        TokenBudget(budget_tokens=600, cut_at="turn"),
    ],
}

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def compress(steps: list[Step], messages: list[Message], trigger: int = 0) -> list[Message]:
    policy = CompressionPolicy("p", steps, counter=COUNTER, trigger_tokens=trigger)
    return asyncio.run(policy.compress(messages, scope="s")).messages


@SETTINGS
@given(conversation=conversations(), name=st.sampled_from(sorted(POLICIES)))
def test_valid_idempotent_deterministic(conversation: list[Message], name: str) -> None:
    assert is_valid(conversation), problems_of(conversation)
    pristine = copy.deepcopy(conversation)
    steps = POLICIES[name]()
    out = compress(steps, conversation)
    assert conversation == pristine  # the input is never mutated
    assert is_valid(out), problems_of(out)
    assert compress(steps, out) == out
    assert orjson.dumps(compress(POLICIES[name](), pristine)) == orjson.dumps(out)


@SETTINGS
@given(conversation=conversations(), name=st.sampled_from(sorted(POLICIES)))
def test_no_op_below_trigger(conversation: list[Message], name: str) -> None:
    encoded = orjson.dumps(conversation)
    total = COUNTER.count_messages(conversation)
    out = compress(POLICIES[name](), conversation, trigger=total)
    assert out is conversation
    assert orjson.dumps(out) == encoded


@SETTINGS
@given(conversation=conversations(), keep=st.integers(0, 3), step=st.integers(1, 3))
def test_masking_keeps_recent_results_and_instructions(
    conversation: list[Message], keep: int, step: int
) -> None:
    out = compress([MaskObservations(keep=keep, step=step, min_tokens=16)], conversation)
    assert len(out) == len(conversation)
    tool_positions = [i for i, m in enumerate(conversation) if m["role"] == "tool"]
    for index in tool_positions[len(tool_positions) - keep :] if keep else []:
        assert orjson.dumps(out[index]) == orjson.dumps(conversation[index])
    for before, after in zip(conversation, out, strict=True):
        if before["role"] in ("user", "system", "developer"):
            assert after is before
