"""The real CLI process: ``python -m simulator emulate`` on a loopback port."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.simulator.test_native import metric

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(base: str, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "emulator exited early"
        try:
            if httpx.get(f"{base}/health", timeout=0.5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError("emulator did not become healthy")


def _stop(proc: subprocess.Popen[bytes]) -> str:
    """Stop the process (if still running) and return its stdout."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    out = proc.stdout.read().decode() if proc.stdout else ""
    for stream in (proc.stdout, proc.stderr):
        if stream:
            stream.close()
    return out


def _start(*args: str, instant: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    mode = ["--instant"] if instant else []
    cmd = [sys.executable, "-m", "simulator", "emulate", *mode, "--port", str(port), *args]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


@pytest.mark.e2e
def test_cli_serves_chat_and_dies_for_real() -> None:
    proc, base = _start("--die-after", "2", "--served-model-name", "agent-small")
    try:
        _wait_healthy(base, proc)
        models = httpx.get(f"{base}/v1/models").json()
        assert models["data"][0]["id"] == "agent-small"
        body = {"model": "agent-small", "messages": [{"role": "user", "content": "hi"}]}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=5)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=5)
        assert r.status_code == 200
        assert proc.wait(timeout=5) == 70  # die_after=2: the process exits on its own
    finally:
        out = _stop(proc)
    assert "SGLang emulator ready" in out


@pytest.mark.e2e
def test_cli_cut_stream_drops_the_connection() -> None:
    proc, base = _start("--cut-stream-after", "2")
    try:
        _wait_healthy(base, proc)
        body = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
        received = b""
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                for chunk in r.iter_bytes():
                    received += chunk
        assert received.count(b"data: ") == 2 and b"[DONE]" not in received
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        _stop(proc)


#: ~1000 decode steps of ~8 ms model time: ~2 s of wall time at ``--speed 4``.
LONG_STREAM = {
    "messages": [{"role": "user", "content": "Write a long story."}],
    "max_tokens": 1000,
    "ignore_eos": True,
    "stream": True,
}


def _load(base: str) -> tuple[int, int]:
    """``num_reqs`` and ``num_tokens`` of ``/get_load`` (current, unlike the gauges)."""
    load = httpx.get(f"{base}/get_load").json()[0]
    return load["num_reqs"], load["num_tokens"]


def _read_events(chunks: Iterator[bytes], count: int) -> None:
    seen = 0
    for chunk in chunks:
        seen += chunk.count(b"data: ")
        if seen >= count:
            return
    raise AssertionError(f"the stream ended after {seen} events")


@contextlib.contextmanager
def _long_stream() -> Iterator[tuple[str, httpx.Response]]:
    """A real-time (``--speed 4``) emulator and an open :data:`LONG_STREAM` on it."""
    proc, base = _start("--speed", "4", instant=False)
    try:
        _wait_healthy(base, proc)
        url = f"{base}/v1/chat/completions"
        with httpx.stream("POST", url, json=LONG_STREAM, timeout=10) as response:
            yield base, response
    finally:
        _stop(proc)


@pytest.mark.e2e
def test_cli_counts_a_stream_as_running_until_its_last_token() -> None:
    with _long_stream() as (base, r):
        # Keep a reference to the iterator: a dropped one (a ``break`` out of
        # ``for chunk in r.iter_raw()``) is closed, which closes the connection.
        chunks = r.iter_raw()
        _read_events(chunks, 5)
        reqs, tokens = _load(base)  # nobody polled before this
        assert reqs == 1
        # SGLang counts the KV slots allocated (prompt and output so far), not the output
        # still to come.
        assert 0 < tokens < LONG_STREAM["max_tokens"]
        assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
        assert _load(base) == (0, 0)


@pytest.mark.e2e
def test_cli_aborts_a_stream_whose_client_disconnects() -> None:
    with _long_stream() as (base, r):
        _read_events(r.iter_raw(), 5)
        r.close()  # the client hangs up mid-stream
        deadline = time.monotonic() + 1.0  # the stream itself would run ~2 s more
        while _load(base) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _load(base) == (0, 0)
        text = httpx.get(f"{base}/metrics").text
        assert metric(text, "sglang:num_aborted_requests_total") == 1


#: The non-streamed twins of :data:`LONG_STREAM` (~2 s of generation each at ``--speed 4``).
LONG_REQUESTS = {
    "/v1/chat/completions": {k: v for k, v in LONG_STREAM.items() if k != "stream"},
    "/v1/completions": {"prompt": "Write a long story.", "max_tokens": 1000, "ignore_eos": True},
    "/generate": {
        "text": "Write a long story.",
        "sampling_params": {"max_new_tokens": 1000, "ignore_eos": True},
    },
}


def _post_and_hang_up(base: str, path: str, body: dict[str, object]) -> None:
    """Send ``body`` on a raw socket, wait ~0.3 s for generation to start, then close it."""
    host, port = base.removeprefix("http://").split(":")
    payload = httpx.Request("POST", f"{base}{path}", json=body).read()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + payload)
        time.sleep(0.3)
        sock.settimeout(0)
        with pytest.raises(BlockingIOError):
            sock.recv(1)  # nothing answered yet: the request is still generating


@pytest.mark.e2e
@pytest.mark.parametrize("path", sorted(LONG_REQUESTS))
def test_cli_aborts_a_non_streamed_request_whose_client_disconnects(path: str) -> None:
    proc, base = _start("--speed", "4", instant=False)
    try:
        _wait_healthy(base, proc)
        _post_and_hang_up(base, path, LONG_REQUESTS[path])
        deadline = time.monotonic() + 1.0  # generation itself would run ~1.7 s more
        while _load(base) != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _load(base) == (0, 0)
        text = httpx.get(f"{base}/metrics").text
        assert metric(text, "sglang:num_aborted_requests_total") == 1
    finally:
        _stop(proc)
