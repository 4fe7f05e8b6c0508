"""The emulator answers as SGLang 0.5.6.post1 does; each test names the source it copies.

Paths are inside the ``sglang`` wheel (``sglang/srt/...``).
"""

from __future__ import annotations

import logging
import time

import httpx
import orjson
import pytest

from simulator.timings import ApiTimings
from tests.simulator.conftest import ClientFactory
from tests.simulator.sse_parse import sse_payloads

HI = [{"role": "user", "content": "hi"}]

#: Llama-3.1-8B-Instruct's prompt for "hi" (its chat template, its tokenizer).
HI_IDS = [
    *(128000, 128006, 9125, 128007, 271),  # <|begin_of_text|><|start_header_id|>system...\n\n
    *(38766, 1303, 33025, 2696, 25, 6790, 220, 2366, 18, 198),  # Cutting Knowledge Date: ...
    *(15724, 2696, 25, 220, 1627, 10263, 220, 2366, 19, 271),  # Today Date: 26 Jul 2024
    128009,  # <|eot_id|>: an empty system message
    *(128006, 882, 128007, 271, 6151, 128009),  # user: hi
    *(128006, 78191, 128007, 271),  # the generation prompt: assistant
]


def test_the_defaults_are_sglangs() -> None:
    """``entrypoints/http_server.py`` ``health_generate`` (``asyncio.sleep(1)``),
    ``environ.py`` (``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION = EnvBool(True)``),
    ``managers/tokenizer_manager.py`` ``create_abort_task`` (``asyncio.sleep(2)``) and
    ``_wait_one_response`` (``wait_for(..., timeout=4)``),
    ``managers/scheduler_output_processor_mixin.py`` (``DEFAULT_FORCE_STREAM_INTERVAL = 50``)."""
    t = ApiTimings()
    assert (t.health_wait_s, t.health_generation, t.stream_abort_delay_s) == (1.0, True, 2.0)
    assert (t.wait_timeout_s, t.force_output_interval) == (4.0, 50)


async def test_health_answers_after_the_one_token_generation_wait(
    make_client: ClientFactory,
) -> None:
    """``http_server.py`` ``health_generate``: ``/health`` and ``/health_generate``
    answer 200 only after ``await asyncio.sleep(1)``."""
    async with make_client() as client:
        for path in ("/health", "/health_generate"):
            began = time.monotonic()
            r = await client.get(path)
            assert r.status_code == 200 and r.content == b""
            assert time.monotonic() - began >= 1.0


async def test_health_without_generation_answers_at_once(make_client: ClientFactory) -> None:
    """``http_server.py``: with ``SGLANG_ENABLE_HEALTH_ENDPOINT_GENERATION`` off,
    ``/health`` returns 200 at once; ``/health_generate`` still generates."""
    timings = ApiTimings(health_generation=False, health_wait_s=0.3)
    async with make_client(timings=timings) as client:
        began = time.monotonic()
        assert (await client.get("/health")).status_code == 200
        assert time.monotonic() - began < 0.3
        began = time.monotonic()
        assert (await client.get("/health_generate")).status_code == 200
        assert time.monotonic() - began >= 0.3


async def test_health_is_503_while_starting(make_client: ClientFactory) -> None:
    """``http_server.py`` ``health_generate``: 503 while ``ServerStatus.Starting``."""
    async with make_client(timings=ApiTimings(startup_s=60)) as client:
        assert (await client.get("/health")).status_code == 503
        assert (await client.get("/health_generate")).status_code == 503


async def test_get_server_info_is_deprecated(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """``http_server.py`` ``get_server_info``: a warning per call, then ``server_info``."""
    with caplog.at_level(logging.WARNING):
        new = (await client.get("/server_info")).json()
        assert not caplog.records
        old = (await client.get("/get_server_info")).json()
    assert [r.getMessage() for r in caplog.records] == [
        "Endpoint '/get_server_info' is deprecated and will be removed in a future version. "
        "Please use '/server_info' instead."
    ]
    assert old["max_total_num_tokens"] == new["max_total_num_tokens"] > 0
    assert new["version"] == "0.5.6.post1"


async def test_max_tokens_wins_over_max_completion_tokens(client: httpx.AsyncClient) -> None:
    """``entrypoints/openai/protocol.py`` ``ChatCompletionRequest.to_sampling_params``:
    ``"max_new_tokens": self.max_tokens or self.max_completion_tokens``."""

    async def completion_tokens(**limits: int) -> int:
        body = {"messages": HI, "ignore_eos": True, **limits}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        tokens: int = r.json()["usage"]["completion_tokens"]
        return tokens

    assert await completion_tokens(max_tokens=3, max_completion_tokens=40) == 3
    assert await completion_tokens(max_tokens=40, max_completion_tokens=3) == 40
    assert await completion_tokens(max_completion_tokens=5) == 5


def _context_error(prompt: int, new: int) -> str:
    return (
        "Requested token count exceeds the model's maximum context length of 64 tokens. "
        f"You requested a total of {prompt + new} tokens: {prompt} tokens from the input "
        f"messages and {new} tokens for the completion. Please reduce the number of tokens "
        "in the input messages or the completion to fit within the limit."
    )


async def test_prompt_plus_max_tokens_at_the_context_length_is_a_400(
    make_client: ClientFactory,
) -> None:
    """``managers/tokenizer_manager.py`` ``_validate_one_request``: 400 when input +
    ``max_new_tokens`` >= the context length; ``serving_chat.py``
    ``_handle_non_streaming_request`` answers it with ``create_error_response``."""
    async with make_client(context_length=64) as client:
        ok = await client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 27})
        assert ok.status_code == 200 and ok.json()["usage"]["prompt_tokens"] == len(HI_IDS)
        r = await client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 28})
        assert r.status_code == 400
        assert r.json() == {
            "object": "error",
            "message": _context_error(36, 28),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
        long = [{"role": "user", "content": "word " * 40}]
        r = await client.post("/v1/chat/completions", json={"messages": long})
        assert r.status_code == 400
        assert r.json()["message"] == (
            "The input (75 tokens) is longer than the model's context length (64 tokens)."
        )


async def test_a_streamed_request_gets_the_error_inside_a_200_stream(
    make_client: ClientFactory,
) -> None:
    """``serving_chat.py`` ``_generate_chat_stream``: the tokenizer manager's
    ``ValueError`` is caught inside the stream generator and sent as
    ``create_streaming_error_response`` (``serving_base.py``: ``json.dumps``), then
    ``data: [DONE]``."""
    async with make_client(context_length=64) as client:
        body = {"messages": HI, "max_tokens": 28, "stream": True}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.content == (
            b'data: {"error": {"object": "error", "message": "'
            + _context_error(36, 28).encode()
            + b'", "type": "BadRequestError", "param": null, "code": 400}}\n\n'
            b"data: [DONE]\n\n"
        )
        body = {"prompt": "word " * 70, "max_tokens": 4, "stream": True}
        r = await client.post("/v1/completions", json=body)  # serving_completions.py: the same
        events, done = sse_payloads(r.text)
        assert r.status_code == 200 and done
        assert events[0]["error"]["message"].startswith("The input (71 tokens) is longer")
        body = {"text": "word " * 70, "stream": True}
        r = await client.post("/generate", json=body)  # http_server.py generate_request
        assert r.status_code == 200
        first = r.content.split(b"\n\n")[0]
        assert orjson.loads(first.removeprefix(b"data: ")) == {
            "error": {
                "message": "The input (71 tokens) is longer than the model's context length "
                "(64 tokens)."
            }
        }
        assert r.content.endswith(b"data: [DONE]\n\n")


async def test_max_completion_tokens_over_the_context_is_refused_before_the_stream(
    make_client: ClientFactory,
) -> None:
    """``serving_chat.py`` ``_validate_request`` (only with ``--context-length``): a 400
    answered before any stream, ``max_completion_tokens or max_tokens`` in that order."""
    async with make_client(context_length=64) as client:
        body = {"messages": HI, "max_completion_tokens": 100, "max_tokens": 5, "stream": True}
        r = await client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400
        assert r.json()["message"] == (
            "max_completion_tokens is too large: 100.This model supports at most 64 "
            "completion tokens."
        )


async def test_the_prompt_is_llama_3_1s_template_and_tokens(client: httpx.AsyncClient) -> None:
    """SGLang renders chats with the model's template (``serving_chat.py``
    ``_apply_jinja_template``); Llama 3.1's adds a system header with its knowledge
    and today dates, so "hi" is 36 tokens, not 1."""
    from simulator.tokenizer import Tokenizer, render_chat

    tok = Tokenizer()
    assert tok.encode(render_chat(HI)) == HI_IDS
    assert tok.decode(HI_IDS) == render_chat(HI)
    r = await client.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert r.json()["usage"]["prompt_tokens"] == 36
    system = [{"role": "system", "content": "You are terse."}, *HI]
    r = await client.post("/v1/chat/completions", json={"messages": system, "max_tokens": 2})
    assert r.json()["usage"]["prompt_tokens"] == 36 + 4  # "You", " are", " terse", "."
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    rendered = render_chat(HI, [tool])
    assert "Environment: ipython\n" in rendered and '"name": "f"' in rendered


def test_token_counts_follow_the_bpe_not_words() -> None:
    """Llama 3's vocabulary starts with cl100k_base's: counts of English prose and
    code come from the BPE itself, one id per token."""
    from simulator.tokenizer import Tokenizer

    tok = Tokenizer()
    text = "Tokenization of uncommonly long words, numbers like 1234567 and code: x = f(y)."
    pieces = tok.split(text)
    assert "".join(pieces) == text
    assert len(tok.encode(text)) == len(pieces) > len(text.split())
    assert tok.decode(tok.encode(text)) == text
