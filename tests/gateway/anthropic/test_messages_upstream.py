"""``/v1/messages`` in front of a scripted worker: what reaches the upstream, its
errors before and inside a stream, and idempotent replays, all in Anthropic's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from anthropic.types import ErrorResponse, Message

from gateway.anthropic import api
from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tests.gateway.test_pipeline_stages import config, tenant_key

HEADERS = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": "m",
    "max_tokens": 9,
    "messages": [{"role": "user", "content": "hi"}],
}


def events_of(body: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(block.split(b"\ndata: ", 1)[1]) for block in body.split(b"\n\n") if block]


async def test_the_upstream_gets_the_translated_chat_body() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        body = {
            **BODY,
            "system": "Be brief.",
            "stop_sequences": ["\n\n"],
            "top_k": 3,
            "metadata": {"user_id": "u-7"},
        }
        answer = await client.post("/v1/messages", headers=HEADERS, json=body)
        assert answer.status_code == 200, answer.text
        message = Message.model_validate(answer.json())
        assert message.content[0].type == "text" and message.content[0].text == "hello"
        assert answer.headers["request-id"] == answer.headers["x-request-id"]
        sent = worker.requests[-1]
        assert sent["model"] == "upstream-model"
        assert sent["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ]
        assert sent["stop"] == ["\n\n"] and sent["top_k"] == 3 and sent["user"] == "u-7"
        assert sent["max_tokens"] == 9 and "metadata" not in sent


async def test_an_upstream_refusal_before_the_stream_is_an_anthropic_400() -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="stream_error")) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        answer = await client.post("/v1/messages", headers=HEADERS, json={**BODY, "stream": True})
        assert answer.status_code == 400
        error = ErrorResponse.model_validate(answer.json())
        assert error.error.type == "invalid_request_error"
        assert "prompt too long" in error.error.message


async def test_an_upstream_error_mid_stream_is_an_anthropic_error_event() -> None:
    async with (
        serve_fake_worker(FakeWorker(mode="stream_error_mid", error_status=500)) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        answer = await client.post("/v1/messages", headers=HEADERS, json={**BODY, "stream": True})
        assert answer.status_code == 200
        events = events_of(answer.content)
        assert [e["type"] for e in events][-2:] == ["content_block_stop", "error"]
        ErrorResponse.model_validate(events[-1])
        assert events[-1]["error"]["type"] == "api_error"


async def test_an_idempotent_replay_is_translated_too() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        headers = {**HEADERS, "idempotency-key": "k-1"}
        for stream in (False, True):
            body = {**BODY, "stream": stream}
            first = await client.post(
                "/v1/messages", headers=headers | {"idempotency-key": f"k-{stream}"}, json=body
            )
            again = await client.post(
                "/v1/messages", headers=headers | {"idempotency-key": f"k-{stream}"}, json=body
            )
            assert again.headers.get("idempotent-replayed") == "true"
            if stream:
                kinds = [e["type"] for e in events_of(again.content)]
                assert kinds == [e["type"] for e in events_of(first.content)]
                assert kinds[-1] == "message_stop"
            else:
                assert (
                    Message.model_validate(again.json()).content
                    == Message.model_validate(first.json()).content
                )
        assert len(worker.requests) == 2
        # A key used on /v1/messages is not replayed to /v1/chat/completions.
        chat = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {API_KEY}", "idempotency-key": "k-False"},
            json={"model": "m", "max_tokens": 9, "messages": BODY["messages"]},
        )
        assert chat.headers.get("idempotent-replayed") != "true"


async def test_the_keys_rate_limit_applies_in_anthropics_shape(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    async with serve_fake_worker() as worker:
        cfg = config(worker.url, tmp_path, limits={"key_prefix": redis_prefix})
        async with running_gateway(cfg, {"redis_url": redis_url}) as (_, client):
            key = await tenant_key(client, limits={"rpm": 2})
            headers = {"x-api-key": key}
            oks = [await client.post("/v1/messages", headers=headers, json=BODY) for _ in range(2)]
            assert [r.status_code for r in oks] == [200, 200]
            assert oks[-1].headers["x-ratelimit-remaining-requests"] == "0"
            refused = await client.post("/v1/messages", headers=headers, json=BODY)
            assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
            assert ErrorResponse.model_validate(refused.json()).error.type == "rate_limit_error"
            assert len(worker.requests) == 2


async def test_the_openapi_description_documents_the_anthropic_routes() -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        schema = (await client.get("/openapi.json")).json()
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            operation = schema["paths"][path]["post"]
            error = operation["responses"]["default"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/AnthropicError"}
            assert {"apiKey": []} in operation["security"]
        chat = schema["paths"]["/v1/chat/completions"]["post"]
        assert chat["security"] == [{"bearer": []}]
        assert schema["components"]["securitySchemes"]["apiKey"]["name"] == "x-api-key"
        refused = await client.post("/v1/messages", json=BODY)  # no key at all
        assert refused.status_code == 401
        assert set(refused.json()) <= set(
            schema["components"]["schemas"]["AnthropicError"]["properties"]
        )


async def test_an_answer_that_fails_to_translate_still_releases_its_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> dict[str, Any]:
        raise ValueError("cannot translate")

    monkeypatch.setattr(api, "to_message", broken)
    async with serve_fake_worker() as worker:
        async with running_gateway(config(worker.url, tmp_path)) as (app, client):
            key = await tenant_key(client, limits={"max_concurrent": 1})
            for _ in range(2):  # the first one's slot was given back
                failed = await client.post("/v1/messages", headers={"x-api-key": key}, json=BODY)
                assert failed.status_code == 500, failed.text
                assert ErrorResponse.model_validate(failed.json()).error.type == "api_error"
                await app.state.pipeline.admitter.drain()  # settling runs in the background
            assert len(worker.requests) == 2
