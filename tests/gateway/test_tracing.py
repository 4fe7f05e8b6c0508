"""Traces: spans per stage when enabled; nothing (not even an import) when off."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.tracing import NullTracer, OtelTracer, TracingConfig
from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import API_KEY, gateway_config, running_gateway


async def test_enabled_tracing_records_a_span_per_stage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tollway.access")
    exporter = InMemorySpanExporter()
    tracer = OtelTracer(TracingConfig(enabled=True), exporter=exporter)
    async with (
        serve_fake_worker() as worker,
        running_gateway(gateway_config([worker.url])) as (
            app,
            client,
        ),
    ):
        app.state.pipeline.tracer = tracer
        resp = await client.post(
            "/v1/chat/completions",
            headers={"authorization": f"Bearer {API_KEY}"},
            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert resp.status_code == 200
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert {
        "tollway.request",
        "tollway.authenticate",
        "tollway.parse",
        "tollway.resolve",
        "tollway.upstream",
    } <= set(spans)
    root = spans["tollway.request"]
    assert root.attributes is not None
    assert root.attributes["request_id"] == resp.headers["x-request-id"]
    assert spans["tollway.upstream"].parent is not None
    assert spans["tollway.upstream"].parent.span_id == root.context.span_id
    # The access line names the trace, so a log line leads to its spans.
    (line,) = [r.getMessage() for r in caplog.records if r.name == "tollway.access"]
    assert json.loads(line)["trace_id"] == format(root.context.trace_id, "032x")
    tracer.shutdown()


def test_tracing_off_loads_no_sdk_and_uses_the_null_tracer(tmp_path: Path) -> None:
    # FastAPI and redis-py import parts of OpenTelemetry themselves when it is installed;
    # what is ours — a tracer provider, span processors, an exporter — loads only when on.
    code = (
        "import sys; from gateway.app import create_app; from gateway.config import parse_config;"
        "app = create_app(parse_config({}));"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry.exporter')];"
        "assert 'opentelemetry.sdk.trace' not in sys.modules;"
        "assert type(app.state.tracer).__name__ == 'NullTracer'"
    )
    env = {**os.environ, "TOLLWAY_DATA_DIR": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=tmp_path, env=env)
    assert NullTracer().span("x") is NullTracer().span("y")  # one shared no-op
