"""A request no worker's whole KV pool can hold: 400 before sending, counted as rejected."""

from __future__ import annotations

from pathlib import Path

from tests.gateway.fake_worker import serve_fake_worker
from tests.gateway.harness import running_gateway
from tests.gateway.test_metering import AUTH, ledger_rows, priced_config

#: About 6000 tokens by the gateway's estimate, 3000 read conservatively.
LONG = [{"role": "user", "content": "hello world " * 2000}]


async def test_an_oversized_request_is_refused_unsent_and_not_billed(tmp_path: Path) -> None:
    async with serve_fake_worker() as worker:
        config = priced_config(tmp_path, worker.url)
        config["pools"]["p"]["max_total_tokens"] = 2000
        async with running_gateway(config) as (app, client):
            resp = await client.post(
                "/v1/chat/completions",
                headers=AUTH,
                json={"model": "m", "messages": LONG, "max_tokens": 10},
            )
            assert resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert error["code"] == "context_length_exceeded"
            assert error["param"] == "messages"
            assert error["type"] == "invalid_request_error"
            assert worker.requests == []
            refused = resp.headers["x-request-id"]
            rows = await ledger_rows(app)
    assert rows[refused]["status"] == "rejected" and rows[refused]["cost_micros"] == 0
