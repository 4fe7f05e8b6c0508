"""The disconnect matrix: a client (a raw socket) leaves at every point of a request,
streamed and not, on a pool and on a catalog model, against one real gateway
process and one real emulated worker for the whole module.

After each departure, within a few seconds (polled with a deadline): no request is
in flight or waiting for KV room, the worker runs nothing of ours (the upstream
connection was closed, so the worker aborted it), and the ledger holds exactly one
usage record with the right status, or none where nothing was dispatched.
"""

from __future__ import annotations

import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.processes import API_KEY, emulator, gateway, pool

pytestmark = pytest.mark.e2e

MODEL = "llama-3.1-8b-instruct"
#: The worker's KV pool; with the pool's 80% headroom 4,800 tokens are admitted.
KV_TOKENS = 6000
DEADLINE_S = 8.0
#: Statuses of a non-streamed request whose client left after sending it all: the
#: departure cancels the request, unless the answer was ready first (billed in full).
NOT_NOTICED = {"ok", "client_cancelled"}


@dataclass
class Stack:
    base: str
    worker: str
    ledger: Path
    port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("matrix")
    data = tmp / "data"
    catalog = {
        "hosted": {
            "litellm_model": f"openai/{MODEL}",
            "transport": "direct_openai",
            "price": {"input_per_million": "1.00", "output_per_million": "2.00"},
        }
    }
    with emulator("--speed", "1", "--max-total-tokens", str(KV_TOKENS)) as (worker, _):
        catalog["hosted"]["api_base"] = f"{worker}/v1"
        with gateway(
            tmp,
            pools={"main": pool([worker])},
            models={"m": {"route": "pool:main"}, "hosted": {"route": "catalog:hosted"}},
            env={"TOLLWAY_DATA_DIR": str(data)},
            catalog=catalog,
            idempotency={"enabled": True},
        ) as base:
            yield Stack(base, worker, data / "tollway.db", int(base.rsplit(":", 1)[1]))


def body(stream: bool, max_tokens: int, model: str = "m") -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": max_tokens,
        "stream": stream,
        "ignore_eos": True,  # SGLang's: generate all max_tokens
    }


def request_bytes(payload: dict[str, Any], rid: str, **headers: str) -> tuple[bytes, bytes]:
    """(head, body) of a raw HTTP/1.1 request."""
    content = orjson.dumps(payload)
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        "host: gateway",
        f"authorization: Bearer {API_KEY}",
        "content-type: application/json",
        f"content-length: {len(content)}",
        f"x-request-id: {rid}",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), content


def connect(stack: Stack) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=DEADLINE_S)
    return sock


def read_until(sock: socket.socket, marker: bytes, count: int = 1) -> bytes:
    """Read until ``marker`` was seen ``count`` times (the deadline is the socket's)."""
    got = b""
    while got.count(marker) < count:
        block = sock.recv(65536)
        if not block:
            break
        got += block
    return got


def scrape(stack: Stack, *names: str) -> dict[str, float]:
    """Metrics from ``/metrics``, each summed over its labels."""
    text = httpx.get(stack.base + "/metrics", timeout=5).text
    sums = dict.fromkeys(names, 0.0)
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in sums:
            sums[name] += float(line.rsplit(" ", 1)[1])
    return sums


def metrics(stack: Stack) -> dict[str, float]:
    """The gauges that must come back to zero."""
    return scrape(stack, "tollway_worker_in_flight", "tollway_pool_queue_depth")


def finished(stack: Stack) -> int:
    """Requests the gateway finished (``tollway_requests_total``): once each."""
    return int(scrape(stack, "tollway_requests_total")["tollway_requests_total"])


def worker_requests(stack: Stack) -> int:
    load = httpx.get(stack.worker + "/get_load", timeout=5).json()
    return int(sum(rank["num_reqs"] for rank in load))


def ledger_rows(stack: Stack, rid: str) -> list[tuple[str, int]]:
    """(status, cost in micro-USD) of each usage record of ``rid``."""
    if not stack.ledger.exists():
        return []
    with sqlite3.connect(stack.ledger) as db:
        try:
            rows = db.execute(
                "SELECT status, cost_micros FROM usage_ledger WHERE request_id = ?", (rid,)
            )
            return [(str(status), int(cost)) for status, cost in rows]
        except sqlite3.OperationalError:  # the table is not there yet
            return []


def wait_for(what: str, check: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {deadline_s}s: {what}")
        time.sleep(0.05)


def settled(stack: Stack, rid: str, statuses: set[str] | None, free: bool = False) -> None:
    """Everything released; exactly one record with a status in ``statuses`` (costing
    nothing when ``free``), or none (``statuses`` None)."""
    wait_for("nothing in flight", lambda: not any(metrics(stack).values()))
    wait_for("the worker runs nothing", lambda: worker_requests(stack) == 0)
    if statuses is None:
        assert ledger_rows(stack, rid) == []
        return
    # A stream's provisional record (journaled at its first byte) may reach the ledger a
    # writer round before the final one that supersedes it.
    wait_for(
        f"a settled usage record for {rid}",
        lambda: any(status != "provisional" for status, _ in ledger_rows(stack, rid)),
    )
    found = ledger_rows(stack, rid)
    assert len(found) == 1 and found[0][0] in statuses, found
    if free:
        assert found[0][1] == 0, found


def new_id(case: str) -> str:
    return f"matrix-{case}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def counted(stack: Stack) -> Iterator[Callable[[int], None]]:
    """``counted(n)``: the case's requests were finished (counted, metered) ``n`` times in
    all, exactly once each; checked at the end of the case."""
    before = finished(stack)
    expected: list[int] = []
    yield expected.append
    (n,) = expected
    wait_for(f"{n} requests finished", lambda: finished(stack) >= before + n)
    assert finished(stack) == before + n


# The client leaves while sending ------------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize("sent", ["part_of_head", "head", "part_of_body"])
def test_leaving_while_sending(
    stack: Stack, counted: Callable[[int], None], sent: str, stream: bool
) -> None:
    """Nothing was dispatched. A head that never completed makes no request at all; an
    authenticated request whose body never came is recorded once, free: the body read
    ends as for a client too slow to send it (408 ``rejected``)."""
    rid = new_id(sent)
    head, content = request_bytes(body(stream, 50), rid)
    data = {
        "part_of_head": head[: len(head) // 2],
        "head": head,
        "part_of_body": head + content[: len(content) // 2],
    }[sent]
    with connect(stack) as sock:
        sock.sendall(data)
    if sent == "part_of_head":
        settled(stack, rid, None)
        counted(0)
    else:
        settled(stack, rid, {"rejected", "client_cancelled"}, free=True)
        counted(1)


# The client leaves after sending it all --------------------------------------------------

LONG = 3000  # tokens: half a minute of generation if the gateway did not let go


@pytest.mark.parametrize("model", ["m", "hosted"], ids=["pool", "catalog"])
@pytest.mark.parametrize(
    ("left", "stream"),
    [
        ("after_body", True),
        ("after_body", False),
        ("after_first_byte", True),
        ("after_first_byte", False),
        ("mid_stream", True),  # a JSON answer is one write: no middle to leave in
    ],
    ids=[
        "after_body-stream",
        "after_body-json",
        "after_first_byte-stream",
        "after_first_byte-json",
        "mid_stream",
    ],
)
def test_leaving_after_sending(
    stack: Stack, counted: Callable[[int], None], left: str, stream: bool, model: str
) -> None:
    rid = new_id(f"{left}-{model}")
    head, content = request_bytes(body(stream, LONG if stream else 20, model), rid)
    with connect(stack) as sock:
        sock.sendall(head + content)
        if left == "after_first_byte":
            assert read_until(sock, b"HTTP/1.1 ").startswith(b"HTTP/1.1 200")
        elif left == "mid_stream":
            assert b"HTTP/1.1 200" in read_until(sock, b"data: ", 5)
    settled(stack, rid, {"client_cancelled"} if stream else NOT_NOTICED)
    counted(1)


# The client leaves while its request waits ------------------------------------------------


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_leaving_during_a_kv_admission_wait(
    stack: Stack, counted: Callable[[int], None], stream: bool
) -> None:
    holder_id, waiter_id = new_id("kv-holder"), new_id("kv-waiter")
    # The holder takes nearly all admissible KV; the waiter's small request must queue.
    holder = b"".join(request_bytes(body(True, 4700), holder_id))
    waiter = b"".join(request_bytes(body(stream, 100), waiter_id))
    with connect(stack) as first:
        first.sendall(holder)
        read_until(first, b"data: ")
        with connect(stack) as second:
            second.sendall(waiter)
            wait_for("the waiter queued", lambda: metrics(stack)["tollway_pool_queue_depth"] == 1)
    settled(stack, holder_id, {"client_cancelled"})
    settled(stack, waiter_id, {"client_cancelled"} if stream else NOT_NOTICED)
    counted(2)


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
def test_leaving_during_an_idempotency_wait(
    stack: Stack, counted: Callable[[int], None], stream: bool
) -> None:
    key = uuid.uuid4().hex
    holder_id, waiter_id = new_id("idem-holder"), new_id("idem-waiter")
    payload = body(stream, 100)
    holder = b"".join(request_bytes(payload, holder_id, idempotency_key=key))
    waiter = b"".join(request_bytes(payload, waiter_id, idempotency_key=key))
    with connect(stack) as first:
        first.sendall(holder)
        answer = read_until(first, b"data: ") if stream else b""  # mid-stream, key held
        with connect(stack) as second:
            second.sendall(waiter)
        # The waiter's client is gone while the holder still runs; the holder finishes.
        answer += read_until(first, b"data: [DONE]" if stream else b'"usage"')
        assert answer.startswith(b"HTTP/1.1 200")
    settled(stack, holder_id, {"ok"})
    # The waiter's departure ends its wait: recorded once, free; billed once, by the holder.
    settled(stack, waiter_id, {"client_cancelled"}, free=True)
    counted(2)
