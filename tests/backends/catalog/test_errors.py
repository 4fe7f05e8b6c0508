"""Error mapping details that the stand-in providers do not reach."""

from __future__ import annotations

import orjson
import pytest

from backends.catalog.errors import (
    ProviderRejected,
    UpstreamRateLimited,
    error_from_status,
    retry_after_of,
    translate_litellm_errors,
)
from backends.catalog.library import load_litellm
from tests.backends.catalog.conftest import LITELLM_WARNINGS
from tests.schemas import validate_openai
from tollway.errors import TollwayError

pytestmark = LITELLM_WARNINGS


def _body(message: str, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "x", "code": code}})


@pytest.mark.parametrize(
    ("status", "expected_status", "code", "retryable"),
    [
        (400, 400, "bad_param", False),
        (413, 413, "bad_param", False),
        (422, 422, "bad_param", False),
        (401, 502, "upstream_auth_failed", True),
        (402, 502, "upstream_auth_failed", True),
        (403, 502, "upstream_auth_failed", True),
        (404, 502, "upstream_model_not_found", True),
        (408, 504, "upstream_timeout", True),
        (429, 429, "upstream_rate_limited", True),
        (500, 502, "upstream_server_error", False),
        (501, 502, "upstream_server_error", False),
        (502, 502, "bad_gateway", True),
        (503, 503, "upstream_unavailable", True),
        (504, 504, "upstream_timeout", True),
        (529, 503, "upstream_unavailable", True),
    ],
)
def test_direct_status_mapping(
    status: int, expected_status: int, code: str, retryable: bool
) -> None:
    error = error_from_status(status, _body("nope", "bad_param"), "catalog:x", 2.0)
    assert (error.status_code, error.code) == (expected_status, code)
    assert getattr(error, "retryable", False) is retryable
    validate_openai("ErrorResponse", error.to_body())


def test_relayed_rejection_keeps_message_and_null_code() -> None:
    error = error_from_status(400, _body("bad temperature"), "catalog:x")
    assert isinstance(error, ProviderRejected)
    assert error.to_body()["error"] == {
        "message": "bad temperature",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    too_large = error_from_status(413, b"", "catalog:x")
    assert (too_large.status_code, too_large.code) == (413, "request_too_large")


def test_retry_after_headers() -> None:
    assert retry_after_of({"retry-after": "3"}) == 3.0
    assert retry_after_of({"retry-after-ms": "1500"}) == 1.5
    assert retry_after_of({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None
    assert retry_after_of(None) is None
    error = UpstreamRateLimited("slow down", retry_after=1.5)
    assert error.headers == {"retry-after": "2"}


def test_unknown_litellm_failure_is_a_502_and_keeps_its_cause() -> None:
    litellm = load_litellm()
    with pytest.raises(TollwayError) as caught:
        with translate_litellm_errors(litellm, "catalog:x"):
            raise KeyError("surprise")
    assert (caught.value.status_code, caught.value.code) == (502, "bad_gateway")
    assert isinstance(caught.value.__cause__, KeyError)


def test_tollway_errors_pass_through_untouched() -> None:
    litellm = load_litellm()
    original = UpstreamRateLimited("queued too long")
    with pytest.raises(UpstreamRateLimited) as caught:
        with translate_litellm_errors(litellm, "catalog:x"):
            raise original
    assert caught.value is original
