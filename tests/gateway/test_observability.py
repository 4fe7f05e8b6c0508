"""Metrics move under load; access logs are JSON lines without secrets."""

from __future__ import annotations

import logging

import orjson
import pytest
from starlette.types import Message

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway

AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "secret prompt text"}]}


def metric(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_metrics_appear_and_move(caplog: pytest.LogCaptureFixture) -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (
            _,
            client,
        ),
    ):
        before = (await client.get("/metrics")).text
        assert "tollway_pool_queue_depth" in before
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", headers=AUTH, json=BODY)).is_success
        resp = await client.post(
            "/v1/chat/completions", headers=AUTH, json={**BODY, "stream": True}
        )
        assert resp.is_success
        await client.post("/v1/chat/completions", headers=AUTH, json={"model": "nope"})
        text = (await client.get("/metrics")).text
        assert metric(text, "tollway_requests_total", route="pool:p", status="200") == 4
        assert metric(text, "tollway_requests_total", status="400") == 1
        assert metric(text, "tollway_tokens_total", kind="prompt") == 4 * 7
        assert metric(text, "tollway_time_to_first_token_seconds_count") == 1
        assert metric(text, "tollway_request_duration_seconds_count", route="pool:p") == 4
        assert metric(text, "tollway_worker_in_flight", worker=worker.url) == 0
        assert metric(text, "tollway_circuit_state", worker=worker.url) == 0
        assert metric(text, "tollway_admission_total", outcome="admitted") == 4
        assert metric(text, "tollway_admission_home_waits_total", result="won") == 0
        assert "tollway_usage_buffer_depth" in text and "tollway_ledger_lag_seconds" in text


def test_metrics_cover_every_name_the_dashboards_use() -> None:
    import json
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    dashboard = (root / "infra/grafana/tollway-dashboard.json").read_text()
    used = set(re.findall(r"tollway_[a-z_]+", dashboard))
    source = (root / "gateway/metrics.py").read_text()
    declared = set(re.findall(r'"(tollway_[a-z_]+)"', source))
    suffixes = ("_total", "_bucket", "_count", "_sum")
    for name in used:
        base = name
        for suffix in suffixes:
            if base.endswith(suffix) and base[: -len(suffix)] in declared:
                base = base[: -len(suffix)]
        assert base in declared, name
    assert json.loads(dashboard)


async def test_access_log_lines_are_json_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tollway.access")
    async with (
        serve_fake_worker(FakeWorker()) as worker,
        running_gateway(gateway_config([worker.url])) as (_, client),
    ):
        await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
        await client.post(
            "/v1/chat/completions", headers={"authorization": "Bearer tw-wrong-key"}, json=BODY
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "tollway.access"]
    assert len(lines) == 2
    first, second = (orjson.loads(line) for line in lines)
    assert first["status"] == "ok" and first["tenant_id"] == "t1" and first["prompt_tokens"] == 7
    assert first["route"].startswith("pool:p/") and first["latency_ms"] > 0
    assert second["status"] == "rejected" and second["http_status"] == 401
    for line in lines:
        assert API_KEY not in line and "tw-wrong-key" not in line
        assert "secret prompt text" not in line


async def test_tenant_labels_only_when_configured() -> None:
    async with serve_fake_worker() as worker:
        for enabled in (False, True):
            cfg = gateway_config([worker.url], metrics={"tenant_labels": enabled})
            async with running_gateway(cfg) as (_, client):
                await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
                text = (await client.get("/metrics")).text
            has = metric(text, "tollway_tenant_requests_total", tenant="t1", status="200") == 1
            assert has is enabled
            assert 'tenant="t1"' in text if enabled else 'tenant="' not in text


async def test_database_errors_a_client_sees_are_counted() -> None:
    from tollway.errors import ServiceUnavailable

    async with running_gateway(
        gateway_config(["http://127.0.0.1:9"], admin_token="tw-admin-x-0123456789")
    ) as (
        app,
        client,
    ):
        store = app.state.store

        async def broken(*args: object, **kwargs: object) -> None:
            raise ServiceUnavailable("database unavailable", code="database_error")

        store.list_tenants = broken
        resp = await client.get(
            "/admin/v1/tenants", headers={"authorization": "Bearer tw-admin-x-0123456789"}
        )
        assert resp.status_code == 503
        text = (await client.get("/metrics")).text
        assert metric(text, "tollway_database_errors_total") == 1


async def test_a_request_is_counted_and_logged_after_its_response_is_sent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Settling, metrics and the access line are off the critical path: they run once
    the body has been handed to the server, exactly once, and even if sending fails."""
    caplog.set_level(logging.INFO, logger="tollway.access")
    events: list[str] = []

    class Marker(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            events.append("access-line")

    marker = Marker()
    logging.getLogger("tollway.access").addHandler(marker)
    body = orjson.dumps(BODY)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [(b"authorization", f"Bearer {API_KEY}".encode()), (b"host", b"t")],
        "query_string": b"",
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, object]) -> None:
        events.append(str(message["type"]))

    async def failing_send(message: dict[str, object]) -> None:
        raise OSError("the connection broke")

    try:
        async with (
            serve_fake_worker(FakeWorker()) as worker,
            running_gateway(gateway_config([worker.url])) as (app, _),
        ):
            await app(dict(scope), receive, send)
            assert events == ["http.response.start", "http.response.body", "access-line"]
            events.clear()
            with pytest.raises(OSError):
                await app(dict(scope), receive, failing_send)
            assert events == ["access-line"]
    finally:
        logging.getLogger("tollway.access").removeHandler(marker)


async def test_every_hot_path_answer_names_its_request_once() -> None:
    body = orjson.dumps(BODY)
    heads: list[list[tuple[bytes, bytes]]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            heads.append(list(message["headers"]))

    async with (
        serve_fake_worker(FakeWorker()) as worker,
        running_gateway(gateway_config([worker.url])) as (app, _),
    ):
        for key in (API_KEY, "tw-wrong-key"):
            scope = {
                "type": "http",
                "method": "POST",
                "path": "/v1/chat/completions",
                "headers": [
                    (b"authorization", f"Bearer {key}".encode()),
                    (b"x-request-id", b"r-1"),
                ],
                "query_string": b"",
            }
            await app(scope, receive, send)
    assert len(heads) == 2
    for head in heads:
        assert [v for k, v in head if k == b"x-request-id"] == [b"r-1"]
