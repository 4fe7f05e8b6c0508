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
from tests.waiting import until_sync

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
            # SGLang's /health (and the emulator's) answers after a 1 s wait.
            if httpx.get(f"{base}/health", timeout=5).status_code == 200:
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


def _load(base: str) -> tuple[int, int, float]:
    """``num_reqs``, ``num_tokens`` of ``/get_load`` (current) and the
    ``sglang:num_running_reqs`` gauge (refreshed as SGLang does: on prefill batches,
    every 40 decode steps)."""
    load = httpx.get(f"{base}/get_load").json()[0]
    running = metric(httpx.get(f"{base}/metrics").text, "sglang:num_running_reqs")
    return load["num_reqs"], load["num_tokens"], running


def _read_events(chunks: Iterator[bytes], count: int) -> None:
    seen = 0
    for chunk in chunks:
        seen += chunk.count(b"data: ")
        if seen >= count:
            return
    raise AssertionError(f"the stream ended after {seen} events")


@contextlib.contextmanager
def _long_stream(*flags: str) -> Iterator[tuple[str, httpx.Response]]:
    """A real-time (``--speed 4``) emulator and an open :data:`LONG_STREAM` on it."""
    proc, base = _start("--speed", "4", *flags, instant=False)
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
        reqs, tokens, _ = _load(base)  # nobody polled before this
        assert reqs == 1
        # SGLang counts the KV slots allocated (prompt and output so far), not the output
        # still to come.
        assert 0 < tokens < LONG_STREAM["max_tokens"]
        assert b"".join(chunks).endswith(b"data: [DONE]\n\n")
        assert _load(base)[:2] == (0, 0)


#: The stream abort delay these tests run with (SGLang's is 2 s, ``--stream-abort-delay-s``).
ABORT_DELAY_S = 0.5


@pytest.mark.e2e
def test_cli_aborts_a_stream_only_after_sglangs_delay() -> None:
    """``tokenizer_manager.py`` ``create_abort_task``: a streamed response's background
    task sleeps (2 s), then aborts; until then the request keeps generating and
    holding its slot and KV, though its client is gone."""
    with _long_stream("--stream-abort-delay-s", str(ABORT_DELAY_S)) as (base, r):
        _read_events(r.iter_raw(), 5)
        r.close()  # the client hangs up mid-stream
        left = time.monotonic()
        deadline = left + 1.5  # the stream itself would run ~2 s more
        first = _load(base)
        while _load(base)[:2] != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        freed = time.monotonic() - left
        assert first[0] == 1  # still running after the client left
        assert _load(base)[:2] == (0, 0)
        assert freed >= ABORT_DELAY_S * 0.8, freed
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
    """Send ``body`` on a raw socket, wait until generation has started, then close it."""
    host, port = base.removeprefix("http://").split(":")
    payload = httpx.Request("POST", f"{base}{path}", json=body).read()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + payload)
        until_sync(lambda: _load(base)[2] > 0, what="generation started")
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
        while _load(base)[:2] != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _load(base)[:2] == (0, 0)
        text = httpx.get(f"{base}/metrics").text
        assert metric(text, "sglang:num_aborted_requests_total") == 1
    finally:
        _stop(proc)


@pytest.mark.e2e
def test_cli_aborts_a_queued_request_whose_client_left_at_sglangs_wait() -> None:
    """``tokenizer_manager.py`` ``_wait_one_response``: a non-streamed request without
    output (here queued behind the only running one) looks at its client when
    ``wait_for(state.event.wait(), timeout=4)`` expires ("type 1"), not before
    (``--disconnect-check-s`` shortens the 4 s)."""
    check_s = 2.5
    proc, base = _start(
        "--speed", "1", "--max-running-requests", "1",
        "--disconnect-check-s", str(check_s), instant=False,
    )  # fmt: skip
    try:
        _wait_healthy(base, proc)
        url = f"{base}/v1/chat/completions"
        with httpx.stream("POST", url, json=LONG_STREAM, timeout=20) as stream:
            chunks = stream.iter_raw()
            _read_events(chunks, 2)  # the stream holds the only slot for ~8 s
            sent = time.monotonic()
            _post_and_hang_up(base, "/v1/chat/completions", LONG_REQUESTS[url[len(base) :]])
            assert _load(base)[0] == 2  # the request whose client left still waits
            deadline = sent + 2 * check_s + 1.5  # a check, or the next one on a busy machine
            while _load(base)[0] != 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            freed = time.monotonic() - sent
            reqs, _, running = _load(base)
            assert (reqs, running) == (1, 1)  # only the stream is left, still running
            assert freed >= check_s * 0.8, freed
    finally:
        _stop(proc)
