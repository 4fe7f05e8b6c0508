"""Bad input and bad credentials get OpenAI-shaped errors with the right status."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}


def assert_error_shape(body: dict[str, Any]) -> dict[str, Any]:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_api_key"),
        ({"authorization": "Bearer wrong"}, "invalid_api_key"),
        ({"authorization": f"Basic {API_KEY}"}, "invalid_api_key"),
        ({"authorization": "Bearer"}, "invalid_api_key"),
    ],
)
async def test_bad_credentials_are_401(headers: dict[str, str], code: str) -> None:
    async with running_gateway(gateway_config(["http://127.0.0.1:9"])) as (_, client):
        for path, method in (("/v1/chat/completions", "POST"), ("/v1/models", "GET")):
            resp = await client.request(method, path, headers=headers, json={})
            assert resp.status_code == 401
            assert assert_error_shape(resp.json())["code"] == code
            assert resp.headers["x-request-id"]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", None),
        (b'{"model": "m"}', "messages", "missing_required_parameter"),
        (b'{"model": "m", "messages": []}', "messages", "empty_array"),
        (
            b'{"model": "m", "messages": [{"role": "wizard", "content": "x"}]}',
            "messages[0].role",
            None,
        ),
        (
            b'{"model": "m", "messages": [{"role": "tool", "content": "x"}]}',
            "messages[0].tool_call_id",
            None,
        ),
        (
            b'{"model": "m", "messages": [{"role": "assistant", "tool_calls": []}]}',
            "messages[0].tool_calls",
            "empty_array",
        ),
        (b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n", None),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            "stream",
            None,
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], '
            b'"stream_options": {"include_usage": true}}',
            "stream_options",
            None,
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3}',
            "temperature",
            None,
        ),
    ],
)
async def test_malformed_requests_are_400_naming_the_field(
    body: bytes, param: str | None, code: str | None
) -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (
            _,
            client,
        ),
    ):
        resp = await client.post(
            "/v1/chat/completions",
            content=body,
            headers={**AUTH, "content-type": "application/json"},
        )
        assert resp.status_code == 400, resp.text
        err = assert_error_shape(resp.json())
        assert err["type"] == "invalid_request_error"
        assert err["param"] == param
        if code:
            assert err["code"] == code
        assert worker.requests == []  # nothing reached the upstream


async def test_unknown_model_is_404_model_not_found() -> None:
    async with running_gateway(gateway_config(["http://127.0.0.1:9"])) as (_, client):
        resp = await client.post(
            "/v1/chat/completions",
            headers=AUTH,
            json={"model": "nope", "messages": [{"role": "user", "content": "x"}]},
        )
        assert resp.status_code == 404
        assert assert_error_shape(resp.json())["code"] == "model_not_found"
        resp = await client.get("/v1/models/nope", headers=AUTH)
        assert resp.status_code == 404


async def test_oversized_body_is_413() -> None:
    config = gateway_config(["http://127.0.0.1:9"], server={"max_body_bytes": 2048})
    async with running_gateway(config) as (_, client):
        big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=big)
        assert resp.status_code == 413
        assert assert_error_shape(resp.json())["code"] == "request_too_large"

        async def chunks():  # type: ignore[no-untyped-def]
            yield b'{"model": "m", "messages": [{"role": "user", "content": "'
            for _ in range(10):
                yield b"y" * 1000
            yield b'"}]}'

        resp = await client.post("/v1/chat/completions", headers=AUTH, content=chunks())
        assert resp.status_code == 413


async def test_unknown_path_and_method_are_openai_shaped() -> None:
    async with running_gateway(gateway_config(["http://127.0.0.1:9"])) as (_, client):
        resp = await client.get("/v1/nothing-here")
        assert resp.status_code == 404
        assert assert_error_shape(resp.json())["code"] == "not_found"
        resp = await client.get("/v1/chat/completions", headers=AUTH)
        assert resp.status_code == 405
        assert assert_error_shape(resp.json())["code"] == "method_not_allowed"


async def test_models_list_and_get() -> None:
    async with running_gateway(gateway_config(["http://127.0.0.1:9"])) as (_, client):
        resp = await client.get("/v1/models", headers=AUTH)
        assert resp.status_code == 200
        body = resp.json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["m"]
        model = (await client.get("/v1/models/m", headers=AUTH)).json()
        assert set(model) == {"id", "object", "created", "owned_by"}
        assert model["object"] == "model"
        assert (await client.get("/healthz")).json() == {"status": "ok"}
