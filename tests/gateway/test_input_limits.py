"""Limits on input: message count, JSON depth, header size and count, slow clients.

The first tests run in-process; the connection-level limits (head size, head
and body read timeouts, keep-alive) live in the HTTP protocol, so those tests
speak raw HTTP/1.1 over a socket to a real gateway process.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.requests import Request

from gateway.body import json_depth_exceeds, parse_json_object, read_body
from gateway.validation import validate_chat
from tests.e2e.processes import API_KEY as E2E_KEY
from tests.e2e.processes import gateway
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tollway.errors import InvalidRequest, PayloadTooLarge, RequestTimeout

AUTH = {"authorization": f"Bearer {API_KEY}"}


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_depth_is_measured_exactly() -> None:
    assert not json_depth_exceeds({}, 1)
    assert json_depth_exceeds({"a": []}, 1)
    assert not json_depth_exceeds({"a": [{"b": [1, "x", None]}]}, 4)
    assert json_depth_exceeds({"a": [{"b": [[]]}]}, 4)
    assert not json_depth_exceeds(_nested(64), 64)
    assert json_depth_exceeds(_nested(65), 64)


def test_parse_refuses_deep_bodies_with_a_clear_error() -> None:
    body = orjson.dumps({"model": "m", "metadata": _nested(70)})
    with pytest.raises(InvalidRequest) as caught:
        parse_json_object(body)
    assert caught.value.code == "json_too_deep"
    assert "64 levels" in caught.value.message
    assert parse_json_object(body, max_depth=80)["model"] == "m"


def test_message_count_limit() -> None:
    messages = [{"role": "user", "content": "x"}] * 5
    assert validate_chat({"model": "m", "messages": messages}, max_messages=5).message_count == 5
    with pytest.raises(InvalidRequest) as caught:
        validate_chat({"model": "m", "messages": messages}, max_messages=4)
    assert (caught.value.param, caught.value.code) == ("messages", "too_many_messages")


async def test_the_gateway_refuses_too_many_messages_and_too_deep_bodies() -> None:
    config = gateway_config(["http://127.0.0.1:9"])
    async with running_gateway(config) as (_, client):
        many = {"model": "m", "messages": [{"role": "user", "content": "x"}] * 4097}
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=many)
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "too_many_messages"
        assert resp.json()["error"]["param"] == "messages"
        deep = {"model": "m", "messages": [{"role": "user", "content": "x"}], "x": _nested(65)}
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=deep)
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "json_too_deep"
        assert resp.headers["x-request-id"]


async def test_a_body_cut_off_is_a_408() -> None:
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"model":', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    with pytest.raises(RequestTimeout) as caught:
        await read_body(Request(scope, receive), 1 << 20)
    assert caught.value.status_code == 408
    assert caught.value.to_body()["error"]["code"] == "request_timeout"


async def test_a_body_in_pieces_is_joined_and_limited_without_a_declared_length() -> None:
    def receiver(chunks: list[bytes]) -> Any:
        messages = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]

        async def receive() -> dict[str, Any]:
            return messages.pop(0)

        return receive

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    pieces = [b'{"model":', b"", b' "m"}']
    assert await read_body(Request(scope, receiver(pieces)), 64) == b'{"model": "m"}'
    with pytest.raises(PayloadTooLarge):  # chunked: refused once past the limit
        await read_body(Request(scope, receiver([b"x" * 40, b"y" * 40, b"z"])), 64)
    declared = {**scope, "headers": [(b"content-length", b"65")]}
    with pytest.raises(PayloadTooLarge):  # declared: refused before reading
        await read_body(Request(declared, receiver([b"never read"])), 64)
    bad = {**scope, "headers": [(b"content-length", b"sixty")]}
    with pytest.raises(InvalidRequest):
        await read_body(Request(bad, receiver([b"{}"])), 64)


# Connection-level limits, against a real process.

LIMITS = {
    "max_header_bytes": 4096,
    "max_headers": 20,
    "header_read_timeout_s": 1.0,
    "body_read_timeout_s": 1.0,
    "keep_alive_timeout_s": 1,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp("limits")
    pools = {
        "p": {
            "gpu": "h100",
            "model": {"name": "llama-3.1-8b-instruct"},
            "workers": ["http://127.0.0.1:9"],
        }
    }
    with gateway(tmp, pools, {"m": {"route": "pool:p"}}, server=LIMITS) as url:
        yield "127.0.0.1", int(url.rsplit(":", 1)[1])


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=5)
    return sock


def _read_all(sock: socket.socket, timeout_s: float = 5.0) -> tuple[bytes, float]:
    """Everything until the server closes; and how long that took."""
    started = time.monotonic()
    sock.settimeout(timeout_s)
    data = b""
    while time.monotonic() - started < timeout_s:
        try:
            part = sock.recv(65536)
        except ConnectionResetError:
            break
        if not part:
            break
        data += part
    return data, time.monotonic() - started


def _status_and_error(data: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"] if body else {}


@pytest.mark.e2e
def test_a_normal_request_over_a_raw_socket(base: tuple[str, int]) -> None:
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data, _ = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200")


@pytest.mark.e2e
def test_headers_too_large_get_431(base: tuple[str, int]) -> None:
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 8000 + b"\r\n\r\n")
        data, _ = _read_all(sock)
    status, error = _status_and_error(data)
    assert status == 431 and error["code"] == "request_header_fields_too_large"


@pytest.mark.e2e
def test_a_header_line_that_never_ends_gets_431(base: tuple[str, int]) -> None:
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nx-endless: ")
        try:
            for _ in range(10):
                sock.sendall(b"b" * 1024)
        except OSError:
            pass  # the server answered and closed already
        data, _ = _read_all(sock)
    assert _status_and_error(data)[0] == 431


@pytest.mark.e2e
def test_too_many_headers_get_431(base: tuple[str, int]) -> None:
    lines = b"".join(b"x-h%d: v\r\n" % i for i in range(30))
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n" + lines + b"\r\n")
        data, _ = _read_all(sock)
    status, error = _status_and_error(data)
    assert status == 431 and "header lines" in error["message"]


@pytest.mark.e2e
def test_slow_headers_get_408_and_the_connection_closes(base: tuple[str, int]) -> None:
    with _connect(base) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        started = time.monotonic()
        try:
            for _ in range(20):  # a byte every 0.2 s: slower than the 1 s head deadline allows
                sock.sendall(b"x")
                time.sleep(0.2)
                if time.monotonic() - started > 1.5:
                    break
        except OSError:
            pass
        data, _ = _read_all(sock)
        elapsed = time.monotonic() - started
    status, error = _status_and_error(data)
    assert status == 408 and error["code"] == "request_timeout"
    assert elapsed < 4


@pytest.mark.e2e
def test_an_idle_connection_is_closed_without_an_answer(base: tuple[str, int]) -> None:
    with _connect(base) as sock:
        data, took = _read_all(sock)
    assert data == b"" and 0.8 < took < 3


@pytest.mark.e2e
def test_a_slow_body_gets_408_openai_shaped(base: tuple[str, int]) -> None:
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + E2E_KEY.encode() + b"\r\ncontent-length: 1000\r\n\r\n"
    )
    with _connect(base) as sock:
        sock.sendall(head + b'{"model": "m", ')
        data, took = _read_all(sock)
    status, error = _status_and_error(data)
    assert status == 408
    assert error == {
        "message": "The request body was not received within 1 s.",
        "type": "invalid_request_error",
        "param": None,
        "code": "request_timeout",
    }
    assert b"connection: close" in data.lower()
    assert took < 3


@pytest.mark.e2e
def test_keep_alive_connections_close_when_idle(base: tuple[str, int]) -> None:
    with _connect(base) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        data, took = _read_all(sock)
    assert data.startswith(b"HTTP/1.1 200") and 0.8 < took < 3


def test_limits_are_configurable(tmp_path: Path) -> None:
    from gateway.config import parse_config

    config = parse_config(gateway_config(["http://127.0.0.1:9"], server=LIMITS))
    assert config.server.max_header_bytes == 4096
    assert config.server.max_messages == 4096 and config.server.max_json_depth == 64
    with pytest.raises(Exception, match="server.max_json_depth"):
        parse_config(gateway_config(["http://127.0.0.1:9"], server={"max_json_depth": 0}))
    asyncio.run(asyncio.sleep(0))


async def test_configured_message_and_depth_limits_reach_the_pipeline() -> None:
    from tests.gateway.harness import API_KEY, gateway_config, running_gateway

    cfg = gateway_config(["http://127.0.0.1:9"], server={"max_messages": 3, "max_json_depth": 5})
    async with running_gateway(cfg) as (_, client):
        auth = {"authorization": f"Bearer {API_KEY}"}
        many = [{"role": "user", "content": "x"}] * 4
        resp = await client.post(
            "/v1/chat/completions", headers=auth, json={"model": "m", "messages": many}
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "too_many_messages"
        deep: dict[str, object] = {"a": {"b": {"c": {"d": {"e": {}}}}}}
        resp = await client.post(
            "/v1/chat/completions",
            headers=auth,
            json={"model": "m", "messages": many[:1], "metadata": deep},
        )
        assert resp.status_code == 400 and resp.json()["error"]["code"] == "json_too_deep"
