"""A worker's non-2xx answer as the client sees it: the request's fault or the worker's.

The worker's 4xx that the request caused is relayed as OpenAI's
``invalid_request_error`` (its message and ``param``; never ``bad_gateway``,
never SGLang's CamelCase type or numeric code), with no retry, no fallback and
no breaker penalty. A 4xx about the gateway itself (credentials, an unknown
route or model) is a 502 and counts against the worker. No message names the
worker's URL.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from backends.retry import is_retryable
from backends.sglang.transport import error_from_upstream
from tests.backends.test_pool_reliability import Scripted, chat, running_pool, serve
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tollway.errors import UpstreamError, UpstreamRejected

WORKER = "http://10.1.2.3:30000"


def sglang_error(message: str, status: int = 400, param: str | None = None) -> bytes:
    """SGLang's own error body (type: the HTTP phrase in CamelCase; code: the status)."""
    return orjson.dumps(
        {
            "object": "error",
            "message": message,
            "type": "BadRequestError",
            "param": param,
            "code": status,
        }
    )


def rendered(status: int, body: bytes) -> tuple[int, dict[str, Any], bool]:
    error = error_from_upstream(status, body, WORKER)
    assert isinstance(error, UpstreamError)
    return error.status_code, error.to_body()["error"], is_retryable(error)


def test_sglang_400_is_an_invalid_request_with_the_workers_message_and_param() -> None:
    status, error, retryable = rendered(400, sglang_error("too long", param="messages"))
    assert status == 400 and not retryable
    assert error == {
        "message": "too long",
        "type": "invalid_request_error",
        "param": "messages",
        "code": None,
    }


def test_an_openai_shaped_code_is_kept() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "This model's maximum context length is 8192 tokens.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    )
    status, error, _ = rendered(400, body)
    assert (status, error["code"], error["param"]) == (400, "context_length_exceeded", "messages")


def test_413_is_request_too_large() -> None:
    status, error, retryable = rendered(413, b"payload too large")
    assert (status, error["type"], error["code"]) == (
        413,
        "invalid_request_error",
        "request_too_large",
    )
    assert error["message"] == "payload too large" and not retryable


def test_fastapi_422_names_the_field() -> None:
    body = orjson.dumps(
        {"detail": [{"loc": ["body", "messages", 0, "content"], "msg": "field required"}]}
    )
    status, error, retryable = rendered(422, body)
    assert (status, error["type"], error["param"]) == (
        422,
        "invalid_request_error",
        "messages[0].content",
    )
    assert error["message"] == "field required" and not retryable


@pytest.mark.parametrize("status", [400, 409, 411, 415, 418])
def test_other_4xx_are_the_requests_fault(status: int) -> None:
    http, error, retryable = rendered(status, b"")
    assert http == 400 and error["type"] == "invalid_request_error" and not retryable
    assert error["code"] != "bad_gateway"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (401, "upstream_auth_failed"),
        (403, "upstream_auth_failed"),
        (404, "upstream_model_not_found"),
        (405, "upstream_model_not_found"),
    ],
)
def test_4xx_about_the_gateway_are_the_gateways_fault(status: int, code: str) -> None:
    http, error, retryable = rendered(status, sglang_error("secret detail", status))
    assert (http, error["type"], error["code"]) == (502, "upstream_error", code)
    assert retryable and "secret detail" not in error["message"]


@pytest.mark.parametrize("status", [301, 400, 401, 404, 413, 422, 429, 500, 502, 503, 504, 599])
def test_no_message_names_the_worker(status: int) -> None:
    error = error_from_upstream(status, sglang_error(f"boom {status}", status), WORKER)
    assert "10.1.2.3" not in error.message and "30000" not in error.message


async def test_a_workers_404_fails_over_and_counts_against_it() -> None:
    lost, good = Scripted(status=404), Scripted()
    async with serve(lost, good), running_pool([lost.url, good.url]) as pool:
        assert (await pool.send(chat())).worker == good.url
        assert (lost.calls, good.calls) == (1, 1)
        assert pool.breakers[lost.url].window_counts() == (0, 1)


async def test_the_client_sees_the_workers_400_as_its_own_mistake() -> None:
    picky, good = Scripted(status=400), Scripted()
    async with serve(picky, good):
        config = gateway_config([picky.url])
        config["pools"]["q"] = {**config["pools"]["p"], "workers": [good.url]}
        config["models"]["m"]["fallbacks"] = ["pool:q"]
        async with running_gateway(config) as (_, client):
            resp = await client.post(
                "/v1/chat/completions",
                headers={"authorization": f"Bearer {API_KEY}"},
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert error == {
        "message": "scripted 400",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    assert (picky.calls, good.calls) == (1, 0)  # the client's mistake: no fallback
    assert picky.url.split("//")[1] not in resp.text


async def test_rejections_stay_rejections() -> None:
    error = error_from_upstream(400, b"", WORKER)
    assert isinstance(error, UpstreamRejected) and error.code is None
