"""The one dispatch path: every route checks headers, credentials and body size before
reading a body, and answers in OpenAI's shape (in-process, then over a real socket)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pytest

from tests.gateway.fake_worker import USAGE, serve_fake_worker
from tests.gateway.harness import API_KEY, closed_port_url, gateway_config, running_gateway
from tests.gateway.serving import read_response, read_rest, served

ADMIN = "tw-admin-dispatch-0123456789abcdef"
SMALL = {"max_body_bytes": 4096}
CHAT_BODY = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
#: One route of each kind: inference (both), model list, admin, tenant usage, probe.
ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("GET", "/v1/models"),
    ("POST", "/admin/v1/tenants"),
    ("GET", "/v1/usage"),
    ("GET", "/healthz"),
]
SINGLE = ["authorization", "x-api-key", "x-agent-type", "x-session-id", "idempotency-key"]


def _auth(path: str) -> str:
    return f"Bearer {ADMIN if path.startswith('/admin/') else API_KEY}"


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_a_repeated_header_is_refused_alike_on_every_route(method: str, path: str) -> None:
    config = gateway_config([closed_port_url()], admin_token=ADMIN)
    async with running_gateway(config) as (_, client):
        for name in [*SINGLE, "x-request-id"]:
            good = ("authorization", _auth(path))
            if name == "authorization":  # a bad key first, the good one last
                headers = [("authorization", "Bearer tw-bad"), good]
            else:
                headers = [good, (name, "a"), (name, "b")]
            resp = await client.request(method, path, headers=headers, content=b"{}")
            assert resp.status_code == 400, (path, name, resp.text)
            assert resp.json()["error"] == {
                "message": f"The header `{name}` was sent more than once; send it once.",
                "type": "invalid_request_error",
                "param": name,
                "code": "duplicate_header",
            }
            assert resp.headers["x-request-id"].startswith("req_")


async def test_inference_paths_with_another_method_get_405_in_openai_shape() -> None:
    async with running_gateway(gateway_config([closed_port_url()])) as (_, client):
        for path in ("/v1/chat/completions", "/v1/completions"):
            resp = await client.get(path, headers={"x-request-id": "mine-1"})
            assert resp.status_code == 405 and resp.headers["allow"] == "POST"
            assert resp.json()["error"]["code"] == "method_not_allowed"
            assert resp.headers["x-request-id"] == "mine-1"


async def test_the_openapi_description_lists_the_inference_routes_from_the_table() -> None:
    async with running_gateway(gateway_config([closed_port_url()])) as (app, client):
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert set(app.dispatcher.table.by_path) <= set(paths)
        assert paths["/v1/chat/completions"]["post"]["tags"] == ["inference"]
        assert "/admin/v1/tenants" in paths and "/v1/usage" in paths
        resp = await client.get("/healthz", headers={"x-request-id": "probe-7"})
        assert resp.headers["x-request-id"] == "probe-7"  # every route is named once


# Over a real socket: the protocol and the dispatcher together.


async def _exchange(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    return reader, writer


async def test_an_unauthenticated_admin_request_is_refused_before_its_body_is_read() -> None:
    config = gateway_config([closed_port_url()], admin_token=ADMIN, server=SMALL)
    async with running_gateway(config) as (app, _), served(app) as port:
        # 150 MB declared, nothing sent: the answer cannot have waited for the body.
        head = b"POST /admin/v1/tenants HTTP/1.1\r\nhost: t\r\ncontent-length: 157286400\r\n"
        reader, writer = await _exchange(port, head + b"content-type: application/json\r\n\r\n")
        resp = await read_response(reader)
        assert resp.status == 401 and resp.header("content-type") == "application/json"
        assert b'"code":"missing_api_key"' in resp.body
        assert await read_rest(reader) == b""  # closed: the body is never read
        writer.close()
        # With the token: refused at once for its declared size.
        auth = b"authorization: Bearer " + ADMIN.encode() + b"\r\n"
        reader, writer = await _exchange(port, head + auth + b"\r\n")
        resp = await read_response(reader)
        assert resp.status == 413 and b'"code":"request_too_large"' in resp.body
        writer.close()


@pytest.mark.parametrize(
    ("method", "path"), [r for r in ROUTES if r[1] in ("/v1/chat/completions", "/admin/v1/tenants")]
)
async def test_a_chunked_body_over_the_limit_is_cut_at_the_limit(method: str, path: str) -> None:
    config = gateway_config([closed_port_url()], admin_token=ADMIN, server=SMALL)
    async with running_gateway(config) as (app, _), served(app) as port:
        head = (
            f"{method} {path} HTTP/1.1\r\nhost: t\r\nauthorization: {_auth(path)}\r\n"
            "content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        ).encode()
        chunk = b"400\r\n" + b" " * 1024 + b"\r\n"
        reader, writer = await _exchange(port, head + chunk * 5)  # 5 KB, no end
        resp = await read_response(reader)
        assert resp.status == 413 and b'"code":"request_too_large"' in resp.body
        assert await read_rest(reader) == b""
        writer.close()


async def test_routes_without_a_body_still_refuse_a_declared_one_over_the_limit() -> None:
    async with (
        running_gateway(gateway_config([closed_port_url()], server=SMALL)) as (app, _),
        served(app) as port,
    ):
        reader, writer = await _exchange(
            port, b"GET /healthz HTTP/1.1\r\nhost: t\r\ncontent-length: 999999\r\n\r\n"
        )
        resp = await read_response(reader)
        assert resp.status == 413 and await read_rest(reader) == b""
        writer.close()


async def test_malformed_http_gets_a_400_in_openai_shape() -> None:
    config = gateway_config([closed_port_url()])
    async with running_gateway(config) as (app, _), served(app) as port:
        for bad in (
            b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 2\r\n"
            b"transfer-encoding: chunked\r\n\r\n{}",
            b"GET /healthz HTTP/1.1\r\nbad header\r\n\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS hello
        ):
            reader, writer = await _exchange(port, bad)
            resp = await read_response(reader)
            assert resp.status == 400 and resp.header("content-type") == "application/json"
            assert resp.header("connection") == "close"
            error: dict[str, Any] = json.loads(resp.body)["error"]
            assert error["code"] == "invalid_http_request"
            writer.close()


async def test_the_sdk_over_a_socket_gets_json_streams_errors_and_other_routes() -> None:
    messages: Any = [{"role": "user", "content": "hi"}]
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (app, _),
        served(app) as port,
    ):
        url = f"http://127.0.0.1:{port}"
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(model="m", messages=messages)
        reply = raw.parse()
        assert reply.choices[0].message.content == "hello"
        assert reply.usage is not None and reply.usage.total_tokens == USAGE["total_tokens"]
        assert raw.headers["x-request-id"].startswith("req_")
        assert "date" in raw.headers and "server" in raw.headers  # uvicorn's defaults
        stream = await client.chat.completions.create(
            model="m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        text = [c.choices[0].delta.content async for c in stream if c.choices]
        assert "".join(t or "" for t in text) == "hello"
        wrong = openai.AsyncOpenAI(base_url=url + "/v1", api_key="tw-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as refused:
            await wrong.chat.completions.create(model="m", messages=messages)
        await wrong.close()
        assert refused.value.code == "invalid_api_key"
        models = await client.models.list()  # through FastAPI
        assert [m.id for m in models.data] == ["m"]
        await client.close()


async def test_metrics_can_require_the_admin_token() -> None:
    async with running_gateway(gateway_config([closed_port_url()])) as (_, client):
        assert (await client.get("/metrics")).status_code == 200  # the default: open
    config = gateway_config(
        [closed_port_url()], admin_token=ADMIN, metrics={"require_admin_token": True}
    )
    async with running_gateway(config) as (_, client):
        refused = await client.get("/metrics")
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "missing_api_key"
        wrong = await client.get("/metrics", headers={"authorization": f"Bearer {API_KEY}"})
        assert wrong.status_code == 401 and "tollway_" not in wrong.text
        ok = await client.get("/metrics", headers={"authorization": f"Bearer {ADMIN}"})
        assert ok.status_code == 200 and "tollway_" in ok.text
