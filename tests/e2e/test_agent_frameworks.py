"""Agent frameworks from PyPI, unchanged, against a real gateway process in front of an
emulated worker: the OpenAI Agents SDK (its default model, the Responses API, with a
function tool), LangChain's ``ChatOpenAI(use_responses_api=True)`` and
``ChatAnthropic`` (``/v1/messages``). Each completes its turn, and every request it
made is in the ledger once, with the token counts the framework itself reports.

No tracing leaves the process: the Agents SDK's tracing is disabled and LangSmith's
variables are removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents import (
    Agent,
    Runner,
    ToolCallItem,
    ToolCallOutputItem,
    function_tool,
    set_default_openai_client,
    set_tracing_disabled,
)
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI

from tests.e2e.processes import API_KEY, emulator, gateway, pool
from tests.e2e.test_claude_code import MODEL, PRICES
from tests.e2e.test_stream_cancel import _ledger_rows
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """A gateway process (its SQLite ledger in the yielded folder) before an emulator."""
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    prices = tmp_path / "pricing.yaml"
    prices.write_text(PRICES)
    with (
        emulator("--instant") as (worker, _),
        gateway(
            tmp_path,
            {"main": pool([worker])},
            {MODEL: {"route": "pool:main"}},
            env={"TOLLWAY_DATA_DIR": str(data_dir)},
            pricing=str(prices),
        ) as base,
    ):
        yield base, data_dir


def _billed(data_dir: Path, requests: int) -> list[dict[str, Any]]:
    """The ledger once ``requests`` rows are in it (never more: each request once)."""
    until_sync(
        lambda: len(_ledger_rows(data_dir)) >= requests,
        timeout_s=10,
        what=f"{requests} requests in the ledger",
    )
    rows = _ledger_rows(data_dir)
    assert len(rows) == requests
    for row in rows:
        assert row["status"] == "ok" and row["model"] == MODEL and row["tenant_id"] == "e2e"
        assert row["rate_id"] == "e2e/tokens" and row["completion_tokens"] > 0
        expected = (row["prompt_tokens"] * 1 + row["completion_tokens"] * 2) / 1_000_000
        assert row["cost_micros"] == round(expected * 1_000_000)
    return rows


async def test_openai_agents_sdk_runs_a_function_tool_round_trip(
    served: tuple[str, Path],
) -> None:
    base, data_dir = served
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"Sunny in {city}."

    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=f"{base}/v1", api_key=API_KEY)
    set_default_openai_client(client, use_for_tracing=False)
    # A model name only: the SDK's default model class (the Responses API) serves it.
    agent = Agent(
        name="weather", instructions="Answer with the tool.", model=MODEL, tools=[get_weather]
    )
    try:
        result = await Runner.run(agent, "What is the weather in Paris?")
    finally:
        await client.close()  # its connections belong to this test's event loop

    # The emulator answers the first turn with a call, the tool's output with text.
    assert len(asked) == 1
    kinds = [type(item) for item in result.new_items]
    assert kinds[:2] == [ToolCallItem, ToolCallOutputItem]
    assert isinstance(result.final_output, str) and result.final_output
    assert [r.response_id[:5] for r in result.raw_responses] == ["resp_", "resp_"]
    usage = result.context_wrapper.usage
    rows = _billed(data_dir, usage.requests)
    assert usage.requests == 2
    assert sum(r["prompt_tokens"] for r in rows) == usage.input_tokens
    assert sum(r["completion_tokens"] for r in rows) == usage.output_tokens


def _one_turn(answer: Any, data_dir: Path) -> None:
    assert isinstance(answer, AIMessage) and answer.text
    usage = answer.usage_metadata
    assert usage is not None
    (row,) = _billed(data_dir, 1)
    assert row["prompt_tokens"] == usage["input_tokens"] > 0
    assert row["completion_tokens"] == usage["output_tokens"]


async def test_langchain_chat_openai_on_the_responses_api(served: tuple[str, Path]) -> None:
    base, data_dir = served
    async with httpx.AsyncClient() as http:  # closed here, not whenever GC finds it
        chat = ChatOpenAI(
            model=MODEL,
            base_url=f"{base}/v1",
            api_key=API_KEY,
            use_responses_api=True,
            http_async_client=http,
        )
        answer = await chat.ainvoke("Say hello.")
    assert answer.response_metadata["id"].startswith("resp_")  # served by /v1/responses
    _one_turn(answer, data_dir)


async def test_langchain_chat_anthropic_on_messages(served: tuple[str, Path]) -> None:
    base, data_dir = served
    chat = ChatAnthropic(model_name=MODEL, base_url=base, api_key=API_KEY, max_tokens=64)
    try:
        answer = await chat.ainvoke("Say hello.")
    finally:
        await chat._async_client.close()  # its connections belong to this test's event loop
    assert answer.response_metadata["id"].startswith("msg_")  # served by /v1/messages
    _one_turn(answer, data_dir)
