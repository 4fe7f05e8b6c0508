"""Token counting: the offline exact encodings, the estimate's error, message overheads."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from policies.conversation import Message
from policies.encodings import shipped_bpe_file
from policies.tokens import (
    MESSAGE_OVERHEAD,
    REPLY_PRIMING,
    TOOL_CALL_OVERHEAD,
    EstimateCounter,
    TiktokenCounter,
)
from tests.policies.conftest import tool_block
from tollway.token_estimate import estimate_json_tokens


def test_shipped_file_is_used(cl100k: TiktokenCounter) -> None:
    assert shipped_bpe_file("cl100k_base").exists()
    assert cl100k.count_text("hello world") == 2
    assert cl100k.count_text("<|endoftext|>") > 1  # special tokens are plain text here


def test_message_counts_include_overheads_and_tool_calls(cl100k: TiktokenCounter) -> None:
    block = tool_block([("call_1", "get_user", "ok")])
    call = block[0]["tool_calls"][0]
    expected = (
        MESSAGE_OVERHEAD
        + TOOL_CALL_OVERHEAD
        + cl100k.count_text("get_user")
        + cl100k.count_text(call["function"]["arguments"])
    )
    assert cl100k.count_message(block[0]) == expected
    named: Message = {"role": "user", "name": "ann", "content": "hi"}
    assert cl100k.count_message(named) == MESSAGE_OVERHEAD + 1 + 1 + 1
    assert cl100k.count_messages([named]) == cl100k.count_message(named) + REPLY_PRIMING


def test_cache_returns_the_same_counts(cl100k: TiktokenCounter) -> None:
    text = "some repeated tool output " * 40
    assert cl100k.count_text(text) == cl100k.count_text(text) == len(cl100k._encoding.encode(text))


def test_estimate_is_calibrated_on_tau_bench(
    estimate: EstimateCounter, cl100k: TiktokenCounter, tau_trajectories: list[list[Message]]
) -> None:
    exact = approx = 0
    errors: list[float] = []
    for trajectory in tau_trajectories[:60]:
        for message in trajectory:
            content = message.get("content")
            if isinstance(content, str) and content:
                truth = cl100k.count_text(content)
                guess = estimate.count_text(content)
                exact += truth
                approx += guess
                if truth >= 50:
                    errors.append(abs(guess - truth) / truth)
    errors.sort()
    assert abs(approx - exact) / exact < 0.03
    assert errors[len(errors) // 2] < 0.08
    assert errors[int(len(errors) * 0.9)] < 0.2


def test_the_json_bytes_estimate_overestimates_as_documented(
    cl100k: TiktokenCounter, tau_trajectories: list[list[Message]]
) -> None:
    """:mod:`tollway.token_estimate`'s docstring: 12% over ``cl100k_base`` in total."""
    estimated = exact = 0
    ratios: list[float] = []
    for messages in tau_trajectories:
        body = orjson.dumps({"model": "m", "messages": messages})
        tokens = cl100k.count_messages(messages)
        estimated += estimate_json_tokens(body)
        exact += tokens
        ratios.append(estimate_json_tokens(body) / tokens)
    ratios.sort()
    assert 1.10 < estimated / exact < 1.14
    assert ratios[0] > 0.9  # under by 7% at most
    assert ratios[len(ratios) // 10] > 1.0  # over for nine bodies in ten


def test_estimate_edge_cases(estimate: EstimateCounter) -> None:
    assert estimate.count_text("") == 0
    assert estimate.count_text("a") == 1
    assert estimate.count_text("日本語のテキスト" * 10) > estimate.count_text("abcdefgh" * 10)


@pytest.mark.parametrize("offload_chars", [10, 10**9])
def test_async_counting_matches(offload_chars: int) -> None:
    counter = EstimateCounter(offload_chars=offload_chars)
    messages: list[Message] = [{"role": "user", "content": "x " * 100}] * 3
    assert asyncio.run(counter.count_each_async(messages)) == counter.count_each(messages)
