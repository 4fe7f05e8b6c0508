"""The anthropic SDK against a real gateway process in front of emulator processes:
streams over the real protocol, and a client that leaves a message stream mid-way
is billed once, as cancelled, as soon as it is gone."""

from __future__ import annotations

import time
from pathlib import Path

import anthropic
import pytest
from anthropic.types import Message

from tests.e2e.processes import API_KEY, emulator, gateway, pool
from tests.e2e.test_stream_cancel import _ledger_rows
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

ASK = [{"role": "user", "content": "Tell me about Paris."}]


def _client(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key=API_KEY, max_retries=0, timeout=20)


def test_messages_over_a_real_gateway(tmp_path: Path) -> None:
    with (
        emulator("--instant") as (worker, _),
        gateway(
            tmp_path, {"main": pool([worker])}, {"agent-small": {"route": "pool:main"}}
        ) as base,
    ):
        client = _client(base)
        message = client.messages.create(model="agent-small", max_tokens=32, messages=ASK)
        Message.model_validate(message.model_dump())
        with client.messages.stream(model="agent-small", max_tokens=32, messages=ASK) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text and final.content[0].type == "text" and final.content[0].text == text
        counted = client.messages.count_tokens(model="agent-small", messages=ASK)
        assert counted.input_tokens > 0


def test_a_client_leaving_a_message_stream_is_billed_once_as_cancelled(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with (
        emulator("--speed", "0.02") as (worker, _),  # at least 8 tokens: seconds of decoding
        gateway(
            tmp_path,
            {"main": pool([worker])},
            {"agent-small": {"route": "pool:main"}},
            env={"TOLLWAY_DATA_DIR": str(data_dir)},
        ) as base,
    ):
        client = _client(base)
        with client.messages.stream(model="agent-small", max_tokens=64, messages=ASK) as stream:
            request_id = stream.response.headers["x-request-id"]
            for event in stream:
                if event.type == "content_block_delta":
                    break
            left_at = time.monotonic()
        # Leaving the block closed the response mid-stream.

        def billed() -> list[dict[str, object]]:
            return [row for row in _ledger_rows(data_dir) if row["request_id"] == request_id]

        until_sync(billed, timeout_s=10, what="the cancelled request in the ledger")
        billed_after = time.monotonic() - left_at
        rows = billed()
    (row,) = rows
    assert billed_after < 5
    assert row["status"] == "client_cancelled"
    completion = row["completion_tokens"]
    assert isinstance(completion, int) and 1 <= completion < 64
