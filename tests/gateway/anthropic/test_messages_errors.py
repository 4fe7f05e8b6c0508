"""Every error on ``/v1/messages`` and ``/v1/messages/count_tokens`` is in Anthropic's
shape, whichever part of the gateway answers it: the dispatcher (a repeated header, a
wrong method), the handler (credentials, the body's size and syntax, the model), the
limits (429 with ``retry-after``) or the upstream. Read with the official ``anthropic``
SDK (its typed exceptions) and with raw httpx where the SDK cannot send the request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anthropic
import httpx
import httpx2
import pytest

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway

ASK: list[Any] = [{"role": "user", "content": "hi"}]
BODY: dict[str, Any] = {"model": "m", "max_tokens": 9, "messages": ASK}
ROUTES = ["/v1/messages", "/v1/messages/count_tokens"]
LIMIT = 4096


@asynccontextmanager
async def gateway(
    worker_url: str, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, anthropic.AsyncAnthropic]]:
    config = gateway_config([worker_url], server={"max_body_bytes": LIMIT}, **overrides)
    async with running_gateway(config) as (app, client):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as http:
            sdk = anthropic.AsyncAnthropic(
                base_url="http://gateway", api_key=API_KEY, http_client=http, max_retries=0
            )
            yield client, sdk


def anthropic_error(answer: httpx.Response, status: int, kind: str) -> str:
    """Check ``answer`` is Anthropic's error of ``kind`` with ``status``; its message."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind, body
    assert answer.headers["request-id"] == answer.headers["x-request-id"]
    message: str = body["error"]["message"]
    return message


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize("header", ["x-api-key", "authorization", "x-request-id"])
async def test_a_repeated_header_is_refused_in_anthropics_shape(path: str, header: str) -> None:
    value = API_KEY if header == "x-api-key" else f"Bearer {API_KEY}"
    async with serve_fake_worker() as worker, gateway(worker.url) as (client, _):
        headers = [(header, value), (header, value), ("content-type", "application/json")]
        answer = await client.post(path, headers=headers, json=BODY)
        assert header in anthropic_error(answer, 400, "invalid_request_error")
        assert worker.requests == []


@pytest.mark.parametrize("path", ROUTES)
async def test_a_wrong_method_is_refused_in_anthropics_shape(path: str) -> None:
    async with serve_fake_worker() as worker, gateway(worker.url) as (client, _):
        answer = await client.get(path, headers={"x-api-key": API_KEY})
        anthropic_error(answer, 405, "invalid_request_error")
        assert answer.headers["allow"] == "POST"


@pytest.mark.parametrize("path", ROUTES)
async def test_credentials_body_and_model_errors_in_anthropics_shape(path: str) -> None:
    async with serve_fake_worker() as worker, gateway(worker.url) as (client, _):
        for headers in ({}, {"x-api-key": "tw-wrong"}, {"authorization": "Bearer tw-wrong"}):
            answer = await client.post(path, headers=headers, json=BODY)
            anthropic_error(answer, 401, "authentication_error")
        key = {"x-api-key": API_KEY, "content-type": "application/json"}
        big = b'{"pad": "' + b"x" * (2 * LIMIT) + b'"}'
        anthropic_error(await client.post(path, headers=key, content=big), 413, "request_too_large")
        anthropic_error(
            await client.post(path, headers=key, content=b'{"model": '),
            400,
            "invalid_request_error",
        )
        unknown = await client.post(path, headers=key, json={**BODY, "model": "nope"})
        anthropic_error(unknown, 404, "not_found_error")
        assert worker.requests == []


async def test_the_sdk_raises_its_typed_errors() -> None:
    async with serve_fake_worker() as worker, gateway(worker.url) as (_, sdk):
        for client in (sdk.with_options(api_key="tw-wrong"), _bearer(sdk, "tw-wrong")):
            with pytest.raises(anthropic.AuthenticationError) as denied:
                await client.messages.create(**BODY)
            assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
            with pytest.raises(anthropic.AuthenticationError):
                await client.messages.count_tokens(model="m", messages=ASK)
        # A bearer with the right key is accepted as x-api-key is.
        assert (await _bearer(sdk, API_KEY).messages.create(**BODY)).content
        with pytest.raises(anthropic.NotFoundError) as unknown:
            await sdk.messages.create(**{**BODY, "model": "nope"})
        assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
        with pytest.raises(anthropic.ContentTooLargeError) as big:
            await sdk.messages.create(**{**BODY, "system": "x" * (2 * LIMIT)})
        assert big.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        with pytest.raises(anthropic.ContentTooLargeError):
            await sdk.messages.count_tokens(model="m", messages=ASK, system="x" * (2 * LIMIT))
        with pytest.raises(anthropic.BadRequestError) as bad:
            await sdk.messages.create(model="m", max_tokens=0, messages=ASK)
        assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def _bearer(sdk: anthropic.AsyncAnthropic, key: str) -> anthropic.AsyncAnthropic:
    """The SDK sending ``Authorization: Bearer key`` (no ``x-api-key``)."""
    return sdk.with_options(api_key=None, auth_token=key)


@pytest.mark.parametrize(
    ("mode", "stream", "status", "error", "kind"),
    [
        ("error500", False, 502, anthropic.InternalServerError, "api_error"),
        ("error500", True, 502, anthropic.InternalServerError, "api_error"),
        ("ratelimit", False, 429, anthropic.RateLimitError, "rate_limit_error"),
        ("ratelimit", True, 429, anthropic.RateLimitError, "rate_limit_error"),
        ("not_json", False, 502, anthropic.InternalServerError, "api_error"),
    ],
)
async def test_upstream_failures_in_anthropics_shape(
    mode: str, stream: bool, status: int, error: type[anthropic.APIStatusError], kind: str
) -> None:
    async with serve_fake_worker(FakeWorker(mode=mode)) as worker, gateway(worker.url) as (_, sdk):
        with pytest.raises(error) as failed:
            await sdk.messages.create(**BODY, stream=stream)
        assert failed.value.status_code == status
        assert failed.value.body["error"]["type"] == kind  # type: ignore[index]
        if status == 429:
            assert int(failed.value.response.headers["retry-after"]) >= 1


async def test_no_worker_to_answer_is_anthropics_overloaded_503() -> None:
    async with gateway(closed_port_url()) as (_, sdk):
        with pytest.raises(anthropic.ServiceUnavailableError) as down:
            await sdk.messages.create(**BODY)
        assert down.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


async def test_an_upstream_timeout_is_anthropics_504() -> None:
    async with serve_fake_worker(FakeWorker(delay_s=1.0)) as worker:
        config = gateway_config([worker.url], server={"max_body_bytes": LIMIT})
        config["pools"]["p"]["timeouts"] = {"connect_s": 1, "first_byte_s": 0.2, "total_s": 0.5}
        async with running_gateway(config) as (app, _):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as http:
                sdk = anthropic.AsyncAnthropic(
                    base_url="http://gateway", api_key=API_KEY, http_client=http, max_retries=0
                )
                with pytest.raises(anthropic.GatewayTimeoutError) as late:
                    await sdk.messages.create(**BODY)
        assert late.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]
