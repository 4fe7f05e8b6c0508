"""The openai SDK against a real gateway process in front of real emulator processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.processes import (
    API_KEY,
    emulator,
    free_port,
    gateway,
    metric_samples,
    pool,
    stop,
    wait_ok,
    write_config,
)
from tests.schemas import validate_openai
from tests.waiting import until_sync

pytestmark = pytest.mark.e2e

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Two healthy workers, one that cuts streams, one pool of dead workers."""
    tmp = tmp_path_factory.mktemp("e2e")
    with (
        emulator("--instant") as (w1, p1),
        emulator("--instant") as (w2, p2),
        emulator("--instant", "--cut-stream-after", "2") as (w3, _),
        gateway(
            tmp,
            pools={
                "main": pool([w1, w2]),
                "cutting": pool([w3]),
                "dead": pool(["http://127.0.0.1:9", "http://127.0.0.1:10"]),
            },
            models={
                "agent-small": {"route": "pool:main"},
                "cutter": {"route": "pool:cutting"},
                "ghost": {"route": "pool:dead"},
            },
            server={"max_body_bytes": 64 * 1024},
        ) as base,
    ):
        yield {"base": base, "workers": [(w1, p1), (w2, p2)]}


@pytest.fixture(scope="module")
def client(stack: dict[str, object]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{stack['base']}/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def test_models_list(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"agent-small", "cutter", "ghost"}
    assert client.models.retrieve("agent-small").object == "model"


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="agent-small", messages=[{"role": "user", "content": "Say hello."}], max_tokens=12
    )
    reply = raw.parse()
    assert reply.model == "agent-small"
    assert reply.choices[0].message.content
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= 12
    assert raw.headers["x-tollway-route"] in ("pool:main/w0", "pool:main/w1")  # ids, not URLs
    validate_openai("CreateChatCompletionResponse", json.loads(raw.content))


def test_streaming_with_and_without_usage(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Tell me a story."}]
    plain = list(
        client.chat.completions.create(model="agent-small", messages=messages, stream=True)
    )
    assert all(c.usage is None for c in plain)
    assert plain[-1].choices[0].finish_reason in ("stop", "length")
    text = "".join(c.choices[0].delta.content or "" for c in plain if c.choices)
    assert text
    with_usage = list(
        client.chat.completions.create(
            model="agent-small",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    last = with_usage[-1]
    assert last.choices == [] and last.usage is not None
    assert (
        last.usage.completion_tokens
        == sum(1 for c in with_usage if c.choices and c.choices[0].delta.content)
        or last.usage.completion_tokens > 0
    )
    for chunk in with_usage:
        # SGLang's deltas carry every DeltaMessage key, unset ones null (protocol.py);
        # OpenAI's schema has no null role or tool_calls: the relay drops them.
        validate_openai("CreateChatCompletionStreamResponse", chunk.model_dump(exclude_unset=True))


def test_full_tool_loop(client: openai.OpenAI) -> None:
    messages: list[dict[str, object]] = [
        {"role": "system", "content": "You are a travel agent."},
        {"role": "user", "content": "What's the weather in Paris?"},
    ]
    first = client.chat.completions.create(
        model="agent-small",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert "city" in json.loads(calls[0].function.arguments)
    messages.append(choice.message.model_dump(exclude_none=True))
    for call in calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C, sunny"})
    final = client.chat.completions.create(
        model="agent-small",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[arg-type]
    )
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content
    # An unanswered tool call is refused by the upstream like OpenAI does; relayed as 400.
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="agent-small",
            messages=messages[:3],  # type: ignore[arg-type]
        )


def test_n_2(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="agent-small", messages=[{"role": "user", "content": "Two ideas."}], n=2
    )
    assert [c.index for c in reply.choices] == [0, 1]


def test_completions(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="agent-small", prompt="Once upon a time", max_tokens=8)
    assert reply.choices[0].text
    validate_openai("CreateCompletionResponse", reply.model_dump(exclude_unset=True))


def test_errors(stack: dict[str, object], client: openai.OpenAI) -> None:
    base = stack["base"]
    headers = {"authorization": f"Bearer {API_KEY}", "content-type": "application/json"}
    bad_json = httpx.post(f"{base}/v1/chat/completions", content=b"{oops", headers=headers)
    assert bad_json.status_code == 400
    validate_openai("ErrorResponse", bad_json.json())
    missing = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "agent-small"}, headers=headers
    )
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "messages"
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as big:
        client.chat.completions.create(
            model="agent-small", messages=[{"role": "user", "content": "x" * 100_000}]
        )
    assert big.value.status_code == 413
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="tw-wrong", max_retries=0).models.list()


def test_all_workers_down_is_503(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    validate_openai("ErrorResponse", info.value.response.json())


def test_stream_cut_midway_is_an_error(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="cutter", messages=[{"role": "user", "content": "A long answer please."}], stream=True
    )
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_worker_down_the_other_serves(tmp_path: Path) -> None:
    with (
        emulator("--instant") as (w1, p1),
        emulator("--instant") as (w2, _),
        gateway(
            tmp_path, pools={"main": pool([w1, w2])}, models={"m": {"route": "pool:main"}}
        ) as base,
    ):
        c = openai.OpenAI(base_url=f"{base}/v1", api_key=API_KEY, max_retries=0)
        stop(p1)  # kill one worker; requests keep succeeding on the other
        for _ in range(10):
            reply = c.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.headers["x-tollway-route"] == "pool:main/w1"
        # The health check takes the dead worker out (circuit state 2); one healthy
        # worker keeps the gateway ready.
        until_sync(lambda: metric_samples(base, "tollway_circuit_state").count(2) == 1)
        ready = httpx.get(f"{base}/readyz")
        assert ready.status_code == 200


def test_two_worker_processes_serve_and_leave_no_metrics_directory(tmp_path: Path) -> None:
    """``serve --workers 2``: both answer through one port; the multiprocess metrics
    directory the server made for them is removed when it stops."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with emulator("--instant") as (worker, _):
        config = write_config(tmp_path, {"p": pool([worker])}, {"m": {"route": "pool:p"}})
        port = free_port()
        env = {**os.environ, "TMPDIR": str(scratch), "TOLLWAY_DATA_DIR": str(tmp_path / "d")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
            + ["--port", str(port), "--workers", "2", "--log-level", "warning"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ok(url + "/readyz", proc)
            assert len(list(scratch.glob("tollway-metrics-*"))) == 1
            client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
            for _ in range(6):
                reply = client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
                assert reply.choices[0].message.content
            assert httpx.get(url + "/metrics").status_code == 200
        finally:
            stop(proc)
    assert list(scratch.glob("tollway-metrics-*")) == []
