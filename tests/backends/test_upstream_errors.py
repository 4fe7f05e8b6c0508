"""The one upstream error table: the pool and the catalog answer every status and failure alike."""

from __future__ import annotations

from contextlib import AbstractContextManager

import aiohttp
import orjson
import pytest

from backends import http1
from backends.catalog.errors import ProviderRejected, error_from_status, translate_http_errors
from backends.retry import is_retryable
from backends.sglang.transport import ConnectFailed, error_from_upstream, translate_errors
from backends.upstream_errors import ErrorBody, parse_error_body, retry_after_of
from tollway.errors import (
    TollwayError,
    UpstreamError,
    UpstreamRejected,
    UpstreamStreamBroken,
    UpstreamUnavailable,
)

STATUSES = [*range(300, 310), *range(400, 432), *range(500, 512), 529, 599]


def shape(error: TollwayError) -> tuple[type, int, str | None, bool]:
    base = UpstreamRejected if isinstance(error, UpstreamRejected) else type(error)
    return base, error.status_code, error.code, is_retryable(error)


@pytest.mark.parametrize("status", STATUSES)
def test_pool_and_catalog_share_one_table(status: int) -> None:
    body = orjson.dumps({"error": {"message": "nope", "param": "temperature"}})
    pool = error_from_upstream(status, body, "http://10.0.0.1:30000", {"retry-after": "3"})
    catalog = error_from_status(status, body, "catalog:x", retry_after=3.0)
    assert shape(pool) == shape(catalog)
    assert pool.headers == catalog.headers
    if isinstance(pool, UpstreamRejected):
        assert isinstance(catalog, ProviderRejected)
        assert pool.to_body() == catalog.to_body()


@pytest.mark.parametrize(
    ("status", "http", "code"),
    [
        (405, 502, "upstream_model_not_found"),
        (407, 502, "upstream_auth_failed"),
        (409, 400, None),
        (414, 413, "request_too_large"),
        (431, 413, "request_too_large"),
    ],
)
def test_a_providers_4xx_where_the_tables_disagreed(status: int, http: int, code: str) -> None:
    error = error_from_status(status, b"", "catalog:x")
    assert (error.status_code, error.code) == (http, code)


def test_a_workers_529_is_overloaded_and_retryable() -> None:
    error = error_from_upstream(529, b"", "w")
    assert (error.status_code, error.code, is_retryable(error)) == (
        503,
        "upstream_unavailable",
        True,
    )


def test_a_providers_rejection_keeps_its_param_and_top_level_message() -> None:
    error = error_from_status(400, b'{"object": "error", "message": "bad top_p"}', "catalog:x")
    assert error.message == "bad top_p"
    error = error_from_status(
        400, orjson.dumps({"error": {"message": "m", "param": "top_p"}}), "catalog:x"
    )
    assert error.to_body()["error"]["param"] == "top_p"
    long = error_from_status(
        400, orjson.dumps({"error": {"code": "context_length_exceeded"}}), "catalog:x"
    )
    assert long.to_body()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "86400"}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None),
        ({}, None),
        (None, None),
        ("not a mapping", None),
    ],
)
def test_one_retry_after_parser(headers: object, expected: float | None) -> None:
    assert retry_after_of(headers) == expected


def test_a_label_with_braces_is_shown_as_is() -> None:
    error = error_from_status(502, b"", "catalog:{x}")
    assert error.message == "catalog:{x}: the provider failed (status 502)"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ErrorBody("")),
        (b"plain text", ErrorBody("plain text")),
        (b"[1, 2]", ErrorBody("")),
        (b'{"error": {"message": "m", "code": 400}}', ErrorBody("m")),
        (b'{"error": {"message": "m", "code": "c", "param": "p"}}', ErrorBody("m", "p", "c")),
        (
            b'{"detail": [{"loc": ["body", "messages", 1], "msg": "bad"}]}',
            ErrorBody("bad", "messages[1]"),
        ),
        (
            b'{"type": "error", "error": {"type": "x", "message": "anthropic"}}',
            ErrorBody("anthropic"),
        ),
    ],
)
def test_one_error_body_parser(body: bytes, expected: ErrorBody) -> None:
    assert parse_error_body(body) == expected


def _raised(translate: AbstractContextManager[None], error: Exception) -> BaseException:
    with pytest.raises(BaseException) as caught, translate:
        raise error
    return caught.value


TRANSPORT_FAILURES = [
    aiohttp.ServerDisconnectedError(),
    aiohttp.ClientPayloadError("cut"),
    aiohttp.ClientOSError(),
    TimeoutError(),
    http1.ConnectError("refused"),
    http1.RemoteDisconnected("gone"),
    http1.ProtocolError("junk"),
    http1.BodyTooLarge("big"),
    http1.HeadTooLarge("big"),
    http1.PoolClosed("closed"),
]


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("error", TRANSPORT_FAILURES, ids=lambda e: type(e).__name__)
def test_pool_and_catalog_share_one_transport_table(error: Exception, streaming: bool) -> None:
    pool = _raised(translate_errors("http://10.0.0.1:1", streaming=streaming), error)
    catalog = _raised(translate_http_errors("catalog:x", streaming=streaming), error)
    assert isinstance(pool, TollwayError) and isinstance(catalog, TollwayError)
    assert pool.__cause__ is error and catalog.__cause__ is error
    base = UpstreamUnavailable if isinstance(pool, ConnectFailed) else type(pool)
    assert base is type(catalog)
    assert (pool.status_code, pool.code) == (catalog.status_code, catalog.code)


def test_a_body_aiohttp_cannot_read_breaks_a_stream_only_when_streaming() -> None:
    cut = aiohttp.ClientPayloadError("cut")
    assert type(_raised(translate_errors("w"), cut)) is UpstreamError
    assert type(_raised(translate_errors("w", streaming=True), cut)) is UpstreamStreamBroken


@pytest.mark.parametrize("streaming", [False, True])
def test_foreign_exceptions_are_not_translated(streaming: bool) -> None:
    odd = ValueError("ours")
    assert _raised(translate_errors("w", streaming=streaming), odd) is odd
    assert _raised(translate_http_errors("catalog:x", streaming=streaming), odd) is odd
