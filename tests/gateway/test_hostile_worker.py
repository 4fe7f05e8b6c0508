"""A worker that misbehaves on the wire, through the whole gateway.

After each misbehaviour: a 502 in OpenAI's shape that does not name the worker,
the bad connection closed (the pool's count back to what it was), a failure
told to the worker's breaker, the request in the ledger as failed and free, and
the next request to the same, now sane, worker answered normally.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from backends.sglang.pool import SGLangPool
from gateway.app import Gateway
from tests.gateway.harness import API_KEY, gateway_config, running_gateway
from tests.gateway.hostile_worker import (
    HostileWorker,
    garbage,
    huge_body,
    huge_header,
    many_headers,
    ok,
    serve_hostile_worker,
    short_body,
)
from tests.gateway.test_metering import ledger_rows

AUTH = {"authorization": f"Bearer {API_KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
BODY_LIMIT = 1024 * 1024


def config(url: str, attempts: int = 1) -> dict[str, Any]:
    cfg = gateway_config([url])
    pool = cfg["pools"]["p"]
    pool["retry"] = {"max_attempts": attempts, "base_delay_s": 0.01, "max_delay_s": 0.02}
    pool["response_limits"] = {"max_body_bytes": BODY_LIMIT}  # head limits: the defaults
    return cfg


def the_pool(app: Gateway) -> SGLangPool:
    pool = app.state.registry.backends["pool:p"]
    assert isinstance(pool, SGLangPool)
    return pool


def connections(app: Gateway, worker: HostileWorker) -> tuple[int, int]:
    """(open, idle) connections from the gateway to ``worker``."""
    client = the_pool(app)._clients[worker.url]
    return client.open_connections, client.idle_connections


HEAD_MISBEHAVIOURS: list[tuple[str, Callable[[], bytes], str]] = [
    ("2,000 headers", many_headers, "bad_upstream_response"),
    ("one 8 MB header", huge_header, "bad_upstream_response"),
    ("garbage instead of HTTP", garbage, "bad_upstream_response"),
]
BODY_MISBEHAVIOURS: list[tuple[str, Callable[[], bytes], str]] = [
    ("a body twice the limit", lambda: huge_body(2 * BODY_LIMIT), "upstream_response_too_large"),
    ("a body shorter than its Content-Length", short_body, "bad_gateway"),
]
# A streamed body is relayed as it arrives: its misbehaviours are the relay's to bound.
CASES = [(*case, False) for case in HEAD_MISBEHAVIOURS + BODY_MISBEHAVIOURS] + [
    (*case, True) for case in HEAD_MISBEHAVIOURS
]


@pytest.mark.parametrize(
    ("answer", "code", "stream"),
    [case[1:] for case in CASES],
    ids=[f"{case[0]}{', streamed' if case[3] else ''}" for case in CASES],
)
async def test_a_misbehaving_answer_is_a_502_and_leaves_the_pool_sane(
    answer: Callable[[], bytes], code: str, stream: bool
) -> None:
    async with (
        serve_hostile_worker() as worker,
        running_gateway(config(worker.url)) as (app, client),
    ):
        body = {**BODY, "stream": stream}
        warm = await client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert warm.status_code == 200
        before = connections(app, worker)
        assert before == (1, 1)
        breaker = the_pool(app).breakers[worker.url]
        successes, failures = breaker.window_counts()

        worker.script.append(answer)
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert resp.status_code == 502, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"]) == ("upstream_error", code)
        assert worker.url.split("//")[1] not in resp.text
        assert connections(app, worker) == (0, 0)  # the bad connection closed, not pooled
        assert breaker.window_counts()[1] == failures + 1

        again = await client.post("/v1/chat/completions", headers=AUTH, json=body)
        assert again.status_code == 200
        assert connections(app, worker) == before
        assert worker.chats == 3

        rows = await ledger_rows(app.api)
        failed = rows[resp.headers["x-request-id"]]
        assert (failed["status"], failed["cost_micros"]) == ("upstream_error", 0)
        assert rows[again.headers["x-request-id"]]["status"] == "ok"


async def test_garbage_is_retried_and_the_retry_answers() -> None:
    async with (
        serve_hostile_worker() as worker,
        running_gateway(config(worker.url, attempts=3)) as (app, client),
    ):
        worker.script.extend([garbage, many_headers, ok])
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
        assert resp.status_code == 200 and worker.chats == 3
        assert resp.json()["choices"][0]["message"]["content"] == "ok"
        assert connections(app, worker) == (1, 1)


async def test_a_body_over_the_limit_is_not_retried() -> None:
    async with (
        serve_hostile_worker() as worker,
        running_gateway(config(worker.url, attempts=3)) as (app, client),
    ):
        worker.script.append(lambda: huge_body(2 * BODY_LIMIT))
        resp = await client.post("/v1/chat/completions", headers=AUTH, json=BODY)
        assert resp.status_code == 502 and worker.chats == 1
        assert resp.json()["error"]["code"] == "upstream_response_too_large"
        assert connections(app, worker) == (0, 0)
