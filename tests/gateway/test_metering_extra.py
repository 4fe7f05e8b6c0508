"""Usage the gateway produces besides a request's own record: the provisional record
of a stream (journaled at its first byte, superseded by the final one) and the
rolling-summary calls the compression policy makes on a request's behalf."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.gateway.fake_worker import FakeWorker, serve_fake_worker
from tests.gateway.harness import running_gateway
from tests.gateway.test_metering import AUTH, EXPECTED_MICROS, MESSAGES, ledger_rows, priced_config
from tests.policies.conftest import assistant, user
from tests.policies.test_summary import conversation

STREAM = {"model": "m", "messages": MESSAGES, "stream": True}


class HeldWorker(FakeWorker):
    """Streams its first event, then holds the rest until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        original = web.StreamResponse.write
        held = self.release
        writes = 0

        async def write(response: web.StreamResponse, data: bytes) -> None:
            nonlocal writes
            if data.startswith(b"data: "):  # this stream's events, nothing else's
                writes += 1
                if writes == 2:
                    await held.wait()
            await original(response, data)

        setattr(web.StreamResponse, "write", write)  # noqa: B010 - the hold, for this request
        try:
            return await super().chat(request)
        finally:
            setattr(web.StreamResponse, "write", original)  # noqa: B010


async def rows_when(app: Any, done: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    """Writer rounds until ``done(rows)`` holds (or the deadline passes)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = await ledger_rows(app)
        if done(rows) or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.02)


@pytest.mark.parametrize(
    ("journal", "charged"),
    [(False, False), (True, False), (True, True)],
    ids=["buffer", "journal", "interrupted-charged"],
)
async def test_a_stream_is_provisional_from_its_first_byte_then_final(
    tmp_path: Path, journal: bool, charged: bool
) -> None:
    worker = HeldWorker()
    async with serve_fake_worker(worker):
        config = priced_config(tmp_path, worker.url)
        config["metering"] = {"journal": journal}
        if charged:  # the operator bills cut streams their prompt (and per-request price)
            book = tmp_path / "pricing.yaml"
            statuses = "[ok, client_cancelled, interrupted]"
            book.write_text(book.read_text() + f"charged_statuses: {statuses}\n")
        async with running_gateway(config) as (app, client):
            answer = asyncio.create_task(
                client.post("/v1/chat/completions", headers=AUTH, json=STREAM)
            )
            try:
                rows = await rows_when(app, bool)
            finally:
                worker.release.set()  # never leave the stream (and the test) hanging
            (row,) = rows.values()
            assert row["status"] == "provisional"
            assert row["prompt_tokens"] > 0 and row["completion_tokens"] == 0
            assert row["tenant_id"] == "t1"
            if charged:
                assert row["rate_id"] == "test/default"
                assert row["cost_micros"] == 100 + row["prompt_tokens"]  # 1 USD/M + 0.0001
            else:
                assert (row["rate_id"], row["cost_micros"]) == (None, 0)
            resp = await answer
            assert resp.status_code == 200 and resp.content.endswith(b"data: [DONE]\n\n")
            rows = await ledger_rows(app)
    (final,) = rows.values()
    assert final["request_id"] == resp.headers["x-request-id"]
    assert (final["status"], final["completion_tokens"]) == ("ok", 3)
    assert final["cost_micros"] == EXPECTED_MICROS


async def test_a_plain_stream_leaves_one_ok_row_and_no_provisional(tmp_path: Path) -> None:
    async with (
        serve_fake_worker() as worker,
        running_gateway(priced_config(tmp_path, worker.url)) as (app, client),
    ):
        ids = []
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", headers=AUTH, json=STREAM)
            ids.append(resp.headers["x-request-id"])
        rows = await ledger_rows(app)
    assert sorted(rows) == sorted(ids)
    assert {row["status"] for row in rows.values()} == {"ok"}


def summarized_config(tmp_path: Path, worker: str) -> dict[str, Any]:
    config = priced_config(tmp_path, worker)
    config["compression"] = {
        "rolling": {
            "steps": [
                {
                    "type": "rolling_summary",
                    "trigger_tokens": 1000,
                    "keep_recent_tokens": 400,
                    "chunk_tokens": 500,
                }
            ]
        }
    }
    config["agent_types"] = {
        "summarizer": {"model": "m"},
        "agent": {"model": "m", "compression": "rolling"},
    }
    return config


async def test_summary_calls_are_metered_once_each_and_linked(tmp_path: Path) -> None:
    """The summarizer's model call is its own priced record, attributed to the caller's
    tenant and key and linked to the request; a reused summary makes no call and no
    record."""
    headers = {**AUTH, "x-agent-type": "agent", "x-session-id": "s1"}
    messages = conversation(8)
    async with (
        serve_fake_worker() as worker,
        running_gateway(summarized_config(tmp_path, worker.url)) as (app, client),
    ):
        first = await client.post(
            "/v1/chat/completions", headers=headers, json={"model": "m", "messages": messages}
        )
        assert first.status_code == 200
        assert len(worker.requests) == 2  # the summary, then the answer
        later = messages + [user("one more"), assistant("sure")]
        second = await client.post(
            "/v1/chat/completions", headers=headers, json={"model": "m", "messages": later}
        )
        assert second.status_code == 200
        assert len(worker.requests) == 3  # one summary call, two answers
        rows = await ledger_rows(app)
    parent = first.headers["x-request-id"]
    summaries = [row for row in rows.values() if row["agent_type"] == "summarizer"]
    assert len(rows) == 3 and len(summaries) == 1
    (summary,) = summaries
    assert summary["parent_request_id"] == parent
    assert summary["request_id"] != parent
    assert (summary["tenant_id"], summary["model"]) == ("t1", "m")
    assert summary["key_id"] == rows[parent]["key_id"]
    assert (summary["status"], summary["prompt_tokens"], summary["completion_tokens"]) == (
        "ok",
        7,
        3,
    )
    assert summary["cost_micros"] == EXPECTED_MICROS and summary["rate_id"] == "test/default"
    assert rows[parent]["parent_request_id"] is None
    assert rows[second.headers["x-request-id"]]["agent_type"] == "agent"


class FailingSummaries(FakeWorker):
    """Answers every request but the summarizer's, which gets a 500."""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if "You compress the history" in str(body.get("messages", [{}])[0].get("content")):
            self.requests.append(body)
            return web.json_response({"object": "error", "message": "boom"}, status=500)
        return await super().chat(request)


async def test_a_failed_summary_call_is_recorded_not_charged(tmp_path: Path) -> None:
    headers = {**AUTH, "x-agent-type": "agent", "x-session-id": "s1"}
    async with (
        serve_fake_worker(FailingSummaries()) as worker,
        running_gateway(summarized_config(tmp_path, worker.url)) as (app, client),
    ):
        resp = await client.post(
            "/v1/chat/completions",
            headers=headers,
            json={"model": "m", "messages": conversation(8)},
        )
        assert resp.status_code == 200  # the conversation went up as it was
        rows = await ledger_rows(app)
    parent = resp.headers["x-request-id"]
    (summary,) = [row for row in rows.values() if row["parent_request_id"] == parent]
    assert (summary["status"], summary["agent_type"], summary["cost_micros"]) == (
        "upstream_error",
        "summarizer",
        0,
    )
    assert rows[parent]["status"] == "ok"
